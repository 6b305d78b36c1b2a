//! Kernel arguments as kernels receive them.
//!
//! Both the CPU ABI and `cuLaunchKernel` take `void **args`: `args[i]`
//! points at argument i's value (a buffer's address, or a scalar's bytes).
//! A pack holds one 8-byte slot per argument and that pointer array; it is
//! built once per command at encode and read by every launch.

use std::ffi::c_void;

use crate::hal::Arg;

pub struct ArgPack {
    slots: Box<[u64]>,
    ptrs: Box<[*mut c_void]>,
}

// SAFETY: the pointers only point into `slots`, which the pack owns and
// never moves (a boxed slice); launches read them and never keep them.
unsafe impl Send for ArgPack {}
// SAFETY: as for Send: shared use only reads the pack.
unsafe impl Sync for ArgPack {}

/// Each argument's bytes as a kernel reads them: a buffer's address, a
/// scalar's native-endian value.
pub fn values(args: &[Arg]) -> Vec<Vec<u8>> {
    args.iter()
        .map(|a| match a {
            Arg::Buffer(b) => b.address().to_ne_bytes().to_vec(),
            Arg::Scalar(s) => s.bytes(),
        })
        .collect()
}

impl ArgPack {
    /// `values[i]` is argument i's bytes (at most 8, as every nexus
    /// argument is).
    pub fn new(values: &[Vec<u8>]) -> Self {
        let mut slots = vec![0u64; values.len()].into_boxed_slice();
        for (slot, v) in slots.iter_mut().zip(values) {
            let mut b = [0u8; 8];
            let n = v.len().min(8);
            b[..n].copy_from_slice(&v[..n]);
            *slot = u64::from_ne_bytes(b);
        }
        let ptrs = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        ArgPack { slots, ptrs }
    }

    /// The `void **` a kernel (or `cuLaunchKernel`) receives.
    pub fn pointers(&self) -> *mut *mut c_void {
        self.ptrs.as_ptr() as *mut *mut c_void
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Scalar;

    #[test]
    fn each_pointer_points_at_its_value() {
        let pack = ArgPack::new(&values(&[
            Arg::Scalar(Scalar::I32(-7)),
            Arg::Scalar(Scalar::F64(2.5)),
        ]));
        assert_eq!(pack.len(), 2);
        // SAFETY: two live slots of the pack, read as the kernel would.
        unsafe {
            let p = pack.pointers();
            assert_eq!(*(*p.add(0) as *const i32), -7);
            assert_eq!(*(*p.add(1) as *const f64), 2.5);
        }
    }
}
