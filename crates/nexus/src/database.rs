//! The device-info database: one JSON file per architecture, shipped inside
//! the library (`device_lib/`), plus user folders from `NEXUS_DEVICE_PATH`.
//!
//! Every file is validated against `schema/device.schema.json`: shipped files
//! against all of it, user files against the same schema with only
//! [`USER_REQUIRED`] required (a user adding their own accelerator describes
//! what they know). A bad user file is skipped with one warning on the
//! `nexus` logger naming the file and the problem (the missing field, the bad
//! value); it never breaks the other entries. Loaded on first use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use include_dir::{include_dir, Dir};
use serde_json::Value;

use crate::error::{Error, Result, Status};
use crate::property::Properties;

static SHIPPED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../device_lib");
const SCHEMA: &str = include_str!("../../../schema/device.schema.json");

/// One architecture entry and where it was read from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub value: Value,
    /// "shipped" or the user file's path.
    pub origin: String,
}

/// The fields a user entry (`NEXUS_DEVICE_PATH`) must have; shipped
/// entries need every field the schema requires.
pub const USER_REQUIRED: &[&str] = &["Name", "Vendor", "Type", "Architecture"];

type Compiled = OnceLock<std::result::Result<jsonschema::Validator, String>>;

fn compile_schema(cell: &'static Compiled, user: bool) -> Result<&'static jsonschema::Validator> {
    cell.get_or_init(|| {
        let mut schema: Value =
            serde_json::from_str(SCHEMA).map_err(|e| format!("device schema is not JSON: {e}"))?;
        if user {
            schema["required"] = Value::from(USER_REQUIRED.to_vec());
        }
        jsonschema::validator_for(&schema).map_err(|e| format!("device schema is invalid: {e}"))
    })
    .as_ref()
    .map_err(|e| Error::new(Status::InvalidValue, e.clone()))
}

fn validator() -> Result<&'static jsonschema::Validator> {
    static VALIDATOR: Compiled = OnceLock::new();
    compile_schema(&VALIDATOR, false)
}

fn user_validator() -> Result<&'static jsonschema::Validator> {
    static VALIDATOR: Compiled = OnceLock::new();
    compile_schema(&VALIDATOR, true)
}

/// Parses and validates one architecture file's bytes against the full
/// schema (shipped entries); `name` labels errors.
pub fn parse_entry(name: &str, bytes: &[u8]) -> Result<Value> {
    check_entry(name, bytes, validator()?, "")
}

/// Parses and validates a user entry: only [`USER_REQUIRED`] must be there,
/// and whatever else it has must match the schema.
pub fn parse_user_entry(name: &str, bytes: &[u8]) -> Result<Value> {
    let value = check_entry(
        name,
        bytes,
        user_validator()?,
        " (a user entry needs Name, Vendor, Type and Architecture; every other field is optional)",
    )?;
    Ok(value)
}

fn check_entry(
    name: &str,
    bytes: &[u8],
    validator: &jsonschema::Validator,
    hint: &str,
) -> Result<Value> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(Status::InvalidValue, format!("{name}: not valid JSON: {e}")))?;
    if let Value::Object(map) = &value {
        if let Some(missing) = USER_REQUIRED.iter().find(|f| !map.contains_key(**f)) {
            return Err(Error::new(
                Status::InvalidValue,
                format!("{name}: the required field '{missing}' is missing{hint}"),
            ));
        }
    }
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{} (at '{}')", e, if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::new(
            Status::InvalidValue,
            format!(
                "{name}: does not match the device schema: {}",
                problems.join("; ")
            ),
        ));
    }
    Ok(value)
}

fn shipped() -> Vec<Entry> {
    let mut out = Vec::new();
    for file in SHIPPED.files() {
        let path = file.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        match parse_entry(&path.display().to_string(), file.contents()) {
            Ok(value) => out.push(Entry {
                name: stem.to_string(),
                value,
                origin: "shipped".into(),
            }),
            Err(e) => log::warn!("device database: skipping shipped {}", e.message),
        }
    }
    out
}

/// Entries from the folders of `NEXUS_DEVICE_PATH` (colon-separated).
fn user_entries(path_var: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for folder in path_var.split(':').filter(|f| !f.is_empty()) {
        let dir = match std::fs::read_dir(folder) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("device database: skipping NEXUS_DEVICE_PATH folder '{folder}': {e}");
                continue;
            }
        };
        let mut files: Vec<_> = dir.filter_map(|d| d.ok().map(|d| d.path())).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().and_then(|e| e.to_str()) == Some("json"))
        {
            if let Some(entry) = read_user_file(file) {
                out.push(entry);
            }
        }
    }
    out
}

fn read_user_file(file: &Path) -> Option<Entry> {
    let label = file.display().to_string();
    let stem = file.file_stem()?.to_str()?.to_string();
    let parsed = std::fs::read(file)
        .map_err(|e| Error::new(Status::InvalidValue, format!("{label}: cannot read: {e}")))
        .and_then(|bytes| parse_user_entry(&label, &bytes));
    match parsed {
        Ok(value) => Some(Entry {
            name: stem,
            value,
            origin: label,
        }),
        Err(e) => {
            log::warn!("device database: skipping {}", e.message);
            None
        }
    }
}

/// name -> entry; user entries override shipped ones of the same name.
pub fn entries() -> &'static BTreeMap<String, Entry> {
    static DB: OnceLock<BTreeMap<String, Entry>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = BTreeMap::new();
        let user = std::env::var("NEXUS_DEVICE_PATH")
            .map(|v| user_entries(&v))
            .unwrap_or_default();
        for entry in shipped().into_iter().chain(user) {
            db.insert(entry.name.clone(), entry);
        }
        db
    })
}

/// An entry by name (file stem) or by bare architecture (`sm_90`), user
/// entries first; `None` when unknown.
pub fn lookup_entry(name: &str) -> Option<&'static Entry> {
    let db = entries();
    if let Some(e) = db.get(name) {
        return Some(e);
    }
    let arch_is = |e: &&Entry| {
        e.value
            .get("Architecture")
            .and_then(Value::as_str)
            .is_some_and(|a| a.eq_ignore_ascii_case(name))
    };
    db.values()
        .filter(|e| e.origin != "shipped")
        .find(arch_is)
        .or_else(|| db.values().find(arch_is))
}

pub fn lookup(name: &str) -> Option<Properties> {
    lookup_entry(name).map(entry_properties)
}

fn entry_label(entry: &Entry) -> String {
    if entry.origin == "shipped" {
        format!("database '{}'", entry.name)
    } else {
        format!("database '{}' ({})", entry.name, entry.origin)
    }
}

pub fn entry_properties(entry: &Entry) -> Properties {
    Properties::layered(
        format!("device info '{}'", entry.name),
        entry.value.clone(),
        vec![(entry_label(entry), entry.value.clone())],
    )
}

/// The device's live properties over its database entry (live values win);
/// each value's source is "live" or "database '<name>'".
pub fn merge_live(live: &Properties) -> Properties {
    let arch = live
        .root()
        .get("Architecture")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(entry) = lookup_entry(arch) else {
        return Properties::layered(
            live.owner().to_string(),
            live.root().clone(),
            vec![("live".into(), live.root().clone())],
        );
    };
    let mut merged = entry.value.clone();
    overlay(&mut merged, live.root());
    if let Value::Object(map) = &mut merged {
        map.insert("DatabaseEntry".into(), Value::from(entry.name.as_str()));
    }
    Properties::layered(
        live.owner().to_string(),
        merged,
        vec![
            ("live".into(), live.root().clone()),
            (entry_label(entry), entry.value.clone()),
        ],
    )
}

/// Objects merge key by key. Lists of typed entries (objects that each have
/// a "Type", such as `MemorySubsystem.MemoryTypes`) merge entry by entry:
/// a live entry fills in over the database entry of the same type, live
/// order first, then the database's other entries; so a runtime reports
/// only what it measures and the database adds what it cannot (an L1 size,
/// a memory technology). Anything else is replaced.
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
        (Value::Array(b), Value::Array(t)) if typed_entries(b) && typed_entries(t) => {
            let mut merged = Vec::with_capacity(b.len().max(t.len()));
            for live in t {
                let mut entry = match b.iter().find(|e| e["Type"] == live["Type"]) {
                    Some(known) => known.clone(),
                    None => Value::Object(Default::default()),
                };
                overlay(&mut entry, live);
                merged.push(entry);
            }
            merged.extend(
                b.iter()
                    .filter(|e| !t.iter().any(|l| l["Type"] == e["Type"]))
                    .cloned(),
            );
            *b = merged;
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn typed_entries(list: &[Value]) -> bool {
    !list.is_empty()
        && list
            .iter()
            .all(|e| e.get("Type").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lists_merge_entry_by_entry() {
        let mut db = serde_json::json!({"MemoryTypes": [
            {"Type": "L1", "Size": 256},
            {"Type": "Device", "Size": 1, "Technology": "HBM3"},
            {"Type": "Constant", "Size": 64},
        ], "Supported": ["a", "b"]});
        let live = serde_json::json!({"MemoryTypes": [
            {"Type": "Device", "Size": 80},
            {"Type": "L1", "Scope": "unit"},
            {"Type": "Shared", "Size": 48},
        ], "Supported": ["c"]});
        overlay(&mut db, &live);
        assert_eq!(
            db,
            serde_json::json!({"MemoryTypes": [
                {"Type": "Device", "Size": 80, "Technology": "HBM3"},
                {"Type": "L1", "Size": 256, "Scope": "unit"},
                {"Type": "Shared", "Size": 48},
                {"Type": "Constant", "Size": 64},
            ], "Supported": ["c"]})
        );
    }

    #[test]
    fn every_shipped_file_is_valid() {
        for file in SHIPPED.files() {
            parse_entry(&file.path().display().to_string(), file.contents()).unwrap();
        }
        assert!(entries().len() >= 19);
    }

    #[test]
    fn lookup_by_stem_and_architecture() {
        let by_arch = lookup("sm_90").unwrap();
        let by_stem = lookup("nvidia-gpu-sm_90").unwrap();
        assert_eq!(by_arch.get_str(&["Architecture".into()]).unwrap(), "sm_90");
        assert_eq!(by_stem.root(), by_arch.root());
        assert!(lookup("sm_999").is_none());
        assert_eq!(
            by_arch.source(&["Name".into()]).unwrap(),
            "database 'nvidia-gpu-sm_90'"
        );
    }

    #[test]
    fn schema_violations_name_the_problem() {
        let e = parse_entry("x.json", br#"{"Name": "x"}"#).unwrap_err();
        assert!(
            e.message.contains("x.json") && e.message.contains("required"),
            "{}",
            e.message
        );
        let e = parse_entry("y.json", b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn user_entries_need_only_four_fields() {
        let minimal =
            br#"{"Name": "Acme One", "Vendor": "Acme", "Type": "npu", "Architecture": "acme_1"}"#;
        let v = parse_user_entry("acme.json", minimal).unwrap();
        assert_eq!(v["Vendor"], "Acme");
        // Shipped files still need the full schema.
        let e = parse_entry("acme.json", minimal).unwrap_err();
        assert!(e.message.contains("MemorySubsystem"), "{}", e.message);
        // A missing field is named, with the file.
        let e = parse_user_entry(
            "acme.json",
            br#"{"Name": "x", "Type": "gpu", "Architecture": "a"}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("acme.json") && e.message.contains("'Vendor' is missing"),
            "{}",
            e.message
        );
        // Fields that are there are still checked against the schema.
        let e = parse_user_entry(
            "acme.json",
            br#"{"Name": "x", "Vendor": "v", "Type": "toaster", "Architecture": "a"}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("toaster"), "{}", e.message);
    }

    #[test]
    fn live_values_win() {
        let live = Properties::new(
            "Device 'cpu'",
            serde_json::json!({"Architecture": "x86_64", "Name": "live name"}),
        );
        let merged = merge_live(&live);
        assert_eq!(merged.get_str(&["Name".into()]).unwrap(), "live name");
        assert_eq!(merged.source(&["Name".into()]).unwrap(), "live");
        assert_eq!(
            merged.get_str(&["DatabaseEntry".into()]).unwrap(),
            "generic-cpu-x86_64"
        );
        assert_eq!(
            merged.source(&["Vendor".into()]).unwrap(),
            "database 'generic-cpu-x86_64'"
        );
    }
}
