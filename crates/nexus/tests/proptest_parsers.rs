//! Property-based fuzzing of every parser of outside input (issue 5):
//!
//! - `property::parse_path` (text paths such as `MemorySubsystem.MemoryTypes[1].Size`)
//! - `Properties::get*` / `keys` / `subtree` / `source` on random JSON trees and paths
//! - `database::parse_entry` (device-database files) on random bytes and on
//!   mutated copies of the shipped `device_lib/*.json`
//!
//! No target may panic; each returns `Ok` or `Err`. The number of cases per
//! target is `NEXUS_FUZZ_CASES` (default 2000); every target prints
//! `fuzz-target <name>: <n> executions in <s> s` on stderr, which
//! `scripts/reliability_report.py` parses (run with `-- --nocapture`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};

use nexus::database::parse_entry;
use nexus::property::parse_path;
use nexus::{PathItem, Properties};

fn cases() -> u32 {
    std::env::var("NEXUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` on `cases()` values of `strategy`, counting every execution
/// (shrinking included) and reporting the count on stderr.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    let result = runner.run(&strategy, |v| {
        count.fetch_add(1, Ordering::Relaxed);
        test(v)
    });
    eprintln!(
        "fuzz-target {name}: {} executions in {:.2} s",
        count.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
}

// ------------------------------------------------------------ property paths

/// A reference recognizer of the path grammar: names (no `.`, `[`, `]`)
/// separated by `.`, each followed by zero or more `[digits]` groups.
fn grammar_accepts(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        // a non-empty name
        let start = i;
        while i < bytes.len() && !matches!(bytes[i], b'.' | b'[' | b']') {
            i += 1;
        }
        if i == start {
            return false;
        }
        // index groups
        while i < bytes.len() && bytes[i] == b'[' {
            let digits = i + 1;
            let mut j = digits;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j == digits || j >= bytes.len() || bytes[j] != b']' {
                return false;
            }
            if text[digits..j].parse::<usize>().is_err() {
                return false; // too large for an index
            }
            i = j + 1;
        }
        if i == bytes.len() {
            return true;
        }
        if bytes[i] != b'.' {
            return false;
        }
        i += 1;
    }
}

fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // dense in the characters the grammar cares about
        "[ab.\\[\\]0-9x-]{0,16}",
        "[A-Za-z]{1,6}(\\.[A-Za-z]{0,6}|\\[[0-9]{0,3}\\]|\\[|\\]){0,6}",
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn fuzz_parse_path_random_text() {
    fuzz("parse_path_random", path_text(), |text| {
        match parse_path(&text) {
            Ok(items) => {
                prop_assert!(!items.is_empty());
                prop_assert!(
                    matches!(items[0], PathItem::Key(_)),
                    "{text:?} starts with an index"
                );
                for item in &items {
                    if let PathItem::Key(k) = item {
                        prop_assert!(
                            !k.is_empty() && !k.contains(['.', '[', ']']),
                            "{text:?} gave key {k:?}"
                        );
                    }
                }
            }
            Err(e) => prop_assert!(
                e.message.contains("malformed property path"),
                "{}",
                e.message
            ),
        }
        prop_assert_eq!(
            parse_path(&text).is_ok(),
            grammar_accepts(&text),
            "{:?}",
            text
        );
        Ok(())
    });
}

/// One segment: a name and the indexes after it.
fn segment() -> impl Strategy<Value = (String, Vec<usize>)> {
    (
        prop_oneof!["[A-Za-z_][A-Za-z0-9_]{0,12}", "[^.\\[\\]]{1,8}"],
        prop::collection::vec(prop_oneof![0usize..8, any::<usize>()], 0..3),
    )
}

#[test]
fn fuzz_parse_path_round_trip() {
    fuzz(
        "parse_path_round_trip",
        prop::collection::vec(segment(), 1..6),
        |segments| {
            let mut text = String::new();
            let mut want = Vec::new();
            for (n, (name, indexes)) in segments.iter().enumerate() {
                if n > 0 {
                    text.push('.');
                }
                text.push_str(name);
                want.push(PathItem::Key(name.clone()));
                for i in indexes {
                    text.push_str(&format!("[{i}]"));
                    want.push(PathItem::Index(*i));
                }
            }
            let got = parse_path(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {}", e.message)))?;
            prop_assert_eq!(got, want, "{:?}", text);
            Ok(())
        },
    );
}

/// Regression (found by this suite): "a.[0]" used to parse as ["a", 0].
#[test]
fn empty_name_before_index_is_malformed() {
    for text in ["a.[0]", "MemorySubsystem.[0].Size", "a.[1][2]"] {
        assert!(parse_path(text).is_err(), "{text:?} was accepted");
    }
}

// ------------------------------------------------------------ property trees

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[A-D]{1,2}", 1 => ".{0,6}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        key().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn path_item() -> impl Strategy<Value = PathItem> {
    prop_oneof![
        3 => key().prop_map(PathItem::Key),
        2 => (0usize..6).prop_map(PathItem::Index),
        1 => any::<usize>().prop_map(PathItem::Index),
    ]
}

/// Every query on `p` at `path`; none may panic.
fn query_all(p: &Properties, path: &[PathItem]) {
    let _ = p.get(path);
    let _ = p.get_str(path);
    let _ = p.get_int(path);
    let _ = p.get_flt(path);
    let _ = p.get_str_vec(path);
    let _ = p.get_int_vec(path);
    let _ = p.get_flt_vec(path);
    let _ = p.keys(path);
    let _ = p.source(path);
    if let Ok(sub) = p.subtree(path) {
        let _ = sub.keys(&[]);
    }
}

/// A path that exists in `root`, chosen by `choices`, and the node it reaches.
fn walk<'a>(root: &'a Value, choices: &[usize]) -> (Vec<PathItem>, &'a Value) {
    let mut node = root;
    let mut path = Vec::new();
    for &c in choices {
        match node {
            Value::Object(map) if !map.is_empty() => {
                let (k, v) = map.iter().nth(c % map.len()).expect("in range");
                path.push(PathItem::Key(k.clone()));
                node = v;
            }
            Value::Array(items) if !items.is_empty() => {
                let i = c % items.len();
                path.push(PathItem::Index(i));
                node = &items[i];
            }
            _ => break,
        }
    }
    (path, node)
}

#[test]
fn fuzz_properties_random_trees_and_paths() {
    let strategy = (
        json_value(),
        prop::collection::vec(path_item(), 0..7),
        prop::collection::vec(any::<usize>(), 0..7),
    );
    fuzz(
        "properties_get",
        strategy,
        |(tree, random_path, choices)| {
            let layered =
                Properties::layered("fuzz", tree.clone(), vec![("layer".into(), tree.clone())]);
            let plain = Properties::new("fuzz", tree.clone());
            query_all(&plain, &random_path);
            query_all(&layered, &random_path);
            // A path that exists resolves to the node it names.
            let (path, node) = walk(&tree, &choices);
            prop_assert_eq!(plain.get(&path).ok(), Some(node));
            prop_assert_eq!(layered.source(&path).ok(), Some("layer".to_string()));
            query_all(&plain, &path);
            // Misses are errors naming the path, never panics.
            if let Err(e) = plain.get(&random_path) {
                prop_assert!(e.message.contains("no property at path"), "{}", e.message);
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------ device database

fn shipped_files() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../device_lib");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("device_lib")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            )
        })
        .collect()
}

#[test]
fn shipped_entries_parse() {
    let files = shipped_files();
    assert!(files.len() >= 10, "{} files", files.len());
    for (name, bytes) in &files {
        if let Err(e) = parse_entry(name, bytes) {
            panic!("{}", e.message);
        }
    }
}

#[test]
fn fuzz_parse_entry_random_bytes() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // JSON-looking noise reaches the schema validator more often
        "[\\{\\}\\[\\]\":,0-9a-zA-Z \\-\\.]{0,200}".prop_map(String::into_bytes),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("serializable")),
    ];
    fuzz("parse_entry_random_bytes", strategy, |bytes| {
        let _ = parse_entry("fuzz.json", &bytes);
        Ok(())
    });
}

#[derive(Clone, Debug)]
enum ByteEdit {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| ByteEdit::Flip(p, b)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| ByteEdit::Delete(p, n)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![any::<u8>(), Just(b'{'), Just(b'"'), Just(b']')],
                1..8
            )
        )
            .prop_map(|(p, b)| ByteEdit::Insert(p, b)),
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| ByteEdit::Duplicate(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    let len = bytes.len().max(1);
    match edit {
        ByteEdit::Flip(p, b) => {
            if !bytes.is_empty() {
                let i = p % bytes.len();
                bytes[i] ^= b | 1;
            }
        }
        ByteEdit::Delete(p, n) => {
            let start = (p % len).min(bytes.len());
            let end = (start + n).min(bytes.len());
            bytes.drain(start..end);
        }
        ByteEdit::Insert(p, b) => {
            let at = (p % len).min(bytes.len());
            bytes.splice(at..at, b.iter().copied());
        }
        ByteEdit::Truncate(p) => bytes.truncate(p % len),
        ByteEdit::Duplicate(p, n) => {
            let start = (p % len).min(bytes.len());
            let end = (start + n).min(bytes.len());
            let copy = bytes[start..end].to_vec();
            bytes.splice(end..end, copy);
        }
    }
}

#[test]
fn fuzz_parse_entry_mutated_bytes() {
    let files = shipped_files();
    let n = files.len();
    fuzz(
        "parse_entry_mutated_bytes",
        (0..n, prop::collection::vec(byte_edit(), 1..6)),
        |(which, edits)| {
            let (name, original) = &files[which];
            let mut bytes = original.clone();
            for e in &edits {
                apply(&mut bytes, e);
            }
            let _ = parse_entry(name, &bytes);
            Ok(())
        },
    );
}

/// Replaces the `target`-th node (pre-order) of `v` with `with`.
fn replace_node(v: &mut Value, target: &mut usize, with: &Value) -> bool {
    if *target == 0 {
        *v = with.clone();
        return true;
    }
    *target -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|x| replace_node(x, target, with)),
        Value::Object(map) => map.values_mut().any(|x| replace_node(x, target, with)),
        _ => false,
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

#[test]
fn fuzz_parse_entry_mutated_json() {
    let files: Vec<(String, Value)> = shipped_files()
        .into_iter()
        .map(|(name, bytes)| {
            let v = serde_json::from_slice(&bytes).expect("shipped files are JSON");
            (name, v)
        })
        .collect();
    let n = files.len();
    let strategy = (
        0..n,
        prop::collection::vec((any::<usize>(), json_value()), 1..4),
        any::<bool>(),
    );
    fuzz(
        "parse_entry_mutated_json",
        strategy,
        |(which, edits, pretty)| {
            let (name, original) = &files[which];
            let mut v = original.clone();
            for (at, with) in &edits {
                let mut target = at % count_nodes(&v);
                replace_node(&mut v, &mut target, with);
            }
            let bytes = if pretty {
                serde_json::to_vec_pretty(&v)
            } else {
                serde_json::to_vec(&v)
            }
            .expect("serializable");
            let _ = parse_entry(name, &bytes);
            Ok(())
        },
    );
}
