//! A persistent cache of compiled kernels, shared by every in-process
//! compiler (NVRTC today; hiprtc, naga, Metal later).
//!
//! An entry is keyed by a SHA-256 digest of everything that decides the
//! compiler's output: the source bytes, the options, the target
//! architecture and the compiler's (and driver's) version; [`Key`] builds
//! it from labelled parts, so two compilers never share a key by accident.
//! Entries live in one folder per compiler under the user cache folder:
//!
//! * `$NEXUS_CACHE_DIR` when set (`0` or an empty value turns the cache off),
//! * else `$XDG_CACHE_HOME/nexus`, else `~/.cache/nexus`.
//!
//! Writes are atomic (a temporary file in the same folder, then a rename),
//! so a reader never sees half an entry. Each entry carries its key and a
//! digest of its payload: a truncated, foreign or corrupt file is logged,
//! removed and treated as a miss. Nothing here ever fails a load: an
//! unwritable or unreadable cache only costs a compile.
//!
//! ```ignore
//! let cache = CompileCache::open("nvrtc");
//! let key = Key::new("nvrtc").part("source", src).part("arch", b"sm_90");
//! let (image, state) = cache.get_or_compile(&key, || compile(src))?;
//! // state.as_str() is "hit", "miss" or "off" (the library property "CompileCache")
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Result;

/// The first bytes of every entry (format version 1).
const MAGIC: &[u8; 8] = b"NXSCACH1";

/// Where compiled kernels are kept, or `None` when the cache is off.
pub fn root_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("NEXUS_CACHE_DIR") {
        return (!v.is_empty() && v != "0").then(|| PathBuf::from(v));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("nexus"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache").join("nexus"))
}

/// Whether an entry came from the cache (the library property
/// "CompileCache").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheState {
    Hit,
    Miss,
    Off,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "hit",
            CacheState::Miss => "miss",
            CacheState::Off => "off",
        }
    }
}

/// A cache key: a digest of labelled parts, in order.
#[derive(Clone, Debug)]
pub struct Key {
    hasher: Sha256,
}

impl Key {
    /// A key for `compiler` (a name such as "nvrtc").
    pub fn new(compiler: &str) -> Key {
        Key {
            hasher: Sha256::new(),
        }
        .part("compiler", compiler.as_bytes())
        .part("nexus", env!("CARGO_PKG_VERSION").as_bytes())
    }

    /// Adds one part; the label and both lengths are hashed too, so
    /// ("ab", "c") and ("a", "bc") differ.
    pub fn part(mut self, label: &str, bytes: &[u8]) -> Key {
        for piece in [label.as_bytes(), bytes] {
            self.hasher.update(&(piece.len() as u64).to_le_bytes());
            self.hasher.update(piece);
        }
        self
    }

    /// The digest as 64 hex digits (the entry's file name).
    pub fn hex(&self) -> String {
        hex(&self.hasher.clone().finish())
    }
}

/// One compiler's folder of entries.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// The cache of `compiler` under [`root_dir`] (read from the environment
    /// now, so a test may change `NEXUS_CACHE_DIR` between loads).
    pub fn open(compiler: &str) -> CompileCache {
        CompileCache::at(root_dir().map(|d| d.join(compiler)))
    }

    /// A cache in `dir` (`None`: off).
    pub fn at(dir: Option<PathBuf>) -> CompileCache {
        CompileCache { dir }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn is_off(&self) -> bool {
        self.dir.is_none()
    }

    fn entry_path(&self, key: &Key) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.bin", key.hex())))
    }

    /// The payload stored under `key`, if a valid entry is there. A corrupt
    /// entry is logged and removed.
    pub fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let path = self.entry_path(key)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("compile cache: cannot read '{}': {e}", path.display());
                return None;
            }
        };
        match decode(&bytes, key) {
            Ok(payload) => Some(payload),
            Err(why) => {
                log::warn!(
                    "compile cache: ignoring corrupt entry '{}' ({why}); compiling again",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `payload` under `key`; never fails (an unwritable cache is
    /// logged once per process and skipped).
    pub fn put(&self, key: &Key, payload: &[u8]) {
        let (Some(dir), Some(path)) = (self.dir.as_ref(), self.entry_path(key)) else {
            return;
        };
        if let Err(e) = write_atomic(dir, &path, &encode(key, payload)) {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "compile cache: cannot write in '{}' ({e}); compiled kernels are not kept \
                     (set NEXUS_CACHE_DIR to a writable folder, or 0 to turn the cache off)",
                    dir.display()
                );
            } else {
                log::debug!("compile cache: cannot write '{}': {e}", path.display());
            }
        }
    }

    /// The cached payload for `key`, else `compile()`'s, stored for next
    /// time. A compile error is returned as is and nothing is stored.
    pub fn get_or_compile<F>(&self, key: &Key, compile: F) -> Result<(Vec<u8>, CacheState)>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        if self.is_off() {
            return Ok((compile()?, CacheState::Off));
        }
        if let Some(hit) = self.get(key) {
            return Ok((hit, CacheState::Hit));
        }
        let payload = compile()?;
        self.put(key, &payload);
        Ok((payload, CacheState::Miss))
    }
}

/// MAGIC, key digest (32 bytes), payload length (u64 LE), payload digest
/// (32 bytes), payload.
fn encode(key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 80);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.hasher.clone().finish());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha256(payload));
    out.extend_from_slice(payload);
    out
}

fn decode(bytes: &[u8], key: &Key) -> std::result::Result<Vec<u8>, &'static str> {
    const HEAD: usize = 8 + 32 + 8 + 32;
    if bytes.len() < HEAD {
        return Err("shorter than its header");
    }
    if &bytes[..8] != MAGIC {
        return Err("not a nexus cache entry");
    }
    if bytes[8..40] != key.hasher.clone().finish() {
        return Err("stored under another key");
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[40..48]);
    let payload = &bytes[HEAD..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err("truncated");
    }
    if bytes[48..80] != sha256(payload) {
        return Err("payload digest mismatch");
    }
    Ok(payload.to_vec())
}

/// Writes `data` to a temporary file in `dir`, then renames it over `path`.
fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// SHA-256 (FIPS 180-4), enough for content keys; no dependency.
#[derive(Clone, Debug)]
pub(crate) struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    used: usize,
    total: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    pub(crate) fn new() -> Sha256 {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            used: 0,
            total: 0,
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let take = (64 - self.used).min(data.len());
            self.block[self.used..self.used + take].copy_from_slice(&data[..take]);
            self.used += take;
            data = &data[take..];
            if self.used == 64 {
                let block = self.block;
                self.compress(&block);
                self.used = 0;
            }
        }
    }

    pub(crate) fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.used != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, chunk) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Status};
    use std::cell::Cell;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nexus-cache-test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key(src: &[u8]) -> Key {
        Key::new("test")
            .part("source", src)
            .part("options", b"-O3")
            .part("arch", b"sm_90")
            .part("version", b"12.4")
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&million)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn keys_are_stable_and_separate_every_part() {
        // The same inputs give the same key, in this process and the next.
        assert_eq!(key(b"k").hex(), key(b"k").hex());
        assert_eq!(key(b"k").hex().len(), 64);
        assert_eq!(
            Key::new("nvrtc").part("source", b"x").hex(),
            Key::new("nvrtc").part("source", b"x").hex()
        );
        // Any change of source, option, architecture or version is a new key.
        let base = key(b"k").hex();
        assert_ne!(base, key(b"k2").hex());
        for (label, value) in [
            ("options", &b"-O2"[..]),
            ("arch", b"sm_80"),
            ("version", b"12.5"),
        ] {
            let mut k = Key::new("test").part("source", b"k");
            for (l, v) in [
                ("options", &b"-O3"[..]),
                ("arch", b"sm_90"),
                ("version", b"12.4"),
            ] {
                k = k.part(l, if l == label { value } else { v });
            }
            assert_ne!(k.hex(), base, "changing {label} must change the key");
        }
        // Part boundaries count: ("ab","c") is not ("a","bc").
        assert_ne!(
            Key::new("t").part("a", b"ab").part("b", b"c").hex(),
            Key::new("t").part("a", b"a").part("b", b"bc").hex()
        );
        assert_ne!(
            Key::new("nvrtc").part("s", b"x").hex(),
            Key::new("hiprtc").part("s", b"x").hex()
        );
    }

    #[test]
    fn miss_then_hit() {
        let dir = temp_dir("hit");
        let cache = CompileCache::at(Some(dir.clone()));
        let compiles = Cell::new(0);
        let compile = || {
            compiles.set(compiles.get() + 1);
            Ok(b"IMAGE".to_vec())
        };
        let (a, s1) = cache.get_or_compile(&key(b"k"), compile).unwrap();
        let (b, s2) = cache.get_or_compile(&key(b"k"), compile).unwrap();
        assert_eq!((a.as_slice(), s1), (&b"IMAGE"[..], CacheState::Miss));
        assert_eq!((b.as_slice(), s2), (&b"IMAGE"[..], CacheState::Hit));
        assert_eq!(compiles.get(), 1);
        // Another key misses; no temporary file is left behind.
        let (_, s3) = cache.get_or_compile(&key(b"other"), compile).unwrap();
        assert_eq!(s3, CacheState::Miss);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".bin")), "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_entries_are_recompiled_and_replaced() {
        let dir = temp_dir("corrupt");
        let cache = CompileCache::at(Some(dir.clone()));
        let k = key(b"k");
        cache.put(&k, b"GOOD IMAGE");
        let path = cache.entry_path(&k).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() - 3].to_vec(),     // truncated
            flipped,                             // payload changed
            b"garbage".to_vec(),                 // not an entry
            encode(&key(b"someone else"), b"X"), // another key's entry
            Vec::new(),                          // empty
        ];
        for bad in cases {
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(cache.get(&k), None);
            let (out, state) = cache
                .get_or_compile(&k, || Ok(b"GOOD IMAGE".to_vec()))
                .unwrap();
            assert_eq!(
                (out.as_slice(), state),
                (&b"GOOD IMAGE"[..], CacheState::Miss)
            );
            assert_eq!(cache.get(&k).as_deref(), Some(&b"GOOD IMAGE"[..]));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disabled_and_unwritable_caches_still_compile() {
        let off = CompileCache::at(None);
        let (out, state) = off
            .get_or_compile(&key(b"k"), || Ok(b"I".to_vec()))
            .unwrap();
        assert_eq!((out.as_slice(), state), (&b"I"[..], CacheState::Off));
        assert_eq!(off.get(&key(b"k")), None);
        off.put(&key(b"k"), b"I"); // a no-op
                                   // A cache "folder" that is a file: nothing can be written, loads go on.
        let file = temp_dir("file");
        std::fs::write(&file, b"not a folder").unwrap();
        let broken = CompileCache::at(Some(file.join("nvrtc")));
        for _ in 0..2 {
            let (out, state) = broken
                .get_or_compile(&key(b"k"), || Ok(b"I".to_vec()))
                .unwrap();
            assert_eq!((out.as_slice(), state), (&b"I"[..], CacheState::Miss));
        }
        // A compile error is returned and nothing is stored.
        let dir = temp_dir("error");
        let cache = CompileCache::at(Some(dir.clone()));
        let e = cache
            .get_or_compile(&key(b"bad"), || {
                Err(Error::new(Status::CompileError, "syntax error"))
            })
            .unwrap_err();
        assert_eq!(e.status, Status::CompileError);
        assert_eq!(cache.get(&key(b"bad")), None);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn root_dir_follows_the_environment() {
        // Only reads NEXUS_CACHE_DIR's documented values; the variable itself
        // is process-global, so this test sets nothing.
        match std::env::var_os("NEXUS_CACHE_DIR") {
            Some(v) if v.is_empty() || v == "0" => assert_eq!(root_dir(), None),
            Some(v) => assert_eq!(root_dir(), Some(PathBuf::from(v))),
            None => {
                if let Some(d) = root_dir() {
                    assert!(d.ends_with("nexus"), "{}", d.display());
                }
            }
        }
    }
}
