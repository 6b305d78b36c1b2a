//! Memory shared with other libraries, in runtime-neutral terms.
//!
//! The binding parses the interop protocols (DLPack, the CUDA array
//! interface) into `ForeignMemory` and back; which device owns an address,
//! which stream to wait for and when to copy is decided in the core
//! (`crate::interop`), from what each backend says of its memory.

use std::any::Any;
use std::sync::Arc;

use crate::types::DataType;

/// Where a device's memory lives, as interop protocols name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryDomain {
    /// Host memory (kDLCPU).
    Host,
    /// NVIDIA device memory (kDLCUDA), the CUDA array interface's memory.
    Cuda,
    /// AMD device memory (kDLROCM).
    Rocm,
    /// Memory no other library can address through a pointer (a Vulkan or
    /// OpenCL buffer object): shared only by copying to the host.
    Opaque,
}

impl MemoryDomain {
    /// The DLPack device type code (`None`: not exportable by DLPack).
    pub fn dlpack_device_type(self) -> Option<i32> {
        match self {
            MemoryDomain::Host => Some(1),
            MemoryDomain::Cuda => Some(2),
            MemoryDomain::Rocm => Some(10),
            MemoryDomain::Opaque => None,
        }
    }

    pub fn from_dlpack_device_type(code: i32) -> Option<Self> {
        [MemoryDomain::Host, MemoryDomain::Cuda, MemoryDomain::Rocm]
            .into_iter()
            .find(|d| d.dlpack_device_type() == Some(code))
    }

    /// Whether buffers of this memory export `__cuda_array_interface__`
    /// (CuPy's ROCm build speaks it for AMD memory too).
    pub fn speaks_cuda_array_interface(self) -> bool {
        matches!(self, MemoryDomain::Cuda | MemoryDomain::Rocm)
    }
}

/// Which of the producer's streams its work on the memory is ordered on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerStream {
    /// Nothing to wait for (the producer said so, or its work is done).
    None,
    /// The runtime's legacy default stream: a DLPack producer asked for no
    /// particular stream orders its work before it.
    LegacyDefault,
    /// A raw stream handle of the memory's runtime.
    Handle(u64),
}

/// Memory another library owns: where, how much, of what type, ordered on
/// which stream, and what keeps it alive.
#[derive(Clone)]
pub struct ForeignMemory {
    pub address: u64,
    pub size: usize,
    pub data_type: DataType,
    pub domain: MemoryDomain,
    pub stream: ProducerStream,
    /// The producer forbids writes: nexus then works on a copy.
    pub readonly: bool,
    /// Held as long as nexus uses the memory (the producer's object).
    pub keep_alive: Arc<dyn Any + Send + Sync>,
}
