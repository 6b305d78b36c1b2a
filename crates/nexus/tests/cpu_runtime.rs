//! The core used from Rust alone: the CPU runtime end to end.

use std::time::Duration;

use nexus::hal::LibrarySource;
use nexus::{DataType, EventType, Status};

fn cpu() -> nexus::Device {
    nexus::get_runtime("cpu").unwrap().device(0).unwrap()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

#[test]
fn runtimes_list_the_cpu_after_every_gpu_runtime() {
    // Only runtimes of CPU or software devices (PoCL, lavapipe) follow it.
    let runtimes = nexus::get_runtimes();
    let at = runtimes.iter().position(|r| r.name() == "cpu").unwrap();
    assert!(runtimes[at + 1..]
        .iter()
        .all(|r| r.devices().iter().all(|d| !d.is_gpu())));
    assert!(nexus::get_runtime("hip").unwrap().devices().is_empty());
    assert_eq!(
        nexus::get_runtime("nope").err().unwrap().status,
        Status::InvalidRuntime
    );
}

#[test]
fn builtin_add_vectors_on_many_groups() {
    let dev = cpu();
    let n = 100_003usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let ab = dev.create_buffer_from(&bytes(&a), DataType::F32).unwrap();
    let bb = dev.create_buffer_from(&bytes(&b), DataType::F32).unwrap();
    let cb = dev.create_buffer((n * 4) as i64, DataType::F32).unwrap();
    let kernel = dev
        .load_library(LibrarySource::Builtin)
        .unwrap()
        .kernel("add_vectors")
        .unwrap();
    let sched = dev.create_schedule();
    let cmd = sched.create_command(&kernel).unwrap();
    for (i, buf) in [&ab, &bb, &cb].into_iter().enumerate() {
        cmd.set_buffer(i as i64, buf).unwrap();
    }
    cmd.finalize(&[128], &[n as i64], 0).unwrap();
    let done = dev.create_event(EventType::Signal).unwrap();
    sched.create_signal_command(&done, 1).unwrap();
    sched.run(None, false).unwrap();
    done.wait(1, Some(Duration::from_secs(30))).unwrap();
    let mut out = vec![0u8; n * 4];
    cb.read(&mut out).unwrap();
    let got = floats(&out);
    assert!(got.iter().enumerate().all(|(i, &x)| x == a[i] + b[i]));
}

#[test]
fn waits_time_out_and_released_buffers_refuse_use() {
    let dev = cpu();
    let ev = dev.create_event(EventType::Shared).unwrap();
    let e = ev.wait(1, Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    let buf = dev.create_buffer(16, DataType::U8).unwrap();
    buf.release();
    let e = buf.write(&[1, 2, 3]).unwrap_err();
    assert_eq!(e.status, Status::Released);
    assert!(e.message.contains("was released"));
}

/// A float32 buffer of `n` copies of `value`.
fn filled(dev: &nexus::Device, value: f32, n: usize) -> nexus::Buffer {
    dev.create_buffer_from(&bytes(&vec![value; n]), DataType::F32)
        .unwrap()
}

/// Signals `event` to 1 from another thread after 50 ms.
fn signal_later(event: &nexus::Event) -> std::thread::JoinHandle<()> {
    let event = event.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        event.signal(1).unwrap();
    })
}

/// A schedule `c = a + b` over `n` floats, optionally behind a wait.
fn add_schedule(
    dev: &nexus::Device,
    a: &nexus::Buffer,
    b: &nexus::Buffer,
    c: &nexus::Buffer,
    n: usize,
    wait: Option<(&nexus::Event, u64)>,
) -> nexus::Schedule {
    let kernel = dev
        .load_library(LibrarySource::Builtin)
        .unwrap()
        .kernel("add_vectors")
        .unwrap();
    let sched = dev.create_schedule();
    if let Some((ev, v)) = wait {
        sched.create_wait_command(ev, v).unwrap();
    }
    let cmd = sched.create_command(&kernel).unwrap();
    for (i, buf) in [a, b, c].into_iter().enumerate() {
        cmd.set_buffer(i as i64, buf).unwrap();
    }
    cmd.finalize(&[256], &[n as i64], 0).unwrap();
    sched
}

#[test]
fn a_read_waits_for_a_held_run_that_writes_the_buffer() {
    let dev = cpu();
    let n = 4096;
    let a = filled(&dev, 1.0, n);
    let c = filled(&dev, 0.0, n);
    let go = dev.create_event(EventType::Shared).unwrap();
    let sched = add_schedule(&dev, &a, &a, &c, n, Some((&go, 1)));
    sched.run(None, false).unwrap();
    let signaller = signal_later(&go);
    // The read is ordered after the held run: it sees 2.0, never 0.0.
    let mut out = vec![0u8; n * 4];
    c.read(&mut out).unwrap();
    assert!(floats(&out).iter().all(|&x| x == 2.0));
    signaller.join().unwrap();
}

#[test]
fn a_blocking_run_never_overtakes_queued_runs() {
    let dev = cpu();
    let n = 1 << 16;
    let one = filled(&dev, 1.0, n);
    let c = filled(&dev, 0.0, n);
    let d = filled(&dev, 0.0, n);
    let go = dev.create_event(EventType::Shared).unwrap();
    // Queued first, held until `go`: c = 1 + 1.
    let first = add_schedule(&dev, &one, &one, &c, n, Some((&go, 1)));
    // Then a blocking run reading c: d = c + c must see the first run's 2.0.
    let second = add_schedule(&dev, &c, &c, &d, n, None);
    first.run(None, false).unwrap();
    let signaller = signal_later(&go);
    second.run(None, true).unwrap();
    let mut out = vec![0u8; n * 4];
    d.read(&mut out).unwrap();
    assert!(floats(&out).iter().all(|&x| x == 4.0));
    signaller.join().unwrap();
}

#[test]
fn released_buffers_stay_alive_for_queued_runs() {
    let dev = cpu();
    let n = 1 << 16;
    let a = filled(&dev, 3.0, n);
    let c = filled(&dev, 0.0, n);
    let go = dev.create_event(EventType::Shared).unwrap();
    let sched = add_schedule(&dev, &a, &a, &c, n, Some((&go, 1)));
    sched.run(None, false).unwrap();
    // Everything but `c` is released or dropped while the run is held.
    a.release();
    sched.release();
    drop(sched);
    go.signal(1).unwrap();
    let mut out = vec![0u8; n * 4];
    c.read(&mut out).unwrap();
    assert!(floats(&out).iter().all(|&x| x == 6.0));
}

#[test]
fn builtin_bounds_and_group_counts_are_checked() {
    let dev = cpu();
    let small = dev.create_buffer(64, DataType::F32).unwrap();
    let sched = add_schedule(&dev, &small, &small, &small, 1000, None);
    let e = sched.run(None, true).unwrap_err();
    assert_eq!(e.status, Status::InvalidSize);
    assert!(e.message.contains("add_vectors"), "{}", e.message);
    let max = u32::MAX as i64;
    let e = nexus::LaunchDims::new(&[1, 1, 1], &[max, max, max]).unwrap_err();
    assert_eq!(e.status, Status::InvalidSize);
}
