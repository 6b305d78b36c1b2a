//! The device-info database: one JSON file per architecture, shipped inside
//! the library, plus user folders from `NEXUS_DEVICE_PATH`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use include_dir::{include_dir, Dir};
use serde_json::Value;

use crate::property::Properties;

static SHIPPED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../device_lib");

/// name (file stem) -> entry
pub fn entries() -> &'static BTreeMap<String, Value> {
    static DB: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = BTreeMap::new();
        for file in SHIPPED.files() {
            let path = file.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            match serde_json::from_slice::<Value>(file.contents()) {
                Ok(v) => {
                    db.insert(stem, v);
                }
                Err(e) => log::warn!("shipped device entry {} is malformed: {e}", path.display()),
            }
        }
        db
    })
}

/// An entry by file stem or bare architecture name; `None` when unknown.
pub fn lookup(name: &str) -> Option<Properties> {
    let (stem, v) = lookup_entry(name)?;
    Some(Properties::new(format!("device info '{stem}'"), v.clone()))
}

fn lookup_entry(name: &str) -> Option<(&'static String, &'static Value)> {
    let db = entries();
    db.get_key_value(name).or_else(|| {
        db.iter().find(|(_, v)| v.get("Architecture").and_then(Value::as_str).is_some_and(|a| a.eq_ignore_ascii_case(name)))
    })
}

/// The device's live properties over its database entry (live values win).
pub fn merge_live(live: &Properties) -> Properties {
    let arch = live.root().get("Architecture").and_then(Value::as_str).unwrap_or_default();
    let Some((stem, entry)) = lookup_entry(arch) else { return live.clone() };
    let mut merged = entry.clone();
    overlay(&mut merged, live.root());
    if let Value::Object(map) = &mut merged {
        map.insert("DatabaseEntry".into(), Value::from(stem.as_str()));
    }
    Properties::new(live.owner().to_string(), merged)
}

fn overlay(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}
