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
fn runtimes_list_the_cpu_last() {
    let runtimes = nexus::get_runtimes();
    assert_eq!(runtimes.last().unwrap().name(), "cpu");
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
