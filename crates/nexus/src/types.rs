//! Small value types shared by the object model and the backends.

use crate::error::{Error, Result, Status};

/// How an event is used; every runtime accepts all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum EventType {
    /// Signalled and waited on by any stream or the host.
    Shared = 0,
    /// A simple completion notification.
    Signal = 1,
    /// Kernel-completion fence.
    Fence = 2,
}

impl EventType {
    pub const ALL: &'static [EventType] = &[EventType::Shared, EventType::Signal, EventType::Fence];

    pub fn name(self) -> &'static str {
        match self {
            EventType::Shared => "Shared",
            EventType::Signal => "Signal",
            EventType::Fence => "Fence",
        }
    }

    pub fn from_code(code: i64) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| *t as i64 == code)
            .ok_or_else(|| {
                Error::new(
                    Status::InvalidValue,
                    format!("unknown event_type {code} (valid: 0 Shared, 1 Signal, 2 Fence)"),
                )
            })
    }
}

macro_rules! data_types {
    ($($name:ident = $value:expr, $size:expr, $numpy:expr, $typestr:expr, $dlpack:expr);* $(;)?) => {
        /// Element types of buffers and scalar kernel arguments.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(i32)]
        pub enum DataType { $($name = $value),* }

        impl DataType {
            pub const ALL: &'static [DataType] = &[$(DataType::$name),*];

            pub fn name(self) -> &'static str {
                match self { $(DataType::$name => stringify!($name)),* }
            }
            /// Bytes per element (0 for `Undefined`).
            pub fn size(self) -> usize {
                match self { $(DataType::$name => $size),* }
            }
            /// The numpy dtype name (`float32`, ...).
            pub fn numpy_name(self) -> &'static str {
                match self { $(DataType::$name => $numpy),* }
            }
            /// The array interface's type string (`<f4`, ...); raw bytes
            /// for `Undefined`, and `<V2` for bfloat16, which numpy lacks.
            pub fn typestr(self) -> &'static str {
                match self { $(DataType::$name => $typestr),* }
            }
            /// DLPack's (type code, bits): 0 int, 1 uint, 2 float, 4
            /// bfloat, 6 bool.
            pub fn dlpack(self) -> (u8, u8) {
                match self { $(DataType::$name => $dlpack),* }
            }
        }
    };
}

// name = code, bytes, numpy name, array-interface typestr, DLPack (code, bits)
data_types! {
    Undefined = 0, 0, "undefined", "|u1", (1, 8);
    F32 = 1, 4, "float32", "<f4", (2, 32);
    F16 = 2, 2, "float16", "<f2", (2, 16);
    BF16 = 3, 2, "bfloat16", "<V2", (4, 16);
    F64 = 4, 8, "float64", "<f8", (2, 64);
    I32 = 5, 4, "int32", "<i4", (0, 32);
    U32 = 6, 4, "uint32", "<u4", (1, 32);
    I64 = 7, 8, "int64", "<i8", (0, 64);
    U64 = 8, 8, "uint64", "<u8", (1, 64);
    I16 = 9, 2, "int16", "<i2", (0, 16);
    U16 = 10, 2, "uint16", "<u2", (1, 16);
    I8 = 11, 1, "int8", "|i1", (0, 8);
    U8 = 12, 1, "uint8", "|u1", (1, 8);
    Bool = 13, 1, "bool", "|b1", (6, 8);
}

impl DataType {
    pub fn from_code(code: i64) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| *t as i64 == code)
            .ok_or_else(|| Error::new(Status::InvalidValue, format!("unknown data_type {code}")))
    }

    /// From an array-interface type string: the type and its element size.
    /// Unknown types of a known size are raw bytes (`Undefined`);
    /// big-endian multi-byte data is refused (`None`).
    pub fn from_typestr(s: &str) -> Option<(DataType, usize)> {
        let body = s.trim_start_matches(['<', '>', '|', '=']);
        if s.starts_with('>') && !body.ends_with('1') {
            return None;
        }
        let known = Self::ALL.iter().copied().find(|t| {
            *t != DataType::Undefined && t.typestr().trim_start_matches(['<', '|']) == body
        });
        match known {
            Some(t) => Some((t, t.size())),
            None => Some((DataType::Undefined, body.get(1..)?.parse().ok()?)),
        }
    }

    /// From DLPack's (type code, bits); `None` for types nexus lacks.
    pub fn from_dlpack(code: u8, bits: u8) -> Option<DataType> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| *t != DataType::Undefined && t.dlpack() == (code, bits))
    }

    /// From a numpy dtype name; unknown names map to `Undefined` (raw bytes).
    pub fn from_numpy_name(name: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.numpy_name() == name)
            .unwrap_or(DataType::Undefined)
    }
}

/// A scalar kernel argument, stored in its exact width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl Scalar {
    /// Native-endian bytes, as a kernel reads them.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Scalar::I32(v) => v.to_ne_bytes().to_vec(),
            Scalar::U32(v) => v.to_ne_bytes().to_vec(),
            Scalar::I64(v) => v.to_ne_bytes().to_vec(),
            Scalar::U64(v) => v.to_ne_bytes().to_vec(),
            Scalar::F32(v) => v.to_ne_bytes().to_vec(),
            Scalar::F64(v) => v.to_ne_bytes().to_vec(),
        }
    }

    /// Bytes the scalar occupies as a kernel parameter.
    pub fn size(&self) -> usize {
        self.data_type().size()
    }

    pub fn data_type(&self) -> DataType {
        match self {
            Scalar::I32(_) => DataType::I32,
            Scalar::U32(_) => DataType::U32,
            Scalar::I64(_) => DataType::I64,
            Scalar::U64(_) => DataType::U64,
            Scalar::F32(_) => DataType::F32,
            Scalar::F64(_) => DataType::F64,
        }
    }
}

/// Most groups one launch may have (2^48: far past any device's limit,
/// and far from wrapping a 64-bit count).
pub const MAX_TOTAL_GROUPS: u64 = 1 << 48;

/// Launch shape: work-items per group and total work-items, per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub group: [u32; 3],
    pub grid: [u32; 3],
}

impl LaunchDims {
    /// Validates sizes (each axis >= 1) as DESIGN.md decides.
    pub fn new(group: &[i64], grid: &[i64]) -> Result<Self> {
        let dims = LaunchDims {
            group: axes("group_size", group)?,
            grid: axes("grid_size", grid)?,
        };
        // Checked here once, so no backend multiplies into a wrapped count.
        let groups = dims.groups();
        let total = groups
            .iter()
            .try_fold(1u64, |acc, &g| acc.checked_mul(g as u64))
            .filter(|&t| t <= MAX_TOTAL_GROUPS);
        if total.is_none() {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "grid_size {:?} with group_size {:?} is {groups:?} groups, more than the {MAX_TOTAL_GROUPS} a launch may have",
                    dims.grid, dims.group
                ),
            ));
        }
        Ok(dims)
    }

    /// Groups per axis: ceil(grid / group).
    pub fn groups(&self) -> [u32; 3] {
        std::array::from_fn(|a| self.grid[a].div_ceil(self.group[a]))
    }

    pub fn total_groups(&self) -> u64 {
        self.groups().iter().map(|&g| g as u64).product()
    }

    pub fn threads_per_group(&self) -> u64 {
        self.group.iter().map(|&g| g as u64).product()
    }
}

fn axes(what: &str, v: &[i64]) -> Result<[u32; 3]> {
    if v.is_empty() || v.len() > 3 {
        return Err(Error::new(
            Status::InvalidSize,
            format!("{what} must have 1 to 3 axes, got {}", v.len()),
        ));
    }
    let mut out = [1u32; 3];
    for (a, &n) in v.iter().enumerate() {
        if n <= 0 || n > u32::MAX as i64 {
            return Err(Error::new(
                Status::InvalidSize,
                format!(
                    "{what} axis {a} is {n}; it must be between 1 and {}",
                    u32::MAX
                ),
            ));
        }
        out[a] = n as u32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interop_type_tables_round_trip() {
        for &t in DataType::ALL.iter().filter(|t| **t != DataType::Undefined) {
            assert_eq!(
                DataType::from_typestr(t.typestr()),
                Some((t, t.size())),
                "{t:?}"
            );
            let (code, bits) = t.dlpack();
            assert_eq!(DataType::from_dlpack(code, bits), Some(t), "{t:?}");
        }
        assert_eq!(DataType::from_typestr(">f4"), None);
        assert_eq!(
            DataType::from_typestr("|V8"),
            Some((DataType::Undefined, 8))
        );
        assert_eq!(DataType::from_dlpack(5, 64), None);
    }

    #[test]
    fn dims() {
        let d = LaunchDims::new(&[32], &[1000]).unwrap();
        assert_eq!(d.groups(), [32, 1, 1]);
        assert!(LaunchDims::new(&[0], &[10]).is_err());
        assert!(LaunchDims::new(&[1, 1, 1, 1], &[10]).is_err());
        assert!(LaunchDims::new(&[4], &[-3]).is_err());
        let max = u32::MAX as i64;
        let e = LaunchDims::new(&[1, 1, 1], &[max, max, max]).unwrap_err();
        assert!(e.message.contains("groups"), "{}", e.message);
        assert_eq!(
            LaunchDims::new(&[1], &[max]).unwrap().total_groups(),
            max as u64
        );
    }
}
