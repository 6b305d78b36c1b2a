//! Everything of the Metal runtime that is not an Objective-C call, in
//! plain Rust that compiles (and is unit-tested) on every system: argument
//! layout, launch geometry, threadgroup memory, fills, the mapping of Metal
//! errors to nexus statuses, the device-name match against `device_lib/`,
//! the property table, and event epochs.
//!
//! The Apple-only files (`ffi/`, `device.rs`, ...) gather values from Metal
//! into the plain structs here and act on what these functions decide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{Error, Result, Status};
use crate::types::LaunchDims;

// ---------------------------------------------------------------- arguments

/// Entries of a compute function's buffer argument table (Metal's limit on
/// every Apple and Mac GPU family): `[[buffer(0)]]` .. `[[buffer(30)]]`.
pub const BUFFER_TABLE_ENTRIES: usize = 31;

/// The table entry that receives the command's `shared_memory` byte count
/// as a `uint` (`constant uint &nxs_shared_memory_size [[buffer(30)]]`):
/// MSL has no query for the threadgroup memory length, so kernels that
/// size a loop by it read it here. User arguments use 0..=29.
pub const SHARED_SIZE_INDEX: usize = BUFFER_TABLE_ENTRIES - 1;

/// Most arguments one Metal command takes.
pub const MAX_ARGS: usize = SHARED_SIZE_INDEX;

/// What an argument is, as the layout needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A buffer (bound with `setBuffer:offset:atIndex:`).
    Buffer,
    /// A scalar's native-endian bytes (bound with `setBytes:length:atIndex:`).
    Scalar(Vec<u8>),
}

/// One entry of the buffer argument table, for argument `arg`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    Buffer { index: usize, arg: usize },
    Bytes { index: usize, bytes: Vec<u8> },
}

/// Buffer argument i binds at `[[buffer(i)]]`; a scalar is copied with
/// `setBytes` at its own index (read as `constant T &x [[buffer(i)]]`).
pub fn layout(kernel: &str, args: &[ArgKind]) -> Result<Vec<Binding>> {
    if args.len() > MAX_ARGS {
        return Err(Error::new(
            Status::InvalidArgument,
            format!(
                "kernel '{kernel}': {} arguments, but a Metal kernel takes at most {MAX_ARGS} ([[buffer(0)]]..[[buffer({})]]; [[buffer({SHARED_SIZE_INDEX})]] receives the shared memory size)",
                args.len(),
                MAX_ARGS - 1
            ),
        ));
    }
    Ok(args
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            ArgKind::Buffer => Binding::Buffer { index: i, arg: i },
            ArgKind::Scalar(b) => Binding::Bytes {
                index: i,
                bytes: b.clone(),
            },
        })
        .collect())
}

/// A buffer binding of a pipeline, as its reflection reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reflected {
    pub name: String,
    pub index: usize,
    /// Bytes of the pointee (`constant float &` -> 4; `device float *` -> 4
    /// as well: reflection does not tell a scalar from an array).
    pub data_size: usize,
    pub used: bool,
}

/// The arguments a command must set: one per table entry below the highest
/// used one (the shared-size entry excluded).
pub fn arity(reflected: &[Reflected]) -> usize {
    reflected
        .iter()
        .filter(|r| r.index < SHARED_SIZE_INDEX)
        .map(|r| r.index + 1)
        .max()
        .unwrap_or(0)
}

/// Checks a command's arguments against the pipeline's reflection: every
/// entry the kernel declares must be set, and a scalar must have the size
/// of the `constant T &` it lands in.
pub fn check_reflection(kernel: &str, args: &[ArgKind], reflected: &[Reflected]) -> Result<()> {
    for r in reflected.iter().filter(|r| r.index < SHARED_SIZE_INDEX) {
        match args.get(r.index) {
            None => {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!(
                        "kernel '{kernel}' parameter '{}' at [[buffer({})]] is not set: the command has {} arguments",
                        r.name,
                        r.index,
                        args.len()
                    ),
                ))
            }
            Some(ArgKind::Scalar(b)) if r.data_size != 0 && b.len() != r.data_size => {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!(
                        "kernel '{kernel}' argument {} is a scalar of {} bytes, but parameter '{}' at [[buffer({})]] has {} bytes",
                        r.index,
                        b.len(),
                        r.name,
                        r.index,
                        r.data_size
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- geometry

/// What a pipeline and its device allow a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineLimits {
    /// `maxTotalThreadsPerThreadgroup` of the pipeline.
    pub max_total_threads: u64,
    /// `threadExecutionWidth` (the SIMD-group width).
    pub execution_width: u64,
    /// `staticThreadgroupMemoryLength` of the pipeline.
    pub static_threadgroup_memory: u64,
    /// The device's `maxThreadsPerThreadgroup`, per axis.
    pub max_threads_per_axis: [u64; 3],
    /// The device's `maxThreadgroupMemoryLength`.
    pub max_threadgroup_memory: u64,
}

/// A dispatch: `dispatchThreads` with the grid as total threads (Metal
/// handles a last partial threadgroup itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub threads: [u64; 3],
    pub per_group: [u64; 3],
}

pub fn dispatch(kernel: &str, dims: &LaunchDims, limits: &PipelineLimits) -> Result<Dispatch> {
    let group = dims.group.map(u64::from);
    let total: u64 = group.iter().product();
    if total > limits.max_total_threads {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{kernel}': a group of {total} threads ({}x{}x{}) exceeds the pipeline's maxTotalThreadsPerThreadgroup of {} (threadExecutionWidth {}: use a multiple of it up to the maximum)",
                group[0], group[1], group[2], limits.max_total_threads, limits.execution_width
            ),
        ));
    }
    if let Some(a) = (0..3).find(|&a| group[a] > limits.max_threads_per_axis[a]) {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{kernel}': group_size {} on axis {a} exceeds the device's maxThreadsPerThreadgroup of {} on that axis",
                group[a], limits.max_threads_per_axis[a]
            ),
        ));
    }
    Ok(Dispatch {
        threads: dims.grid.map(u64::from),
        per_group: group,
    })
}

/// Whether a group size wastes SIMD lanes (not a multiple of the execution
/// width): worth a log line, never an error.
pub fn wastes_lanes(dims: &LaunchDims, limits: &PipelineLimits) -> bool {
    let total: u64 = dims.group.iter().map(|&g| u64::from(g)).product();
    limits.execution_width > 1 && !total.is_multiple_of(limits.execution_width)
}

/// The threadgroup memory length to set at `[[threadgroup(0)]]` for a
/// command's `shared_memory` bytes: rounded up to 16 bytes (Metal's
/// granularity), checked with the kernel's static threadgroup memory
/// against the device's limit. `None` when nothing is to be set.
pub fn threadgroup_memory(
    kernel: &str,
    shared_memory: u32,
    limits: &PipelineLimits,
) -> Result<Option<u64>> {
    let rounded = u64::from(shared_memory).next_multiple_of(16);
    let needed = rounded + limits.static_threadgroup_memory;
    if needed > limits.max_threadgroup_memory {
        return Err(Error::new(
            Status::InvalidSize,
            format!(
                "kernel '{kernel}': shared_memory {shared_memory} bytes (rounded to {rounded}, plus {} of its own) exceeds the device's maxThreadgroupMemoryLength of {} bytes",
                limits.static_threadgroup_memory, limits.max_threadgroup_memory
            ),
        ));
    }
    Ok((rounded > 0).then_some(rounded))
}

// ---------------------------------------------------------------- fills

/// How a fill of a whole buffer is encoded with blit commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillPlan {
    /// Every byte the same: one `fillBuffer:range:value:`.
    Byte(u8),
    /// `seed` (the pattern repeated) is copied to the start of the buffer,
    /// then each copy `(from, to, len)` doubles what is filled (blits only
    /// fill single bytes).
    Doubling {
        seed: Vec<u8>,
        copies: Vec<(usize, usize, usize)>,
    },
}

/// Bytes of pattern staged per fill: a few doublings cover any buffer.
const SEED_BYTES: usize = 4096;

pub fn fill_plan(size: usize, pattern: &[u8]) -> FillPlan {
    if let Some(&b) = pattern.first() {
        if pattern.iter().all(|&x| x == b) {
            return FillPlan::Byte(b);
        }
    }
    let seed_len = size.min(SEED_BYTES.next_multiple_of(pattern.len().max(1)));
    let seed: Vec<u8> = pattern.iter().copied().cycle().take(seed_len).collect();
    let mut copies = Vec::new();
    let mut filled = seed_len;
    // `filled` stays a multiple of the pattern, so each copy keeps the phase.
    while filled < size {
        let len = filled.min(size - filled);
        copies.push((0, filled, len));
        filled += len;
    }
    FillPlan::Doubling { seed, copies }
}

// ---------------------------------------------------------------- errors

/// `MTLCommandBufferStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandBufferStatus {
    NotEnqueued,
    Enqueued,
    Committed,
    Scheduled,
    Completed,
    Error,
}

impl CommandBufferStatus {
    pub fn from_raw(v: u64) -> Self {
        match v {
            0 => Self::NotEnqueued,
            1 => Self::Enqueued,
            2 => Self::Committed,
            3 => Self::Scheduled,
            4 => Self::Completed,
            _ => Self::Error,
        }
    }

    /// Done, successfully or not.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Error)
    }
}

/// A failed command buffer (`MTLCommandBufferError` code and the NSError's
/// description) as a nexus error.
pub fn command_buffer_error(code: i64, description: &str) -> Error {
    let (status, what) = match code {
        1 => (Status::DriverError, "internal error"),
        2 => (
            Status::Timeout,
            "timeout: the GPU ran a command buffer too long (the system's watchdog)",
        ),
        3 => (
            Status::DriverError,
            "page fault: a kernel accessed memory out of bounds",
        ),
        4 => (
            Status::DriverError,
            "access revoked: this process may no longer use the GPU",
        ),
        7 => (Status::NotSupported, "not permitted"),
        8 => (Status::OutOfMemory, "out of memory"),
        9 => (
            Status::InvalidBuffer,
            "invalid resource: a buffer was freed or evicted while in use",
        ),
        10 => (Status::InvalidBuffer, "memoryless resource used"),
        11 => (Status::InvalidDevice, "device removed"),
        12 => (Status::DriverError, "stack overflow in a kernel"),
        _ => (Status::DriverError, "unknown error"),
    };
    let detail = if description.is_empty() {
        String::new()
    } else {
        format!(": {description}")
    };
    Error::new(
        status,
        format!("Metal command buffer failed (MTLCommandBufferError {code}, {what}){detail}"),
    )
}

/// A failed library load or compile (`MTLLibraryError` code, the
/// NSError's description, which holds the compiler's log) as a nexus error.
pub fn library_error(origin: &str, code: i64, description: &str) -> Error {
    let (status, what) = match code {
        1 => (Status::NotSupported, "unsupported"),
        3 => (Status::CompileError, "compile failure"),
        4 => (Status::CompileError, "compile warning treated as failure"),
        5 => (Status::InvalidKernel, "function not found"),
        6 => (Status::InvalidLibrary, "file not found"),
        _ => (Status::InvalidLibrary, "internal error"),
    };
    Error::new(
        status,
        format!(
            "Metal library '{origin}': {what} (MTLLibraryError {code}):\n{}",
            description.trim_end()
        ),
    )
}

/// What a library's bytes are: a `.metallib` (starts with "MTLB") or MSL
/// source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibraryKind {
    Metallib,
    Source,
}

pub fn library_kind(origin: &str, bytes: &[u8]) -> Result<LibraryKind> {
    if bytes.starts_with(b"MTLB") {
        return Ok(LibraryKind::Metallib);
    }
    if bytes.is_empty() {
        return Err(Error::new(
            Status::InvalidLibrary,
            format!("Metal library '{origin}' is empty"),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => Ok(LibraryKind::Source),
        _ => Err(Error::new(
            Status::InvalidLibrary,
            format!(
                "Metal library '{origin}' is neither a .metallib (it does not start with 'MTLB') nor MSL source text"
            ),
        )),
    }
}

// ---------------------------------------------------------------- devices

/// The `device_lib/` architecture of an Apple GPU by its Metal name
/// ("Apple M1 Pro" -> "m1", "Apple M4 Max" -> "m4"); other GPUs (AMD and
/// Intel in Intel Macs, later Apple chips) keep their lower-case name,
/// which the database then does not know.
pub fn architecture(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("apple"))
    {
        if let Some(chip) = words.get(1) {
            let lower = chip.to_ascii_lowercase();
            let mut chars = lower.chars();
            if chars.next() == Some('m')
                && chars.clone().next().is_some()
                && chars.all(|c| c.is_ascii_digit())
            {
                return lower;
            }
        }
    }
    name.trim().to_ascii_lowercase()
}

/// The vendor by the device's name (Metal reports none): Apple silicon,
/// or the AMD and Intel GPUs of Intel Macs.
pub fn vendor(name: &str) -> &'static str {
    // The first word, without a trademark sign ("Intel(R) UHD Graphics").
    let first = name.split_whitespace().next().unwrap_or_default();
    let first = first.split('(').next().unwrap_or_default();
    ["Apple", "AMD", "Intel", "NVIDIA"]
        .into_iter()
        .find(|v| first.eq_ignore_ascii_case(v))
        .unwrap_or("")
}

/// What `device.rs` queries of one `MTLDevice`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub registry_id: u64,
    pub unified_memory: bool,
    pub low_power: bool,
    pub removable: bool,
    pub headless: bool,
    pub max_threads_per_threadgroup: [u64; 3],
    pub max_threadgroup_memory: u64,
    pub recommended_working_set: u64,
    pub max_buffer_length: u64,
    /// `MTLGPUFamily` values the device supports (`supportsFamily:`).
    pub families: Vec<i64>,
}

/// Every `MTLGPUFamily` nexus asks about, with the name it reports.
pub const FAMILIES: &[(i64, &str)] = &[
    (1001, "Apple1"),
    (1002, "Apple2"),
    (1003, "Apple3"),
    (1004, "Apple4"),
    (1005, "Apple5"),
    (1006, "Apple6"),
    (1007, "Apple7"),
    (1008, "Apple8"),
    (1009, "Apple9"),
    (1010, "Apple10"),
    (2001, "Mac1"),
    (2002, "Mac2"),
    (3001, "Common1"),
    (3002, "Common2"),
    (3003, "Common3"),
    (5001, "Metal3"),
    (5002, "Metal4"),
];

fn family_name(v: i64) -> String {
    FAMILIES
        .iter()
        .find(|(f, _)| *f == v)
        .map_or_else(|| format!("family {v}"), |(_, n)| (*n).to_string())
}

/// The device's live properties.
pub fn device_properties(info: &DeviceInfo) -> Value {
    let families: Vec<String> = info.families.iter().map(|&f| family_name(f)).collect();
    let memory_kind = if info.unified_memory {
        "Unified"
    } else {
        "Device"
    };
    let memory_types = json!([
        {"Type": "L1", "Scope": "unit"},
        {"Type": "Shared", "Scope": "group", "Size": info.max_threadgroup_memory},
        {"Type": memory_kind, "Scope": if info.unified_memory { "system" } else { "device" },
         "Size": info.recommended_working_set},
    ]);
    let max_group = info.max_threads_per_threadgroup;
    json!({
        "Name": info.name,
        "Vendor": vendor(&info.name),
        "Type": "gpu",
        "DeviceType": "gpu",
        "Architecture": architecture(&info.name),
        "Runtime": "metal",
        "ID": info.index,
        "RegistryID": info.registry_id,
        "UnifiedMemory": info.unified_memory as i64,
        "LowPower": info.low_power as i64,
        "Removable": info.removable as i64,
        "Headless": info.headless as i64,
        "MaxGroupSize": max_group,
        "MaxThreadsPerGroup": max_group[0].max(max_group[1]).max(max_group[2]),
        "MaxGroupMemory": info.max_threadgroup_memory,
        "MemorySize": info.recommended_working_set,
        "RecommendedMaxWorkingSetSize": info.recommended_working_set,
        "MaxAllocationSize": info.max_buffer_length,
        "MaxKernelArguments": MAX_ARGS,
        "GPUFamilies": families,
        "MemorySubsystem": {
            "SupportedMemoryTypes": ["L1", "Shared", memory_kind],
            "MemoryTypes": memory_types,
        },
    })
}

// ---------------------------------------------------------------- events

/// A 64-bit counter the GPU and the host both set (an `MTLSharedEvent`;
/// a plain atomic in the tests).
pub trait Counter {
    fn value(&self) -> u64;
    /// Sets the value from the host (only ever raised within one epoch).
    fn set(&self, value: u64);
}

/// One epoch of an event: a counter holding `value + 1` once the epoch has
/// started (0: not started yet).
pub struct Epoch<C> {
    pub counter: C,
    /// Highest value planned on the counter (queued GPU signals, host sets).
    reserved: AtomicU64,
    /// Highest value a committed command buffer (or the host) sets there:
    /// a GPU wait may rely on it.
    queued: AtomicU64,
}

impl<C> Epoch<C> {
    fn new(counter: C, reserved: u64, queued: u64) -> Self {
        Epoch {
            counter,
            reserved: AtomicU64::new(reserved),
            queued: AtomicU64::new(queued),
        }
    }
}

/// The counter value standing for event value `value`.
pub fn raw_value(value: u64) -> Result<u64> {
    value.checked_add(1).ok_or_else(|| {
        Error::new(
            Status::InvalidValue,
            format!("event value {value} is too large for a Metal event (at most 2**64 - 2)"),
        )
    })
}

/// A nexus event over counters that only rise (`MTLSharedEvent`'s GPU
/// signals must not lower it): a chain of epochs, as the Vulkan runtime
/// does with timeline semaphores.
///
/// - a signal command of `v` raises the newest epoch to `v + 1` when that
///   is above everything planned there, else goes to a fresh epoch (which
///   starts when the signal executes);
/// - a host `signal(v)` raises the newest epoch when nothing is pending on
///   it and `v + 1` is above its value, else starts a fresh epoch at
///   `v + 1` at once (a reset);
/// - the value is that of the newest started epoch.
///
/// A wait command becomes a GPU wait (`encodeWaitForEvent:value:`) only
/// when a committed signal (or the host) sets the newest epoch to the value;
/// otherwise the run is held on the host until that is so. A GPU wait thus
/// only ever waits for work already committed, and a wait sees the value
/// as it is when it executes, resets included.
pub struct Chain<C> {
    /// Oldest first; never empty.
    epochs: Vec<Arc<Epoch<C>>>,
}

impl<C: Counter> Chain<C> {
    /// A chain at value 0: `first` must hold 1.
    pub fn new(first: C) -> Self {
        Chain {
            epochs: vec![Arc::new(Epoch::new(first, 1, 1))],
        }
    }

    fn newest(&self) -> &Arc<Epoch<C>> {
        // `epochs` is never empty (see the field).
        &self.epochs[self.epochs.len() - 1]
    }

    /// The value now; forgets epochs older than the newest started one.
    pub fn current(&mut self) -> u64 {
        for i in (0..self.epochs.len()).rev() {
            let v = self.epochs[i].counter.value();
            if v >= 1 {
                self.epochs.drain(..i);
                return v - 1;
            }
        }
        0
    }

    /// Plans a signal command of `value` when its run is encoded: the epoch
    /// and counter value to signal. `fresh` makes a counter at 0.
    pub fn plan_signal(
        &mut self,
        value: u64,
        fresh: impl FnOnce() -> Result<C>,
    ) -> Result<(Arc<Epoch<C>>, u64)> {
        let raw = raw_value(value)?;
        let newest = self.newest().clone();
        if newest.reserved.load(Ordering::Acquire) < raw {
            newest.reserved.store(raw, Ordering::Release);
            return Ok((newest, raw));
        }
        let epoch = Arc::new(Epoch::new(fresh()?, raw, 0));
        self.epochs.push(epoch.clone());
        Ok((epoch, raw))
    }

    /// A planned signal's command buffer is committed.
    pub fn committed(epoch: &Epoch<C>, raw: u64) {
        epoch.queued.fetch_max(raw, Ordering::AcqRel);
    }

    /// A wait command of `value`: the epoch and counter value to wait for
    /// on the GPU, or `None` when the wait cannot be decided yet.
    pub fn plan_wait(&self, value: u64) -> Result<Option<(Arc<Epoch<C>>, u64)>> {
        let raw = raw_value(value)?;
        let newest = self.newest();
        Ok((newest.queued.load(Ordering::Acquire) >= raw).then(|| (newest.clone(), raw)))
    }

    /// `signal(value)` from the host. `starting` makes a counter already at
    /// the given counter value.
    pub fn host_signal(
        &mut self,
        value: u64,
        starting: impl FnOnce(u64) -> Result<C>,
    ) -> Result<()> {
        let raw = raw_value(value)?;
        let newest = self.newest().clone();
        let now = newest.counter.value();
        let reserved = newest.reserved.load(Ordering::Acquire);
        if now >= 1 && now == reserved && raw > now {
            newest.counter.set(raw);
            newest.reserved.store(raw, Ordering::Release);
            newest.queued.store(raw, Ordering::Release);
        } else {
            // The host's value supersedes every earlier epoch.
            let epoch = Arc::new(Epoch::new(starting(raw)?, raw, raw));
            self.epochs.clear();
            self.epochs.push(epoch);
        }
        Ok(())
    }

    /// For a host wait: the newest epoch, if a committed signal will take
    /// it to `value` (worth waiting on its counter).
    pub fn reachable(&self, value: u64) -> Option<(Arc<Epoch<C>>, u64)> {
        let raw = value.checked_add(1)?;
        let newest = self.newest();
        (newest.queued.load(Ordering::Acquire) >= raw).then(|| (newest.clone(), raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(group: [u32; 3], grid: [u32; 3]) -> LaunchDims {
        LaunchDims { group, grid }
    }

    fn limits() -> PipelineLimits {
        PipelineLimits {
            max_total_threads: 1024,
            execution_width: 32,
            static_threadgroup_memory: 0,
            max_threads_per_axis: [1024, 1024, 1024],
            max_threadgroup_memory: 32768,
        }
    }

    #[test]
    fn buffers_and_scalars_bind_at_their_index() {
        let b = layout(
            "k",
            &[
                ArgKind::Buffer,
                ArgKind::Scalar(vec![1, 2, 3, 4]),
                ArgKind::Buffer,
            ],
        );
        assert_eq!(
            b.ok(),
            Some(vec![
                Binding::Buffer { index: 0, arg: 0 },
                Binding::Bytes {
                    index: 1,
                    bytes: vec![1, 2, 3, 4]
                },
                Binding::Buffer { index: 2, arg: 2 },
            ])
        );
    }

    #[test]
    fn more_arguments_than_the_table_holds_are_refused() {
        let args = vec![ArgKind::Buffer; MAX_ARGS + 1];
        let e = layout("many", &args).err();
        assert!(e
            .as_ref()
            .is_some_and(|e| e.status == Status::InvalidArgument
                && e.message.contains("'many'")
                && e.message.contains("31 arguments")));
        assert!(layout("ok", &vec![ArgKind::Buffer; MAX_ARGS]).is_ok());
    }

    #[test]
    fn reflection_checks_missing_arguments_and_scalar_sizes() {
        let r = |name: &str, index, data_size| Reflected {
            name: name.into(),
            index,
            data_size,
            used: true,
        };
        let refl = vec![
            r("y", 0, 8),
            r("alpha", 1, 8),
            r("n", 2, 8),
            r("nxs_shared_memory_size", SHARED_SIZE_INDEX, 4),
        ];
        assert_eq!(arity(&refl), 3);
        let good = [
            ArgKind::Buffer,
            ArgKind::Scalar(vec![0; 8]),
            ArgKind::Scalar(vec![0; 8]),
        ];
        assert!(check_reflection("axpy", &good, &refl).is_ok());
        let short = check_reflection("axpy", &good[..2], &refl).err();
        assert!(short.is_some_and(|e| e.message.contains("'n' at [[buffer(2)]] is not set")));
        let wrong = [
            ArgKind::Buffer,
            ArgKind::Scalar(vec![0; 4]),
            ArgKind::Scalar(vec![0; 8]),
        ];
        let e = check_reflection("axpy", &wrong, &refl).err();
        assert!(e.is_some_and(|e| e.status == Status::InvalidArgument
            && e.message.contains("argument 1 is a scalar of 4 bytes")
            && e.message.contains("has 8 bytes")));
    }

    #[test]
    fn grid_is_total_threads_and_groups_are_checked() {
        let d = dispatch("k", &dims([64, 1, 1], [1000, 1, 1]), &limits());
        assert_eq!(
            d.ok(),
            Some(Dispatch {
                threads: [1000, 1, 1],
                per_group: [64, 1, 1]
            })
        );
        let e = dispatch("big", &dims([64, 32, 1], [64, 32, 1]), &limits()).err();
        assert!(e.is_some_and(|e| e.status == Status::InvalidSize
            && e.message.contains("'big'")
            && e.message.contains("2048 threads")
            && e.message.contains("1024")));
        let mut l = limits();
        l.max_threads_per_axis = [1024, 1024, 64];
        let e = dispatch("z", &dims([1, 1, 128], [1, 1, 128]), &l).err();
        assert!(e.is_some_and(|e| e.message.contains("axis 2")));
        assert!(wastes_lanes(&dims([48, 1, 1], [48, 1, 1]), &limits()));
        assert!(!wastes_lanes(&dims([64, 1, 1], [48, 1, 1]), &limits()));
    }

    #[test]
    fn threadgroup_memory_rounds_to_16_and_is_bounded() {
        let l = limits();
        assert_eq!(threadgroup_memory("k", 0, &l).ok(), Some(None));
        assert_eq!(threadgroup_memory("k", 1, &l).ok(), Some(Some(16)));
        assert_eq!(threadgroup_memory("k", 256, &l).ok(), Some(Some(256)));
        assert_eq!(threadgroup_memory("k", 32768, &l).ok(), Some(Some(32768)));
        let e = threadgroup_memory(
            "k",
            32760,
            &PipelineLimits {
                static_threadgroup_memory: 16,
                ..l
            },
        )
        .err();
        assert!(e.is_some_and(|e| e.status == Status::InvalidSize
            && e.message.contains("rounded to 32768")
            && e.message.contains("16 of its own")));
    }

    /// Runs a plan on a byte vector, as the blit encoder would.
    fn apply(size: usize, plan: &FillPlan) -> Vec<u8> {
        let mut buf = vec![0u8; size];
        match plan {
            FillPlan::Byte(b) => buf.fill(*b),
            FillPlan::Doubling { seed, copies } => {
                buf[..seed.len()].copy_from_slice(seed);
                for &(from, to, len) in copies {
                    assert!(from + len <= to, "copies never overlap");
                    let (a, b) = buf.split_at_mut(to);
                    b[..len].copy_from_slice(&a[from..from + len]);
                }
            }
        }
        buf
    }

    #[test]
    fn fills_repeat_the_pattern_over_the_whole_buffer() {
        assert_eq!(fill_plan(100, &[7, 7, 7, 7]), FillPlan::Byte(7));
        for (size, pattern) in [
            (2usize, vec![1u8, 2]),
            (8, vec![1, 2, 3, 4, 5, 6, 7, 8]),
            (4100, vec![1, 2, 3, 4]),
            (1 << 20, vec![9, 8]),
            (3 * 4096 + 8, vec![1, 2, 3, 4, 5, 6, 7, 8]),
        ] {
            let plan = fill_plan(size, &pattern);
            let expect: Vec<u8> = pattern.iter().copied().cycle().take(size).collect();
            assert_eq!(apply(size, &plan), expect, "size {size}");
            if let FillPlan::Doubling { copies, .. } = &plan {
                assert!(copies.len() <= 20);
            }
        }
    }

    #[test]
    fn errors_map_to_statuses_with_the_metal_code() {
        let e = command_buffer_error(3, "Invalid device address");
        assert_eq!(e.status, Status::DriverError);
        assert!(e.message.contains("page fault") && e.message.contains("Invalid device address"));
        assert_eq!(command_buffer_error(8, "").status, Status::OutOfMemory);
        assert_eq!(command_buffer_error(2, "").status, Status::Timeout);
        let e = library_error(
            "k.metal",
            3,
            "program_source:3:5: error: use of undeclared identifier 'x'\n",
        );
        assert_eq!(e.status, Status::CompileError);
        assert!(e.message.contains("k.metal") && e.message.contains("undeclared identifier 'x'"));
        assert_eq!(library_error("f", 6, "").status, Status::InvalidLibrary);
        assert_eq!(
            CommandBufferStatus::from_raw(4),
            CommandBufferStatus::Completed
        );
        assert!(CommandBufferStatus::from_raw(5).is_finished());
        assert!(!CommandBufferStatus::from_raw(2).is_finished());
    }

    #[test]
    fn library_bytes_are_metallib_or_source() {
        assert_eq!(
            library_kind("a", b"MTLB\x01\x00").ok(),
            Some(LibraryKind::Metallib)
        );
        assert_eq!(
            library_kind("a", b"kernel void f() {}").ok(),
            Some(LibraryKind::Source)
        );
        assert!(library_kind("a", b"").is_err());
        let e = library_kind("bin", &[0xff, 0xfe, 0]).err();
        assert!(
            e.is_some_and(|e| e.status == Status::InvalidLibrary && e.message.contains("'bin'"))
        );
    }

    #[test]
    fn apple_gpu_names_match_the_device_database() {
        assert_eq!(architecture("Apple M1"), "m1");
        assert_eq!(architecture("Apple M1 Pro"), "m1");
        assert_eq!(architecture("Apple M2 Max"), "m2");
        assert_eq!(architecture("Apple M3 Ultra"), "m3");
        assert_eq!(architecture("Apple M4"), "m4");
        assert_eq!(architecture("Apple Mx"), "apple mx");
        assert_eq!(architecture("AMD Radeon Pro 5500M"), "amd radeon pro 5500m");
        for arch in ["m1", "m2", "m3", "m4"] {
            let entry = crate::database::lookup_entry(arch);
            assert!(
                entry.is_some_and(|e| e.value["Vendor"] == "Apple"),
                "device_lib has an Apple entry for {arch}"
            );
        }
    }

    #[test]
    fn properties_come_from_the_queried_values() {
        let info = DeviceInfo {
            index: 0,
            name: "Apple M2 Pro".into(),
            registry_id: 42,
            unified_memory: true,
            max_threads_per_threadgroup: [1024, 1024, 1024],
            max_threadgroup_memory: 32768,
            recommended_working_set: 21 << 30,
            max_buffer_length: 16 << 30,
            families: vec![1008, 2002, 5001],
            ..DeviceInfo::default()
        };
        let p = device_properties(&info);
        assert_eq!(p["Architecture"], "m2");
        assert_eq!(p["Runtime"], "metal");
        assert_eq!(p["Type"], "gpu");
        assert_eq!(p["RegistryID"], 42);
        assert_eq!(p["UnifiedMemory"], 1);
        assert_eq!(p["MaxThreadsPerGroup"], 1024);
        assert_eq!(p["MaxGroupMemory"], 32768);
        assert_eq!(p["GPUFamilies"], json!(["Apple8", "Mac2", "Metal3"]));
        assert_eq!(p["MemorySubsystem"]["MemoryTypes"][2]["Type"], "Unified");
        assert_eq!(p["Vendor"], "Apple");
    }

    /// A counter in memory, as an MTLSharedEvent's signaledValue.
    #[derive(Default)]
    struct Mem(AtomicU64);

    impl Counter for Mem {
        fn value(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn set(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    fn at(v: u64) -> Result<Mem> {
        Ok(Mem(AtomicU64::new(v)))
    }

    #[test]
    fn signals_raise_one_epoch_and_a_lower_signal_starts_another() -> Result<()> {
        let mut c = Chain::new(Mem(AtomicU64::new(1)));
        assert_eq!(c.current(), 0);
        assert!(c.plan_wait(3)?.is_none(), "nothing will set 3 yet");
        let (e1, raw) = c.plan_signal(3, || at(0))?;
        assert_eq!(raw, 4);
        assert!(c.plan_wait(3)?.is_none(), "planned, not committed");
        Chain::committed(&e1, raw);
        let (w, wraw) = c
            .plan_wait(3)?
            .ok_or_else(|| Error::new(Status::InvalidEvent, "x"))?;
        assert!(Arc::ptr_eq(&w, &e1) && wraw == 4);
        // A signal of a value not above what is planned goes to a new epoch.
        let (e2, raw2) = c.plan_signal(2, || at(0))?;
        assert!(!Arc::ptr_eq(&e1, &e2) && raw2 == 3);
        assert!(
            c.plan_wait(2)?.is_none(),
            "the newest epoch's signal is not committed"
        );
        // The GPU runs the first signal: the value is 3 until the new epoch starts.
        e1.counter.set(4);
        assert_eq!(c.current(), 3);
        e2.counter.set(3);
        assert_eq!(c.current(), 2);
        assert_eq!(
            c.epochs.len(),
            1,
            "older epochs are forgotten once a newer one starts"
        );
        Ok(())
    }

    #[test]
    fn a_host_signal_may_lower_the_value() -> Result<()> {
        let mut c = Chain::new(Mem(AtomicU64::new(1)));
        c.host_signal(5, at)?;
        assert_eq!(c.current(), 5);
        assert!(c.plan_wait(5)?.is_some(), "the host set it");
        c.host_signal(7, at)?;
        assert_eq!(c.epochs.len(), 1, "raised in place");
        c.host_signal(1, at)?;
        assert_eq!(c.current(), 1, "a reset");
        assert!(c.plan_wait(5)?.is_none(), "a wait sees the reset value");
        // With a signal planned, a host signal starts a new epoch at once.
        let (e, raw) = c.plan_signal(9, || at(0))?;
        Chain::committed(&e, raw);
        c.host_signal(4, at)?;
        e.counter.set(raw);
        assert_eq!(
            c.current(),
            4,
            "the earlier GPU signal does not override the host"
        );
        assert!(c.reachable(9).is_none() && c.reachable(4).is_some());
        assert!(raw_value(u64::MAX).is_err());
        Ok(())
    }

    #[test]
    fn other_gpus_keep_their_name_and_discrete_memory() {
        let info = DeviceInfo {
            name: "AMD Radeon Pro 5500M".into(),
            unified_memory: false,
            max_threads_per_threadgroup: [1024, 1024, 1024],
            ..DeviceInfo::default()
        };
        let p = device_properties(&info);
        assert_eq!(p["Architecture"], "amd radeon pro 5500m");
        assert_eq!(p["Vendor"], "AMD");
        assert_eq!(vendor("Intel(R) UHD Graphics 630"), "Intel");
        assert_eq!(vendor("Radeon"), "");
        assert_eq!(vendor("Intel Iris Plus Graphics"), "Intel");
        assert_eq!(p["UnifiedMemory"], 0);
        assert_eq!(p["MemorySubsystem"]["MemoryTypes"][2]["Type"], "Device");
        assert!(crate::database::lookup_entry("amd radeon pro 5500m").is_none());
        assert_eq!(p["GPUFamilies"], json!([]));
    }

    #[test]
    fn no_arguments_and_no_reflection() {
        assert_eq!(layout("empty", &[]).ok(), Some(vec![]));
        assert_eq!(arity(&[]), 0);
        assert!(check_reflection("empty", &[], &[]).is_ok());
        assert_eq!(library_error("l", 5, "").status, Status::InvalidKernel);
        assert_eq!(library_error("l", 1, "").status, Status::NotSupported);
        assert_eq!(command_buffer_error(11, "").status, Status::InvalidDevice);
    }

    #[test]
    fn host_waits_listen_only_where_a_committed_signal_leads() -> Result<()> {
        let mut c = Chain::new(Mem(AtomicU64::new(1)));
        assert!(c.reachable(2).is_none(), "nothing will set 2");
        let (e, raw) = c.plan_signal(2, || at(0))?;
        assert!(c.reachable(2).is_none(), "not committed yet");
        Chain::committed(&e, raw);
        assert!(c.reachable(2).is_some() && c.reachable(1).is_some());
        assert!(c.reachable(3).is_none());
        assert!(c.reachable(u64::MAX).is_none());
        Ok(())
    }
}
