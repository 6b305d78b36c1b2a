//! Import and export policy for memory shared with other libraries.
//!
//! The binding only parses protocols into `hal::ForeignMemory`; here nexus
//! decides which device owns the memory (searching every runtime whose
//! memory domain matches), waits for the producer's stream, and wraps the
//! memory without a copy when the target owns it, copying otherwise (another
//! device, or a read-only array).

use crate::buffer::Buffer;
use crate::device::Device;
use crate::error::{Error, Result, Status};
use crate::hal::ForeignMemory;
use crate::runtime::known_runtimes;

/// A buffer on `target` over (or, when it must, a copy of) foreign memory.
pub fn import(target: &Device, memory: ForeignMemory) -> Result<Buffer> {
    Buffer::check_data_size(memory.size)?;
    let owner = owning_device(target, &memory)?;
    // The producer's work on the memory comes first, whatever the target.
    owner.synchronize_external_stream(memory.stream)?;
    let readonly = memory.readonly;
    let wrapped = owner.wrap_device_memory(
        memory.address,
        memory.size,
        memory.data_type,
        memory.keep_alive,
    )?;
    if owner == *target && !readonly {
        return Ok(wrapped);
    }
    target.copy_buffer(&wrapped)
}

/// A buffer on `target` over foreign memory without a copy, or `None` when
/// the memory is not the target's (another device, or read-only): kernel
/// arguments are used in place or not at all.
pub fn import_in_place(target: &Device, memory: ForeignMemory) -> Result<Option<Buffer>> {
    Buffer::check_data_size(memory.size)?;
    let mine = target.memory_domain() == memory.domain && target.owns_address(memory.address);
    if !mine || memory.readonly {
        return Ok(None);
    }
    target.synchronize_external_stream(memory.stream)?;
    target
        .wrap_device_memory(
            memory.address,
            memory.size,
            memory.data_type,
            memory.keep_alive,
        )
        .map(Some)
}

/// The device that holds `memory`: the target if it does, else the first
/// device of a runtime with the same memory domain that owns the address.
fn owning_device(target: &Device, memory: &ForeignMemory) -> Result<Device> {
    let holds = |d: &Device| d.memory_domain() == memory.domain && d.owns_address(memory.address);
    if holds(target) {
        return Ok(target.clone());
    }
    known_runtimes()
        .iter()
        .flat_map(|r| r.devices().to_vec())
        .find(holds)
        .ok_or_else(|| {
            Error::new(
                Status::InvalidValue,
                format!(
                    "address {:#x} ({:?} memory) is not memory of any nexus device",
                    memory.address, memory.domain
                ),
            )
        })
}
