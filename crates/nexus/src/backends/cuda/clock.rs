//! Device-clock timestamps of profiled schedules.
//!
//! A one-thread kernel stores `%globaltimer`, the GPU's nanosecond clock,
//! into words of device memory: a start and an end word per operation.
//! Inside a CUDA graph the stamps are kernel nodes in the chain (the end of
//! one operation and the start of the next share one), so a profiled run is
//! still one graph launch; steps outside graphs are stamped by launching
//! the kernel on the stream around them. On sm_90 the chain's edges between
//! stamps and kernels are programmatic: a stamp after a kernel is launched
//! while that kernel runs and waits for its end on the GPU, and the kernel
//! after a stamp launches as soon as the stamp has begun (or, if it waits
//! for a kernel, has written the time), so the stamps' launch latency hides
//! behind the kernels (bench/RESULTS.md).
//!
//! Why device memory: a kernel that stores to mapped host memory completes
//! later, by about 1 us per profiled run on some hosts (two-H100 host,
//! seventh session: +2.1 us over a plain run with the words in host memory,
//! +1.1 us in device memory); the words are copied to the host only when
//! timings are asked for. Why not CUDA events with timing: on an H200 an
//! event-record node cost about 2.4 us of device time per timestamp, and
//! `cuEventRecord` around a launch about 0.9 us of host time per pair plus
//! ~1 us on the device; a stamp node costs what a small kernel in a graph
//! does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::ffi::result as r;
use super::ffi::safe::{DeviceMemory, Function, Graph, KernelLaunch, LaunchWhen, Module, Stream};
use super::ffi::sys::{CUgraphNode, CUstream};
use super::Gpu;
use crate::backends::common::args::ArgPack;
use crate::backends::common::{self, release};
use crate::error::Result;

/// `nexus_stamp(a, b)`: stores the global timer at `a`, and at `b` unless
/// it is 0. The programmatic variant (sm_90) first waits for the kernel
/// before it in the graph to complete (`griddepcontrol.wait`), and after
/// its stores lets the kernel after it launch: linked by programmatic
/// edges, the stamps' launches overlap the stamped kernel instead of
/// following it (`Stamps::add_to`).
fn stamp_ptx(programmatic: bool) -> String {
    let (header, wait, release) = if programmatic {
        (
            ".version 7.8\n.target sm_90",
            "griddepcontrol.wait;",
            "griddepcontrol.launch_dependents;",
        )
    } else {
        (".version 6.0\n.target sm_50", "", "")
    };
    format!(
        "{header}
.address_size 64
.visible .entry nexus_stamp(.param .u64 a, .param .u64 b)
{{
    .reg .pred %p<2>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [a];
    ld.param.u64 %rd2, [b];
    {wait}
    mov.u64 %rd3, %globaltimer;
    cvta.to.global.u64 %rd4, %rd1;
    st.global.u64 [%rd4], %rd3;
    setp.eq.u64 %p1, %rd2, 0;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd2;
    st.global.u64 [%rd4], %rd3;
DONE:
    {release}
    ret;
}}
\0"
    )
}

/// The stamp kernel of one GPU's context, loaded on first use.
pub(crate) struct StampKernel {
    function: Function,
    /// Built with `griddepcontrol`, for programmatic edges; cleared for
    /// good if the driver refuses a graph with them.
    programmatic: AtomicBool,
    _module: Module,
}

impl StampKernel {
    pub(crate) fn load(gpu: &Gpu) -> Result<StampKernel> {
        let ctx = gpu.context()?;
        let load = |programmatic: bool| -> Result<StampKernel> {
            let module = Module::load(&ctx, stamp_ptx(programmatic).as_bytes())?;
            Ok(StampKernel {
                function: module.function("nexus_stamp")?,
                programmatic: AtomicBool::new(programmatic),
                _module: module,
            })
        };
        if gpu.compute_major >= 9 && r::programmatic_edges_supported(gpu.d) {
            match load(true) {
                Ok(k) => return Ok(k),
                Err(e) => log::debug!(
                    "{}: programmatic stamp kernel not loaded, stamps follow kernels: {}",
                    gpu.label(),
                    e.message
                ),
            }
        }
        load(false)
    }

    /// From now on, stamps are tied to kernels by full edges (the
    /// programmatic kernel still stamps correctly without them).
    pub(crate) fn stop_programmatic(&self) {
        self.programmatic.store(false, Ordering::Relaxed);
    }
}

/// The timestamp words of one profiled schedule: `2 * op` is operation
/// `op`'s start, `2 * op + 1` its end (0 until first written).
pub(crate) struct Stamps {
    gpu: Arc<Gpu>,
    count: usize,
    /// The words; `None` for a schedule with no operations. Freed by
    /// `drop` on the release thread (an inline `cuMemFree` may wait for
    /// the device).
    words: Option<DeviceMemory>,
    /// The stream the words are zeroed and read on, ordered after nothing
    /// else.
    reader: Option<Stream>,
}

impl Stamps {
    pub(crate) fn new(gpu: &Arc<Gpu>, ops: usize) -> Result<Stamps> {
        gpu.stamp_kernel()?;
        let ctx = gpu.context()?;
        let mut stamps = Stamps {
            gpu: gpu.clone(),
            count: 2 * ops,
            words: None,
            reader: None,
        };
        if ops == 0 {
            return Ok(stamps);
        }
        // From here on a failure drops `stamps`, which frees what it holds
        // on the release thread.
        let words = stamps
            .words
            .insert(DeviceMemory::allocate(&ctx, 8 * stamps.count)?)
            .raw();
        let reader = stamps.reader.insert(Stream::create(&ctx)?);
        // Zeroed by a copy (a copy engine), not a memset (a kernel, which
        // could queue behind kernels filling the GPU).
        let zeros = vec![0u8; 8 * stamps.count];
        let _bound = ctx.bind()?;
        // SAFETY: `zeros` outlives the copy: the stream is synchronised
        // below, and `zeros` is leaked if that fails.
        unsafe { r::memcpy_htod_async(gpu.d, words, zeros.as_ptr(), zeros.len(), reader.raw())? };
        if let Err(e) = reader.synchronize() {
            std::mem::forget(zeros);
            return Err(e);
        }
        Ok(stamps)
    }

    /// The device address of word `i`, 0 past the end.
    fn word(&self, i: usize) -> u64 {
        match &self.words {
            Some(words) if i < self.count => words.raw() + 8 * i as u64,
            _ => 0,
        }
    }

    /// The device address of operation `op`'s start word.
    pub(crate) fn start(&self, op: usize) -> u64 {
        self.word(2 * op)
    }

    /// The device address of operation `op`'s end word.
    pub(crate) fn end(&self, op: usize) -> u64 {
        self.word(2 * op + 1)
    }

    /// Queues a stamp of `a` (and `b`, unless 0) on `stream`.
    pub(crate) fn stamp(&self, stream: CUstream, a: u64, b: u64) -> Result<()> {
        let args = pack(a, b);
        self.launch(&args)?.launch(self.gpu.d, stream)
    }

    /// Adds a stamp of `a` (and `b`, unless 0) to `graph` after
    /// `previous`. With `programmatic_after` (`previous` is a kernel node
    /// and the stamp kernel is `programmatic`) the edge is programmatic:
    /// the stamp launches once every block of that kernel began and waits
    /// on the GPU for its end.
    pub(crate) fn add_to(
        &self,
        graph: &Graph,
        previous: Option<CUgraphNode>,
        programmatic_after: bool,
        a: u64,
        b: u64,
    ) -> Result<CUgraphNode> {
        let args = pack(a, b);
        let launch = self.launch(&args)?;
        match previous {
            Some(p) if programmatic_after => {
                let stamp = graph.add_kernel_after(&[], &launch)?;
                graph.add_programmatic_edge(p, stamp, LaunchWhen::AllBlocksBegan)?;
                Ok(stamp)
            }
            _ => graph.add_kernel_after(previous.as_slice(), &launch),
        }
    }

    /// Whether stamps may be tied to kernels by programmatic edges
    /// (`add_to`, `link_kernel`): the stamp kernel is the programmatic one
    /// and no graph with such edges was refused.
    pub(crate) fn programmatic(&self) -> Result<bool> {
        Ok(self
            .gpu
            .stamp_kernel()?
            .programmatic
            .load(Ordering::Relaxed))
    }

    /// Orders kernel node `kernel` (added without dependencies) after
    /// `stamp`. A stamp that waits for a kernel before it (`stamp_waits`)
    /// lets `kernel` launch once it has written the time; one that waits
    /// for nothing on the GPU (a graph's first node, or after a copy or
    /// fill, by a full edge) once it has begun, as it reads the clock first.
    pub(crate) fn link_kernel(
        &self,
        graph: &Graph,
        stamp: CUgraphNode,
        stamp_waits: bool,
        kernel: CUgraphNode,
    ) -> Result<()> {
        let when = match stamp_waits {
            true => LaunchWhen::Triggered,
            false => LaunchWhen::AllBlocksBegan,
        };
        graph.add_programmatic_edge(stamp, kernel, when)
    }

    /// One thread of the stamp kernel with `args` (from `pack`).
    fn launch<'a>(&self, args: &'a ArgPack) -> Result<KernelLaunch<'a>> {
        Ok(KernelLaunch {
            function: self.gpu.stamp_kernel()?.function,
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared: 0,
            args,
        })
    }

    /// Each operation's (start, end) in milliseconds from the first
    /// operation's start, as of the last run (see `timings_from_ns`);
    /// `None` also where the words cannot be read (the context broke).
    pub(crate) fn timings(&self) -> Option<Vec<(f64, f64)>> {
        match self.read() {
            Ok(ns) => timings_from_ns(&ns),
            Err(e) => {
                log::debug!("{}: timestamps not read: {}", self.gpu.label(), e.message);
                None
            }
        }
    }

    /// The words as they are now in device memory (a run still in flight
    /// may be writing them; `timings_from_ns` tells).
    fn read(&self) -> Result<Vec<u64>> {
        let (Some(words), Some(reader)) = (&self.words, &self.reader) else {
            return Ok(Vec::new());
        };
        let mut ns = vec![0u64; self.count];
        let _bound = self.gpu.bind()?;
        // SAFETY: `ns` holds `count` words and outlives the copy: the stream
        // is synchronised below, and `ns` is leaked if that fails (if
        // queueing the copy fails, nothing was queued).
        unsafe {
            r::memcpy_dtoh_async(
                self.gpu.d,
                ns.as_mut_ptr().cast(),
                words.raw(),
                8 * self.count,
                reader.raw(),
            )?;
        }
        if let Err(e) = reader.synchronize() {
            std::mem::forget(ns);
            return Err(e);
        }
        Ok(ns)
    }
}

/// (start, end) pairs in milliseconds from the first start, from stamps in
/// nanoseconds; `None` before every word was written once, or while the
/// words mix two runs (another run of the schedule is writing them: one
/// run's stamps never decrease, in stream order, and a later run's on one
/// stream all come after).
fn timings_from_ns(ns: &[u64]) -> Option<Vec<(f64, f64)>> {
    if ns.contains(&0) {
        return None;
    }
    let origin = *ns.first()?;
    let ms = |t: u64| (t as f64 - origin as f64) / 1e6;
    common::one_run(ns.chunks_exact(2).map(|p| (ms(p[0]), ms(p[1]))).collect())
}

fn pack(a: u64, b: u64) -> ArgPack {
    ArgPack::new(&[a.to_ne_bytes().to_vec(), b.to_ne_bytes().to_vec()])
}

impl Drop for Stamps {
    fn drop(&mut self) {
        // The schedule's runs are known complete (they kept it alive), but
        // a failed device counts every run as complete: the release thread
        // waits for the GPU before the words are freed.
        let (words, reader) = (self.words.take(), self.reader.take());
        if words.is_none() && reader.is_none() {
            return;
        }
        let gpu = self.gpu.clone();
        release::defer(Box::new(move || {
            if let Ok(_ctx) = gpu.bind() {
                let _ = r::ctx_synchronize(gpu.d);
            }
            drop((words, reader));
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::{stamp_ptx, timings_from_ns};

    #[test]
    fn only_the_programmatic_stamp_uses_griddepcontrol() {
        let plain = stamp_ptx(false);
        assert!(plain.starts_with(".version 6.0\n.target sm_50\n"));
        assert!(!plain.contains("griddepcontrol"));
        let programmatic = stamp_ptx(true);
        assert!(programmatic.starts_with(".version 7.8\n.target sm_90\n"));
        // The wait comes before the clock is read, the release after the
        // stores; both kernels end in the NUL the driver's loader needs.
        let at = |s: &str| programmatic.find(s).unwrap_or(usize::MAX);
        assert!(at("griddepcontrol.wait;") < at("%globaltimer"));
        assert!(at("DONE:") < at("griddepcontrol.launch_dependents;"));
        assert!(at("griddepcontrol.launch_dependents;") < at("ret;"));
        assert!(plain.ends_with("}\n\0") && programmatic.ends_with("}\n\0"));
    }

    #[test]
    fn one_runs_stamps_give_times_from_the_first_start() {
        let t = timings_from_ns(&[1_000_000, 3_000_000, 3_000_000, 7_500_000]);
        assert_eq!(t, Some(vec![(0.0, 2.0), (2.0, 6.5)]));
    }

    #[test]
    fn unwritten_or_mixed_runs_give_none() {
        assert_eq!(timings_from_ns(&[5, 0]), None);
        // The first operation restamped by a later run, the second not yet.
        assert_eq!(timings_from_ns(&[900, 950, 100, 200]), None);
        assert_eq!(timings_from_ns(&[]), None);
    }
}
