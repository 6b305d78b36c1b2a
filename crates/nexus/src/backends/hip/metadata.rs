//! Kernel parameters from an AMDGPU code object's metadata.
//!
//! HIP has no call that reports a kernel's parameters (CUDA has
//! `cuFuncGetParamInfo`), but every code object since v3 (ROCm 3.5) carries
//! them: an ELF note named "AMDGPU" of type `NT_AMDGPU_METADATA` (32) holds
//! a MessagePack map whose `amdhsa.kernels` lists each kernel's `.name` and
//! `.args` (`.size`, `.value_kind`; the `hidden_*` kinds are arguments the
//! runtime appends). This reads exactly that, checking every bound: a
//! malformed image gives `None` (nothing known), never a panic.

use std::collections::HashMap;

/// Each kernel's parameter sizes in bytes, in order, hidden ones left out;
/// `None` when `image` is not an ELF code object with v3+ metadata.
pub fn kernel_param_sizes(image: &[u8]) -> Option<HashMap<String, Vec<usize>>> {
    let notes = elf_notes(image)?;
    let desc = notes
        .into_iter()
        .find(|(name, kind, _)| name == b"AMDGPU" && *kind == 32)
        .map(|(_, _, desc)| desc)?;
    let (root, _) = decode(desc, 0)?;
    let kernels = root.get("amdhsa.kernels")?;
    let Value::Array(kernels) = kernels else {
        return None;
    };
    let mut out = HashMap::new();
    for k in kernels {
        let Some(Value::Str(name)) = k.get(".name") else {
            continue;
        };
        let mut sizes = Vec::new();
        if let Some(Value::Array(args)) = k.get(".args") {
            for a in args {
                let hidden =
                    matches!(a.get(".value_kind"), Some(Value::Str(v)) if v.starts_with("hidden"));
                if hidden {
                    continue;
                }
                sizes.push(a.get(".size").and_then(Value::as_usize)?);
            }
        }
        out.insert(name.clone(), sizes);
    }
    Some(out)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// An ELF note: its name (without the NUL), type and descriptor.
type Note<'a> = (&'a [u8], u32, &'a [u8]);

/// Every note in the SHT_NOTE sections of a little-endian ELF64 image.
fn elf_notes(b: &[u8]) -> Option<Vec<Note<'_>>> {
    if !b.starts_with(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return None;
    }
    let shoff = usize::try_from(u64_at(b, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(b, 0x3A)?);
    let shnum = usize::from(u16_at(b, 0x3C)?);
    let mut notes = Vec::new();
    for i in 0..shnum {
        let sh = shoff.checked_add(i.checked_mul(shentsize)?)?;
        if u32_at(b, sh + 4)? != 7 {
            continue;
        }
        let off = usize::try_from(u64_at(b, sh + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(b, sh + 0x20)?).ok()?;
        let section = b.get(off..off.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= section.len() {
            let namesz = u32_at(section, at)? as usize;
            let descsz = u32_at(section, at + 4)? as usize;
            let kind = u32_at(section, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
            let name = section.get(name_at..name_at.checked_add(namesz)?)?;
            let desc = section.get(desc_at..desc_at.checked_add(descsz)?)?;
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            notes.push((name, kind, desc));
            at = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
        }
    }
    Some(notes)
}

/// A decoded MessagePack value (what the metadata uses).
#[derive(Debug, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bin,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value of string key `key` in a map.
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// Nesting deeper than this is refused (the metadata nests four levels).
const MAX_DEPTH: usize = 32;

/// Decodes the value at `b[at..]`; returns it and where the next begins.
fn decode(b: &[u8], at: usize) -> Option<(Value, usize)> {
    decode_at(b, at, 0)
}

fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(n)?)?;
    Some(bytes.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn decode_at(b: &[u8], at: usize, depth: usize) -> Option<(Value, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let tag = *b.get(at)?;
    let p = at + 1;
    let string = |len: usize, from: usize| -> Option<(Value, usize)> {
        let end = from.checked_add(len)?;
        let s = String::from_utf8_lossy(b.get(from..end)?).into_owned();
        Some((Value::Str(s), end))
    };
    let array = |len: usize, mut from: usize| -> Option<(Value, usize)> {
        let mut items = Vec::new();
        for _ in 0..len {
            let (v, next) = decode_at(b, from, depth + 1)?;
            items.push(v);
            from = next;
        }
        Some((Value::Array(items), from))
    };
    let map = |len: usize, mut from: usize| -> Option<(Value, usize)> {
        let mut entries = Vec::new();
        for _ in 0..len {
            let (k, next) = decode_at(b, from, depth + 1)?;
            let (v, next) = decode_at(b, next, depth + 1)?;
            entries.push((k, v));
            from = next;
        }
        Some((Value::Map(entries), from))
    };
    let len = |n: usize| -> Option<usize> { usize::try_from(be(b, p, n)?).ok() };
    match tag {
        0x00..=0x7f => Some((Value::Int(i64::from(tag)), p)),
        0xe0..=0xff => Some((Value::Int(i64::from(tag as i8)), p)),
        0x80..=0x8f => map(usize::from(tag & 0x0f), p),
        0x90..=0x9f => array(usize::from(tag & 0x0f), p),
        0xa0..=0xbf => string(usize::from(tag & 0x1f), p),
        0xc0 => Some((Value::Nil, p)),
        0xc2 => Some((Value::Bool(false), p)),
        0xc3 => Some((Value::Bool(true), p)),
        0xc4..=0xc6 => {
            let n = 1 << (tag - 0xc4);
            let end = (p + n).checked_add(len(n)?)?;
            b.get(p + n..end)?;
            Some((Value::Bin, end))
        }
        0xca => Some((
            Value::Float(f64::from(f32::from_bits(be(b, p, 4)? as u32))),
            p + 4,
        )),
        0xcb => Some((Value::Float(f64::from_bits(be(b, p, 8)?)), p + 8)),
        0xcc..=0xcf => {
            let n = 1 << (tag - 0xcc);
            Some((Value::Int(i64::try_from(be(b, p, n)?).ok()?), p + n))
        }
        0xd0..=0xd3 => {
            let n = 1 << (tag - 0xd0);
            let raw = be(b, p, n)?;
            let shift = 64 - 8 * n as u32;
            Some((Value::Int(((raw << shift) as i64) >> shift), p + n))
        }
        // Extension types: skipped (fixext 1..16, ext 8/16/32).
        0xd4..=0xd8 => {
            let n = 1usize << (tag - 0xd4);
            let end = p.checked_add(1 + n)?;
            b.get(p..end)?;
            Some((Value::Bin, end))
        }
        0xc7..=0xc9 => {
            let n = 1 << (tag - 0xc7);
            let end = (p + n + 1).checked_add(len(n)?)?;
            b.get(p..end)?;
            Some((Value::Bin, end))
        }
        0xd9..=0xdb => {
            let n = 1 << (tag - 0xd9);
            string(len(n)?, p + n)
        }
        0xdc | 0xdd => {
            let n = if tag == 0xdc { 2 } else { 4 };
            array(len(n)?, p + n)
        }
        0xde | 0xdf => {
            let n = if tag == 0xde { 2 } else { 4 };
            map(len(n)?, p + n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messagepack_values_decode() {
        // {"a": [1, -2, 300, "xy"], "b": true}
        let bytes = [
            0x82, 0xa1, b'a', 0x94, 0x01, 0xfe, 0xcd, 0x01, 0x2c, 0xa2, b'x', b'y', 0xa1, b'b',
            0xc3,
        ];
        let (v, end) = decode(&bytes, 0).expect("decodes");
        assert_eq!(end, bytes.len());
        assert_eq!(
            v.get("a"),
            Some(&Value::Array(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Str("xy".into())
            ]))
        );
        assert_eq!(v.get("b"), Some(&Value::Bool(true)));
        // Truncated or hostile input is refused, never a panic.
        assert!(decode(&bytes[..5], 0).is_none());
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0).is_none());
        assert!(kernel_param_sizes(b"\x7fELF\x02\x01garbage").is_none());
        assert!(kernel_param_sizes(&[0x7f]).is_none());
    }
}
