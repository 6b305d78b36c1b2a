//! Encoded CUDA schedules.
//!
//! Encoding packs every launch's `void **kernelParams` once. Each run of two
//! or more consecutive kernels is captured into a CUDA graph at encode time
//! and replayed with one `cuGraphLaunch`; a lone kernel is launched
//! directly (cheaper than a one-node graph). A signal command on a CUDA
//! event is a stream memory write (`cuStreamWriteValue64`) of the event's
//! mapped value; a wait command is a one-thread polling kernel on that
//! value (see `encode`); on events of other runtimes both fall back to host
//! functions.

use std::ffi::c_void;
use std::sync::Arc;

use super::library::CudaKernel;
use super::result as r;
use super::sync::{CudaEvent, CudaStream};
use super::sys::{self, CUstream};
use super::{Gpu, Handle};
use crate::error::{Error, Result, Status};
use crate::hal;

/// Argument values in 8-byte slots and the pointer array the driver reads.
struct ArgPack {
    _slots: Box<[u64]>,
    ptrs: Box<[*mut c_void]>,
}

impl ArgPack {
    fn new(values: &[Vec<u8>]) -> Self {
        let mut slots = vec![0u64; values.len()].into_boxed_slice();
        for (slot, v) in slots.iter_mut().zip(values) {
            let mut b = [0u8; 8];
            b[..v.len().min(8)].copy_from_slice(&v[..v.len().min(8)]);
            *slot = u64::from_ne_bytes(b);
        }
        let ptrs = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        ArgPack { _slots: slots, ptrs }
    }
}

struct Launch {
    func: Handle,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: ArgPack,
}

enum Step {
    Launch(Launch),
    Graph { exec: Handle, graph: Handle },
    WriteValue { address: u64, value: u64 },
    WaitValue { address: u64, value: u64 },
    Host { event: Arc<dyn hal::Event>, value: u64, wait: bool },
}

pub struct CudaSchedule {
    gpu: Arc<Gpu>,
    steps: Vec<Step>,
    /// Keeps kernels, buffers and events alive while the schedule exists.
    _ops: Vec<hal::Op>,
}

// Raw pointers in the steps point into storage the schedule owns (argument
// packs) or at driver objects it owns; running only reads them.
unsafe impl Send for CudaSchedule {}
unsafe impl Sync for CudaSchedule {}

impl Drop for CudaSchedule {
    fn drop(&mut self) {
        if self.gpu.bind().is_err() {
            return;
        }
        for s in &self.steps {
            if let Step::Graph { exec, graph } = s {
                // SAFETY: instantiated at encode, destroyed once.
                unsafe {
                    (self.gpu.d.cuGraphExecDestroy)(exec.0);
                    (self.gpu.d.cuGraphDestroy)(graph.0);
                }
            }
        }
    }
}

fn launch(gpu: &Gpu, l: &Launch, stream: CUstream) -> Result<()> {
    // SAFETY: the function is loaded, the argument pack matches the kernel
    // (its pointers point into the pack's own slots) and outlives the call.
    let code = unsafe {
        (gpu.d.cuLaunchKernel)(
            l.func.0,
            l.grid[0],
            l.grid[1],
            l.grid[2],
            l.block[0],
            l.block[1],
            l.block[2],
            l.shared,
            stream,
            l.args.ptrs.as_ptr() as *mut *mut c_void,
            std::ptr::null_mut(),
        )
    };
    r::check(gpu.d, code, || format!("cuLaunchKernel (groups {:?}, group size {:?}, shared memory {})", l.grid, l.block, l.shared))
}

unsafe extern "C" fn host_step(user: *mut c_void) {
    // SAFETY: `user` is the Box leaked by `run` for exactly this call.
    let b = unsafe { Box::from_raw(user as *mut (Arc<dyn hal::Event>, u64, bool)) };
    let (event, value, wait) = *b;
    let result = if wait { event.wait(value, None).map(|_| ()) } else { event.signal(value) };
    if let Err(e) = result {
        log::error!("CUDA host step on a foreign event failed: {}", e.message);
    }
}

impl CudaSchedule {
    pub(crate) fn encode(gpu: &Arc<Gpu>, ops: Vec<hal::Op>) -> Result<Self> {
        gpu.bind()?;
        let mut steps = Vec::new();
        let mut pending: Vec<Launch> = Vec::new();
        for op in &ops {
            match op {
                hal::Op::Launch { kernel, args, dims, shared_memory } => {
                    let k = kernel.as_any().downcast_ref::<CudaKernel>().ok_or_else(|| {
                        Error::new(Status::InvalidKernel, format!("kernel '{}' does not belong to the CUDA runtime", kernel.name()))
                    })?;
                    if !Arc::ptr_eq(&k.gpu, gpu) {
                        return Err(Error::new(
                            Status::InvalidKernel,
                            format!("kernel '{}' was loaded on {}, the schedule runs on {}", k.name_str(), k.gpu.label(), gpu.label()),
                        ));
                    }
                    if let Some(n) = k.arity {
                        if args.len() < n {
                            return Err(Error::new(
                                Status::InvalidArgument,
                                format!("kernel '{}' takes {n} arguments, the command sets {}", k.name_str(), args.len()),
                            ));
                        }
                    }
                    let mut values: Vec<Vec<u8>> = args
                        .iter()
                        .map(|a| match a {
                            hal::Arg::Buffer(b) => b.address().to_ne_bytes().to_vec(),
                            hal::Arg::Scalar(s) => s.bytes(),
                        })
                        .collect();
                    if k.hidden_count {
                        values.truncate(k.arity.unwrap_or(values.len()));
                        values.push(dims.grid[0].to_ne_bytes().to_vec());
                    }
                    let threads = dims.threads_per_group();
                    let max = r::func_attribute(gpu.d, k.func.0, sys::FUNC_MAX_THREADS_PER_BLOCK).unwrap_or(1024) as u64;
                    if threads > max {
                        return Err(Error::new(
                            Status::InvalidSize,
                            format!("kernel '{}': group of {threads} work-items exceeds its limit of {max} on {}", k.name_str(), gpu.label()),
                        ));
                    }
                    if *shared_memory > 48 * 1024 {
                        // SAFETY: live function handle.
                        let code = unsafe {
                            (gpu.d.cuFuncSetAttribute)(k.func.0, sys::FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES, *shared_memory as i32)
                        };
                        r::check(gpu.d, code, || format!("kernel '{}': allowing {} bytes of shared memory", k.name_str(), shared_memory))?;
                    }
                    pending.push(Launch { func: k.func, grid: dims.groups(), block: dims.group, shared: *shared_memory, args: ArgPack::new(&values) });
                }
                hal::Op::Wait { event, value } if event.as_any().is::<CudaEvent>() && gpu.wait_kernel()?.is_some() => {
                    // A stream memory wait (cuStreamWaitValue64) stalls the
                    // context's other streams on this driver: a value that
                    // another nexus stream writes later never lands
                    // (measured on H100/H200, CUDA 13). A one-thread polling
                    // kernel waits in stream order without blocking other
                    // streams, and is a plain launch (graph-capturable).
                    let e = event.as_any().downcast_ref::<CudaEvent>().expect("checked above");
                    let w = gpu.wait_kernel()?.expect("checked above");
                    let mut values = vec![e.device_address.to_ne_bytes().to_vec(), value.to_ne_bytes().to_vec()];
                    if let Some(flag) = w.exit_flag {
                        values.push(flag.to_ne_bytes().to_vec());
                    }
                    pending.push(Launch { func: w.func, grid: [1, 1, 1], block: [1, 1, 1], shared: 0, args: ArgPack::new(&values) });
                }
                hal::Op::Signal { event, value } | hal::Op::Wait { event, value } => {
                    Self::flush(gpu, &mut pending, &mut steps)?;
                    let wait = matches!(op, hal::Op::Wait { .. });
                    match event.as_any().downcast_ref::<CudaEvent>() {
                        Some(e) if gpu.mem_ops => {
                            let address = e.device_address;
                            steps.push(if wait { Step::WaitValue { address, value: *value } } else { Step::WriteValue { address, value: *value } });
                        }
                        _ => steps.push(Step::Host { event: event.clone(), value: *value, wait }),
                    }
                }
            }
        }
        Self::flush(gpu, &mut pending, &mut steps)?;
        Ok(CudaSchedule { gpu: gpu.clone(), steps, _ops: ops })
    }

    /// Turns the launches recorded since the last signal/wait into a step:
    /// one direct launch, or a CUDA graph of all of them.
    fn flush(gpu: &Arc<Gpu>, pending: &mut Vec<Launch>, steps: &mut Vec<Step>) -> Result<()> {
        match pending.len() {
            0 => Ok(()),
            1 => {
                steps.push(Step::Launch(pending.remove(0)));
                Ok(())
            }
            _ => {
                let launches = std::mem::take(pending);
                let (graph, exec) = gpu.with_capture_stream(|s| {
                    let d = gpu.d;
                    // SAFETY: live stream of the current context.
                    r::check(d, unsafe { (d.cuStreamBeginCapture_v2)(s, sys::STREAM_CAPTURE_MODE_THREAD_LOCAL) }, || {
                        "cuStreamBeginCapture".into()
                    })?;
                    let mut failed = None;
                    for l in &launches {
                        if let Err(e) = launch(gpu, l, s) {
                            failed = Some(e);
                            break;
                        }
                    }
                    let mut graph = std::ptr::null_mut();
                    // SAFETY: ends the capture begun above.
                    let code = unsafe { (d.cuStreamEndCapture)(s, &mut graph) };
                    if let Some(e) = failed {
                        if !graph.is_null() {
                            // SAFETY: the captured graph is ours to destroy.
                            unsafe { (d.cuGraphDestroy)(graph) };
                        }
                        return Err(e);
                    }
                    r::check(d, code, || "cuStreamEndCapture".into())?;
                    let mut exec = std::ptr::null_mut();
                    // SAFETY: graph is a valid captured graph.
                    let code = unsafe { (d.cuGraphInstantiateWithFlags)(&mut exec, graph, 0) };
                    if code != sys::CUDA_SUCCESS {
                        // SAFETY: as above.
                        unsafe { (d.cuGraphDestroy)(graph) };
                        return r::check(d, code, || format!("cuGraphInstantiate of {} kernels", launches.len())).map(|_| unreachable!());
                    }
                    Ok((graph, exec))
                })?;
                steps.push(Step::Graph { exec: Handle(exec), graph: Handle(graph) });
                Ok(())
            }
        }
    }

    fn execute(&self, stream: CUstream) -> Result<()> {
        let g = &*self.gpu;
        let d = g.d;
        for step in &self.steps {
            match step {
                Step::Launch(l) => launch(g, l, stream)?,
                // SAFETY: instantiated graph, live stream.
                Step::Graph { exec, .. } => r::check(d, unsafe { (d.cuGraphLaunch)(exec.0, stream) }, || "cuGraphLaunch".into())?,
                Step::WriteValue { address, value } => {
                    let f = d.cuStreamWriteValue64.ok_or_else(|| Error::new(Status::NotSupported, "cuStreamWriteValue64 missing"))?;
                    // SAFETY: the address is the mapped value of an event the schedule keeps alive.
                    r::check(d, unsafe { f(stream, *address, *value, sys::STREAM_WRITE_VALUE_DEFAULT) }, || {
                        format!("cuStreamWriteValue64 (signal {value})")
                    })?
                }
                Step::WaitValue { address, value } => {
                    let f = d.cuStreamWaitValue64.ok_or_else(|| Error::new(Status::NotSupported, "cuStreamWaitValue64 missing"))?;
                    // SAFETY: as above.
                    r::check(d, unsafe { f(stream, *address, *value, sys::STREAM_WAIT_VALUE_GEQ) }, || {
                        format!("cuStreamWaitValue64 (wait for {value})")
                    })?
                }
                Step::Host { event, value, wait } => {
                    let user = Box::into_raw(Box::new((event.clone(), *value, *wait))) as *mut c_void;
                    // SAFETY: host_step takes back exactly this box.
                    let code = unsafe { (d.cuLaunchHostFunc)(stream, host_step, user) };
                    if code != sys::CUDA_SUCCESS {
                        // SAFETY: the callback was not queued; reclaim the box.
                        drop(unsafe { Box::from_raw(user as *mut (Arc<dyn hal::Event>, u64, bool)) });
                        r::check(d, code, || "cuLaunchHostFunc".into())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A blocking run in flight: completion is the stream draining.
struct CudaPending {
    gpu: Arc<Gpu>,
    stream: Handle,
}

impl hal::Pending for CudaPending {
    fn wait(&self, timeout: std::time::Duration) -> Result<bool> {
        let d = self.gpu.d;
        let s = self.stream.0;
        // SAFETY: the stream outlives the run (the caller holds it).
        r::poll_until(d, "cuStreamQuery (waiting for a run)", Some(timeout), || unsafe { (d.cuStreamQuery)(s) })
    }
}

impl CudaSchedule {
    /// The stream a run goes to, with this GPU's context made current.
    fn stream_for(&self, stream: Option<&dyn hal::Stream>) -> Result<CUstream> {
        let g = &*self.gpu;
        g.bind()?;
        Ok(match stream {
            None => g.default_stream()?,
            Some(s) => {
                let cs = s
                    .as_any()
                    .downcast_ref::<CudaStream>()
                    .ok_or_else(|| Error::new(Status::InvalidStream, "stream does not belong to the CUDA runtime"))?;
                if !Arc::ptr_eq(&cs.gpu, &self.gpu) {
                    return Err(Error::new(
                        Status::InvalidStream,
                        format!("stream is on {}, the schedule on {}", cs.gpu.label(), self.gpu.label()),
                    ));
                }
                cs.raw()
            }
        })
    }
}

impl hal::Schedule for CudaSchedule {
    fn run(&self, stream: Option<&dyn hal::Stream>, blocking: bool) -> Result<()> {
        let s = self.stream_for(stream)?;
        self.execute(s)?;
        if blocking {
            r::stream_wait(self.gpu.d, s)?;
        }
        Ok(())
    }

    fn launch(&self, stream: Option<&dyn hal::Stream>) -> Result<Box<dyn hal::Pending>> {
        let s = self.stream_for(stream)?;
        self.execute(s)?;
        Ok(Box::new(CudaPending { gpu: self.gpu.clone(), stream: Handle(s) }))
    }
}
