//! Properties: named values in a tree, queried by name, by enum id or by a
//! hierarchical path mixing keys and indexes (`["MemoryTypes", 1, "Size"]`).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result, Status};

macro_rules! property_names {
    ($($name:ident),* $(,)?) => {
        /// Well-known property names. The Python `nexus.property` enum has
        /// the same members with the same values (index in this table).
        pub const PROPERTY_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

property_names! {
    Name, Vendor, Type, Architecture, Version, ID, Runtime, Device,
    Size, DataType, Count, Status, Arguments, Kernels, Path, Value, EventType,
    GroupSize, GridSize, SharedMemory, MaxThreadsPerGroup, Registers,
    ComputeUnits, MemorySize, ClockMHz, L1Size, L2Size, L3Size, WarpSize,
    MaxGroupMemory, PCIBusID, UUID, ComputeCapability, Commands, Source,
    ReleaseYear, FabricationProcess, CoreSubsystem, MemorySubsystem,
    SupportedMemoryTypes, MemoryTypes, KernelModel, SpecializedHardware,
    Limits, Sources, Threads, Stream,
}

/// Name of the well-known property with enum id `id`.
pub fn property_name(id: i64) -> Result<&'static str> {
    usize::try_from(id)
        .ok()
        .and_then(|i| PROPERTY_NAMES.get(i).copied())
        .ok_or_else(|| {
            Error::new(
                Status::InvalidProperty,
                format!(
                    "unknown property enum value {id} (valid: 0..{})",
                    PROPERTY_NAMES.len() - 1
                ),
            )
        })
}

/// One step of a property path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathItem {
    Key(String),
    Index(usize),
}

impl fmt::Display for PathItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathItem::Key(k) => write!(f, "{k:?}"),
            PathItem::Index(i) => write!(f, "{i}"),
        }
    }
}

impl From<&str> for PathItem {
    fn from(s: &str) -> Self {
        PathItem::Key(s.to_string())
    }
}

impl From<usize> for PathItem {
    fn from(i: usize) -> Self {
        PathItem::Index(i)
    }
}

/// Parses a textual path: names separated by `.`, each optionally followed
/// by `[index]` groups, e.g. `MemorySubsystem.MemoryTypes[1].Size`.
pub fn parse_path(text: &str) -> Result<Vec<PathItem>> {
    let bad = |pos: usize, why: &str| {
        Error::new(
            Status::InvalidValue,
            format!("malformed property path {text:?}: {why} at offset {pos}"),
        )
    };
    let bytes = text.as_bytes();
    let mut path = Vec::new();
    let mut i = 0;
    let mut expect_name = true;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                if expect_name {
                    return Err(bad(i, "empty name"));
                }
                let close = text[i..]
                    .find(']')
                    .map(|j| i + j)
                    .ok_or_else(|| bad(i, "'[' without ']'"))?;
                let digits = &text[i + 1..close];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(i + 1, "an index must be decimal digits"));
                }
                let index = digits
                    .parse::<usize>()
                    .map_err(|_| bad(i + 1, "index is too large"))?;
                path.push(PathItem::Index(index));
                i = close + 1;
                expect_name = false;
            }
            b'.' => {
                if expect_name {
                    return Err(bad(i, "empty name"));
                }
                expect_name = true;
                i += 1;
            }
            b']' => return Err(bad(i, "']' without '['")),
            _ => {
                if !expect_name {
                    return Err(bad(i, "expected '.' or '['"));
                }
                let end = text[i..]
                    .find(['.', '[', ']'])
                    .map(|j| i + j)
                    .unwrap_or(text.len());
                path.push(PathItem::Key(text[i..end].to_string()));
                i = end;
                expect_name = false;
            }
        }
    }
    if expect_name {
        return Err(bad(text.len(), "the path ends where a name is expected"));
    }
    Ok(path)
}

fn show_path(path: &[PathItem]) -> String {
    let parts: Vec<String> = path.iter().map(|p| p.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// An immutable tree of properties, cheap to clone.
#[derive(Clone, Debug)]
pub struct Properties {
    owner: Arc<str>,
    root: Arc<Value>,
    /// Where values come from, highest precedence first (label, tree);
    /// empty for properties with one source.
    layers: Arc<Vec<(String, Value)>>,
}

impl Properties {
    /// `owner` names the object in error messages (`"Device 'CPU'"`).
    pub fn new(owner: impl Into<Arc<str>>, root: Value) -> Self {
        Properties {
            owner: owner.into(),
            root: Arc::new(root),
            layers: Arc::new(Vec::new()),
        }
    }

    /// Properties merged from several sources (`layers`, highest precedence
    /// first), so `source(path)` can say where each value came from.
    pub fn layered(owner: impl Into<Arc<str>>, root: Value, layers: Vec<(String, Value)>) -> Self {
        Properties {
            owner: owner.into(),
            root: Arc::new(root),
            layers: Arc::new(layers),
        }
    }

    /// Where the value at `path` came from: a layer's label ("live",
    /// "database 'nvidia-gpu-sm_90'"), or "live" for single-source properties.
    pub fn source(&self, path: &[PathItem]) -> Result<String> {
        self.get(path)?;
        for (label, tree) in self.layers.iter() {
            if walk(tree, path).is_some() {
                return Ok(label.clone());
            }
        }
        Ok(if self.layers.is_empty() {
            "live".to_string()
        } else {
            "derived".to_string()
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The value at `path`; a miss names the path and the keys that exist there.
    pub fn get(&self, path: &[PathItem]) -> Result<&Value> {
        let mut node: &Value = &self.root;
        for (depth, item) in path.iter().enumerate() {
            let next = match (node, item) {
                (Value::Object(map), PathItem::Key(k)) => map.get(k),
                (Value::Array(items), PathItem::Index(i)) => items.get(*i),
                _ => None,
            };
            node = match next {
                Some(v) => v,
                None => {
                    let here = show_path(&path[..depth]);
                    let what = match node {
                        Value::Object(map) => {
                            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                            format!("keys there: {}", keys.join(", "))
                        }
                        Value::Array(items) => format!(
                            "a list of {} items there (index 0..{})",
                            items.len(),
                            items.len().saturating_sub(1)
                        ),
                        other => format!("{} is a {} value", here, kind(other)),
                    };
                    return Err(Error::new(
                        Status::InvalidProperty,
                        format!(
                            "{}: no property at path {} ({})",
                            self.owner,
                            show_path(path),
                            what
                        ),
                    ));
                }
            };
        }
        Ok(node)
    }

    fn typed<T>(
        &self,
        path: &[PathItem],
        want: &str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<T> {
        let v = self.get(path)?;
        conv(v).ok_or_else(|| {
            Error::new(
                Status::InvalidProperty,
                format!(
                    "{}: property {} is a {}, not {}",
                    self.owner,
                    show_path(path),
                    kind(v),
                    want
                ),
            )
        })
    }

    pub fn get_str(&self, path: &[PathItem]) -> Result<String> {
        self.typed(path, "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
    }

    pub fn get_int(&self, path: &[PathItem]) -> Result<i64> {
        self.typed(path, "an integer", as_int)
    }

    pub fn get_flt(&self, path: &[PathItem]) -> Result<f64> {
        self.typed(path, "a number", Value::as_f64)
    }

    pub fn get_str_vec(&self, path: &[PathItem]) -> Result<Vec<String>> {
        self.typed(path, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    }

    pub fn get_int_vec(&self, path: &[PathItem]) -> Result<Vec<i64>> {
        self.typed(path, "a list of integers", |v| {
            v.as_array()?.iter().map(as_int).collect()
        })
    }

    pub fn get_flt_vec(&self, path: &[PathItem]) -> Result<Vec<f64>> {
        self.typed(path, "a list of numbers", |v| {
            v.as_array()?.iter().map(Value::as_f64).collect()
        })
    }

    /// Keys of the object at `path` (in order), or the indexes of a list as strings.
    pub fn keys(&self, path: &[PathItem]) -> Result<Vec<String>> {
        match self.get(path)? {
            Value::Object(map) => Ok(map.keys().cloned().collect()),
            Value::Array(items) => Ok((0..items.len()).map(|i| i.to_string()).collect()),
            other => Err(Error::new(
                Status::InvalidProperty,
                format!(
                    "{}: property {} is a {}, it has no keys",
                    self.owner,
                    show_path(path),
                    kind(other)
                ),
            )),
        }
    }

    /// The sub-tree at `path` as its own `Properties`.
    pub fn subtree(&self, path: &[PathItem]) -> Result<Properties> {
        let v = self.get(path)?.clone();
        Ok(Properties {
            owner: self.owner.clone(),
            root: Arc::new(v),
            layers: Arc::new(Vec::new()),
        })
    }
}

/// The value at `path` under `root`, if any.
fn walk<'a>(root: &'a Value, path: &[PathItem]) -> Option<&'a Value> {
    path.iter().try_fold(root, |node, item| match (node, item) {
        (Value::Object(map), PathItem::Key(k)) => map.get(k),
        (Value::Array(items), PathItem::Index(i)) => items.get(*i),
        _ => None,
    })
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "group of properties",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Properties {
        Properties::new(
            "Device 'test'",
            json!({"Name": "x", "Size": 4, "F": 1.5, "Mem": {"Types": [{"Size": 1}, {"Size": 2}]}, "L": ["a", "b"]}),
        )
    }

    #[test]
    fn typed_getters() {
        let p = sample();
        assert_eq!(p.get_str(&["Name".into()]).unwrap(), "x");
        assert_eq!(p.get_int(&["Size".into()]).unwrap(), 4);
        assert_eq!(p.get_flt(&["Size".into()]).unwrap(), 4.0);
        assert_eq!(p.get_flt(&["F".into()]).unwrap(), 1.5);
        assert_eq!(
            p.get_int(&["Mem".into(), "Types".into(), 1.into(), "Size".into()])
                .unwrap(),
            2
        );
        assert_eq!(p.get_str_vec(&["L".into()]).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn misses_name_the_path_and_existing_keys() {
        let p = sample();
        let e = p.get_int(&["Mem".into(), "Typo".into()]).unwrap_err();
        assert_eq!(e.status, Status::InvalidProperty);
        assert!(e.message.contains("[\"Mem\", \"Typo\"]"), "{}", e.message);
        assert!(e.message.contains("Types"), "{}", e.message);
        let e = p
            .get_int(&["Mem".into(), "Types".into(), 5.into()])
            .unwrap_err();
        assert!(e.message.contains("2 items"), "{}", e.message);
        let e = p.get_int(&["Name".into()]).unwrap_err();
        assert!(
            e.message.contains("string, not an integer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn textual_paths() {
        let p = parse_path("MemorySubsystem.MemoryTypes[1].Size").unwrap();
        assert_eq!(
            p,
            vec![
                "MemorySubsystem".into(),
                "MemoryTypes".into(),
                1.into(),
                "Size".into()
            ]
        );
        assert_eq!(
            parse_path("A[0][2]").unwrap(),
            vec!["A".into(), 0.into(), 2.into()]
        );
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a[",
            "a[]",
            "a[x]",
            "a]",
            "[1]",
            "a[1]b",
            "a.[0]",
            "a[-1]",
            "a[99999999999999999999999]",
        ] {
            let e = parse_path(bad).unwrap_err();
            assert_eq!(e.status, Status::InvalidValue, "{bad}");
            assert!(
                e.message.contains("malformed property path"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn enum_names() {
        assert_eq!(property_name(0).unwrap(), "Name");
        assert!(property_name(-1).is_err());
        assert!(property_name(100_000).is_err());
    }
}
