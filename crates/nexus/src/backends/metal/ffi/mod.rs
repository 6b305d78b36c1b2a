//! Every Objective-C call of the Metal runtime, behind small safe wrappers
//! (owned `Retained` handles; no raw pointer leaves this module except a
//! buffer's `contents`, which `memory.rs` reads and writes within its
//! length). Values the rest of the runtime decides on come back as the
//! plain types of `logic.rs`.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::OnceLock;

use block2::RcBlock;
use objc2::rc::Retained;
use objc2::runtime::{NSObjectProtocol, ProtocolObject};
use objc2_foundation::{NSError, NSRange, NSString};
use objc2_metal::{
    MTLBinding, MTLBindingType, MTLBlitCommandEncoder, MTLBuffer, MTLBufferBinding,
    MTLCommandBuffer, MTLCommandEncoder, MTLCommandQueue, MTLCompileOptions,
    MTLComputeCommandEncoder, MTLComputePipelineState, MTLCopyAllDevices, MTLDevice, MTLEvent,
    MTLFunction, MTLGPUFamily, MTLLibrary, MTLPipelineOption, MTLResourceOptions, MTLSharedEvent,
    MTLSharedEventListener, MTLSize,
};

use super::logic::{self, CommandBufferStatus, DeviceInfo, Dispatch, Reflected};

type Obj<P> = Retained<ProtocolObject<P>>;

/// An NSError's code and description (for a library, the compiler's log).
pub struct NsError {
    pub code: i64,
    pub description: String,
}

fn ns_error(e: &NSError) -> NsError {
    NsError {
        code: e.code() as i64,
        description: e.localizedDescription().to_string(),
    }
}

/// Runs `f` inside an autorelease pool. Metal returns many objects
/// autoreleased (command buffers, encoders, names, errors); a thread without
/// a pool of its own (nexus's workers, Python's threads) would keep them
/// until it exits, so every entry point that makes such calls drains one.
pub fn pool<T>(f: impl FnOnce() -> T) -> T {
    objc2::rc::autoreleasepool(|_| f())
}

/// One GPU.
#[derive(Clone)]
pub struct Device(Obj<dyn MTLDevice>);

/// Every Metal device of the system (empty where there is none).
pub fn all_devices() -> Vec<Device> {
    MTLCopyAllDevices()
        .to_vec()
        .into_iter()
        .map(Device)
        .collect()
}

impl Device {
    /// What nexus reports of the device (`index`: its place in the runtime).
    pub fn info(&self, index: usize) -> DeviceInfo {
        let d = &self.0;
        let m = d.maxThreadsPerThreadgroup();
        let families = logic::FAMILIES
            .iter()
            .filter(|(f, _)| d.supportsFamily(MTLGPUFamily(*f as isize)))
            .map(|(f, _)| *f)
            .collect();
        DeviceInfo {
            index,
            name: d.name().to_string(),
            registry_id: d.registryID(),
            unified_memory: d.hasUnifiedMemory(),
            low_power: d.isLowPower(),
            removable: d.isRemovable(),
            headless: d.isHeadless(),
            max_threads_per_threadgroup: [m.width as u64, m.height as u64, m.depth as u64],
            max_threadgroup_memory: d.maxThreadgroupMemoryLength() as u64,
            recommended_working_set: d.recommendedMaxWorkingSetSize(),
            max_buffer_length: d.maxBufferLength() as u64,
            families,
        }
    }

    /// Bytes of buffers the device has allocated now.
    pub fn allocated(&self) -> u64 {
        self.0.currentAllocatedSize() as u64
    }

    /// A zero-filled buffer of `len` bytes in shared storage (CPU and GPU
    /// use the same memory; hazards tracked by Metal).
    pub fn new_buffer(&self, len: usize) -> Option<Buffer> {
        self.0
            .newBufferWithLength_options(len, MTLResourceOptions::StorageModeShared)
            .map(Buffer)
    }

    /// A shared-storage buffer over host memory the caller keeps alive and
    /// unmoved for the buffer's life: `ptr` page-aligned, `len` a multiple
    /// of the page size (Metal's conditions; checked by the caller).
    ///
    /// # Safety
    /// `ptr..ptr + len` must be readable and writable memory that stays
    /// valid until the returned buffer (and every command using it) is gone.
    pub unsafe fn wrap_host(&self, ptr: NonNull<c_void>, len: usize) -> Option<Buffer> {
        // SAFETY: the caller's contract; no deallocator: the caller frees.
        unsafe {
            self.0.newBufferWithBytesNoCopy_length_options_deallocator(
                ptr,
                len,
                MTLResourceOptions::StorageModeShared,
                None,
            )
        }
        .map(Buffer)
    }

    pub fn new_queue(&self) -> Option<Queue> {
        self.0.newCommandQueue().map(Queue)
    }

    /// A shared event at `value`.
    pub fn new_event(&self, value: u64) -> Option<SharedEvent> {
        let e = self.0.newSharedEvent()?;
        if value != 0 {
            e.setSignaledValue(value);
        }
        Some(SharedEvent(e))
    }

    /// Compiles MSL source.
    pub fn library_from_source(&self, source: &str) -> Result<Library, NsError> {
        let options = MTLCompileOptions::new();
        self.0
            .newLibraryWithSource_options_error(&NSString::from_str(source), Some(&options))
            .map(Library)
            .map_err(|e| ns_error(&e))
    }

    /// Loads a `.metallib`'s bytes.
    pub fn library_from_data(&self, bytes: &[u8]) -> Result<Library, NsError> {
        let data = dispatch2::DispatchData::from_bytes(bytes);
        self.0
            .newLibraryWithData_error(&data)
            .map(Library)
            .map_err(|e| ns_error(&e))
    }

    /// A compute pipeline for `function`, with its buffer bindings.
    pub fn pipeline(&self, function: &Function) -> Result<(Pipeline, Vec<Reflected>), NsError> {
        let mut reflection = None;
        // SAFETY: a compute function of this device; the reflection slot is
        // a valid out-parameter for the call's duration.
        let state = unsafe {
            self.0
                .newComputePipelineStateWithFunction_options_reflection_error(
                    &function.0,
                    MTLPipelineOption::BindingInfo,
                    Some(&mut reflection),
                )
        }
        .map_err(|e| ns_error(&e))?;
        let mut reflected = Vec::new();
        // `bindings` exists from macOS 13 / iOS 16; before, no reflection
        // (arguments are then not checked against the kernel).
        let reflection = reflection.filter(|r| r.respondsToSelector(objc2::sel!(bindings)));
        if let Some(r) = reflection {
            for b in r.bindings().to_vec() {
                if b.r#type() != MTLBindingType::Buffer {
                    continue;
                }
                let raw: *const ProtocolObject<dyn MTLBinding> = &*b;
                // SAFETY: a binding of type Buffer is an MTLBufferBinding
                // (Metal's documented contract); the cast keeps the object.
                let buffer: &ProtocolObject<dyn MTLBufferBinding> =
                    unsafe { &*(raw as *const ProtocolObject<dyn MTLBufferBinding>) };
                reflected.push(Reflected {
                    name: b.name().to_string(),
                    index: b.index(),
                    data_size: buffer.bufferDataSize(),
                    used: b.isUsed(),
                });
            }
        }
        Ok((Pipeline(state), reflected))
    }
}

/// A buffer in shared storage.
pub struct Buffer(Obj<dyn MTLBuffer>);

// SAFETY: MTLBuffer objects are thread-safe (Apple: "Metal resources are
// thread-safe"); nexus orders host access to contents itself.
unsafe impl Send for Buffer {}
// SAFETY: as for Send.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// The CPU address of the buffer's memory (shared storage).
    pub fn contents(&self) -> *mut u8 {
        self.0.contents().as_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.0.length()
    }
}

pub struct Library(Obj<dyn MTLLibrary>);

impl Library {
    pub fn function_names(&self) -> Vec<String> {
        self.0
            .functionNames()
            .to_vec()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub fn function(&self, name: &str) -> Option<Function> {
        self.0
            .newFunctionWithName(&NSString::from_str(name))
            .map(Function)
    }
}

pub struct Function(Obj<dyn MTLFunction>);

pub struct Pipeline(Obj<dyn MTLComputePipelineState>);

impl Pipeline {
    pub fn max_total_threads(&self) -> u64 {
        self.0.maxTotalThreadsPerThreadgroup() as u64
    }

    pub fn execution_width(&self) -> u64 {
        self.0.threadExecutionWidth() as u64
    }

    pub fn static_threadgroup_memory(&self) -> u64 {
        self.0.staticThreadgroupMemoryLength() as u64
    }
}

pub struct Queue(Obj<dyn MTLCommandQueue>);

impl Queue {
    /// A command buffer that retains what it uses (runs keep their
    /// schedule alive as well, this is belt and braces).
    pub fn command_buffer(&self) -> Option<CommandBuffer> {
        self.0.commandBuffer().map(CommandBuffer)
    }
}

/// A command buffer: encoded by one thread, then committed; after that only
/// its status and error are read.
pub struct CommandBuffer(Obj<dyn MTLCommandBuffer>);

// SAFETY: encoding happens on one thread at a time (under the stream's
// queue lock); after commit only status, error and waits are called, which
// Metal allows from any thread.
unsafe impl Send for CommandBuffer {}
// SAFETY: as for Send.
unsafe impl Sync for CommandBuffer {}

impl CommandBuffer {
    pub fn compute(&self) -> Option<ComputeEncoder> {
        self.0.computeCommandEncoder().map(ComputeEncoder)
    }

    pub fn blit(&self) -> Option<BlitEncoder> {
        self.0.blitCommandEncoder().map(BlitEncoder)
    }

    /// Sets `event` to `value` once everything encoded before has run.
    pub fn signal(&self, event: &SharedEvent, value: u64) {
        let e: &ProtocolObject<dyn MTLEvent> = ProtocolObject::from_ref(&*event.0);
        self.0.encodeSignalEvent_value(e, value);
    }

    /// Holds what is encoded after until `event` reaches `value`.
    pub fn wait(&self, event: &SharedEvent, value: u64) {
        let e: &ProtocolObject<dyn MTLEvent> = ProtocolObject::from_ref(&*event.0);
        self.0.encodeWaitForEvent_value(e, value);
    }

    pub fn commit(&self) {
        self.0.commit();
    }

    pub fn status(&self) -> CommandBufferStatus {
        CommandBufferStatus::from_raw(self.0.status().0 as u64)
    }

    pub fn error(&self) -> Option<NsError> {
        self.0.error().map(|e| ns_error(&e))
    }

    pub fn wait_until_completed(&self) {
        self.0.waitUntilCompleted();
    }

    /// When the GPU started and ended the buffer, in seconds (host time).
    pub fn gpu_times(&self) -> (f64, f64) {
        (self.0.GPUStartTime(), self.0.GPUEndTime())
    }
}

pub struct ComputeEncoder(Obj<dyn MTLComputeCommandEncoder>);

impl ComputeEncoder {
    pub fn set_pipeline(&self, p: &Pipeline) {
        self.0.setComputePipelineState(&p.0);
    }

    /// Binds `buffer` from `offset` at `[[buffer(index)]]`; `None` when the
    /// offset or index is out of range.
    pub fn set_buffer(&self, buffer: &Buffer, offset: usize, index: usize) -> Option<()> {
        if offset > buffer.len() || index >= logic::BUFFER_TABLE_ENTRIES {
            return None;
        }
        // SAFETY: offset within the buffer, index within the table.
        unsafe {
            self.0
                .setBuffer_offset_atIndex(Some(&buffer.0), offset, index)
        };
        Some(())
    }

    /// Copies `bytes` to `[[buffer(index)]]` (Metal keeps its own copy).
    pub fn set_bytes(&self, bytes: &[u8], index: usize) -> Option<()> {
        let ptr = NonNull::new(bytes.as_ptr() as *mut c_void)?;
        if bytes.is_empty() || bytes.len() > 4096 || index >= logic::BUFFER_TABLE_ENTRIES {
            return None;
        }
        // SAFETY: `ptr` is valid for `bytes.len()` bytes during the call,
        // which copies them; index within the table.
        unsafe { self.0.setBytes_length_atIndex(ptr, bytes.len(), index) };
        Some(())
    }

    /// Threadgroup memory at `[[threadgroup(index)]]` (a multiple of 16,
    /// checked against the device's limit by `logic::threadgroup_memory`).
    pub fn set_threadgroup_memory(&self, len: u64, index: usize) {
        // SAFETY: a length Metal accepts (see above); index 0 exists on
        // every device (31 entries).
        unsafe {
            self.0
                .setThreadgroupMemoryLength_atIndex(len as usize, index)
        };
    }

    pub fn dispatch(&self, d: &Dispatch) {
        let size = |v: [u64; 3]| MTLSize {
            width: v[0] as usize,
            height: v[1] as usize,
            depth: v[2] as usize,
        };
        self.0
            .dispatchThreads_threadsPerThreadgroup(size(d.threads), size(d.per_group));
    }

    pub fn end(self) {
        self.0.endEncoding();
    }
}

pub struct BlitEncoder(Obj<dyn MTLBlitCommandEncoder>);

impl BlitEncoder {
    /// `None` (nothing encoded) when a range is outside its buffer.
    pub fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        size: usize,
    ) -> Option<()> {
        let fits = |b: &Buffer, o: usize| o.checked_add(size).is_some_and(|end| end <= b.len());
        if !fits(src, src_offset) || !fits(dst, dst_offset) {
            return None;
        }
        // SAFETY: both ranges lie within their buffers (checked above).
        unsafe {
            self.0
                .copyFromBuffer_sourceOffset_toBuffer_destinationOffset_size(
                    &src.0, src_offset, &dst.0, dst_offset, size,
                )
        };
        Some(())
    }

    pub fn fill(&self, buffer: &Buffer, offset: usize, len: usize, value: u8) -> Option<()> {
        if offset.checked_add(len)? > buffer.len() {
            return None;
        }
        self.0
            .fillBuffer_range_value(&buffer.0, NSRange::new(offset, len), value);
        Some(())
    }

    pub fn end(self) {
        self.0.endEncoding();
    }
}

/// An `MTLSharedEvent`: a 64-bit counter the GPU and the host set.
pub struct SharedEvent(Obj<dyn MTLSharedEvent>);

impl logic::Counter for SharedEvent {
    fn value(&self) -> u64 {
        self.0.signaledValue()
    }

    fn set(&self, value: u64) {
        self.0.setSignaledValue(value);
    }
}

impl SharedEvent {
    /// Calls `ring` (on Metal's listener queue) once the counter reaches
    /// `value`, or at once if it has.
    pub fn notify(&self, value: u64, ring: impl Fn() + Send + Sync + 'static) {
        static LISTENER: OnceLock<Retained<MTLSharedEventListener>> = OnceLock::new();
        let listener = LISTENER.get_or_init(MTLSharedEventListener::new);
        let block =
            RcBlock::new(move |_: NonNull<ProtocolObject<dyn MTLSharedEvent>>, _: u64| ring());
        // SAFETY: a valid block (Metal copies it and calls it once, from
        // its listener queue; `ring` is Send + Sync + 'static).
        unsafe {
            self.0
                .notifyListener_atValue_block(listener, value, RcBlock::as_ptr(&block))
        };
    }
}
