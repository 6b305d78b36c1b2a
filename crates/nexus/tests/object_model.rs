//! The object model's rules, checked from Rust on the CPU runtime: command
//! validation, argument checks, releases and properties.

use nexus::{DataType, EventType, LibrarySource, Scalar, Status};

fn cpu() -> nexus::Device {
    nexus::get_runtime("cpu").unwrap().device(0).unwrap()
}

fn add_vectors(dev: &nexus::Device) -> nexus::Kernel {
    dev.load_library(LibrarySource::Builtin)
        .unwrap()
        .kernel("add_vectors")
        .unwrap()
}

fn path(text: &str) -> Vec<nexus::PathItem> {
    nexus::property::parse_path(text).unwrap()
}

#[test]
fn command_arguments_and_launch_shape_are_validated() {
    let dev = cpu();
    let buf = dev.create_buffer(1024, DataType::F32).unwrap();
    let sched = dev.create_schedule();
    let cmd = sched.create_command(&add_vectors(&dev)).unwrap();

    let e = cmd.set_buffer(64, &buf).unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);
    assert!(e.message.contains("argument index 64"), "{}", e.message);
    let e = cmd.set_buffer(-1, &buf).unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);

    let e = cmd.finalize(&[0], &[16], 0).unwrap_err();
    assert_eq!(e.status, Status::InvalidSize);
    let e = sched.run(None, true).unwrap_err();
    assert!(e.message.contains("never finalized"), "{}", e.message);

    cmd.finalize(&[16], &[256], 0).unwrap();
    let e = cmd.finalize(&[16], &[256], 0).unwrap_err();
    assert_eq!(e.status, Status::InvalidCommand);
    assert!(e.message.contains("already finalized"), "{}", e.message);

    // Two of add_vectors's three arguments: refused before anything runs.
    cmd.set_buffer(0, &buf).unwrap();
    cmd.set_buffer(2, &buf).unwrap();
    let e = sched.run(None, true).unwrap_err();
    assert!(e.message.contains("argument 1 is not set"), "{}", e.message);
    cmd.set_buffer(1, &buf).unwrap();
    sched.run(None, true).unwrap();
}

#[test]
fn commands_that_set_too_few_arguments_or_scalars_for_buffers_are_refused() {
    let dev = cpu();
    let buf = dev.create_buffer(64, DataType::F32).unwrap();
    let sched = dev.create_schedule();
    let cmd = sched.create_command(&add_vectors(&dev)).unwrap();
    cmd.set_buffer(0, &buf).unwrap();
    cmd.set_buffer(1, &buf).unwrap();
    cmd.finalize(&[16], &[16], 0).unwrap();
    let e = sched.run(None, true).unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);
    assert!(
        e.message.contains("takes 3 arguments, the command sets 2"),
        "{}",
        e.message
    );
    cmd.set_scalar(2, Scalar::F32(1.0)).unwrap();
    let e = sched.run(None, true).unwrap_err();
    assert!(e.message.contains("must be a buffer"), "{}", e.message);
}

#[test]
fn a_released_dependency_is_named_on_the_next_run() {
    let dev = cpu();
    let a = dev.create_buffer(64, DataType::F32).unwrap();
    let b = dev.create_buffer(64, DataType::F32).unwrap();
    let sched = dev.create_schedule();
    let cmd = sched.create_command(&add_vectors(&dev)).unwrap();
    for (i, x) in [&a, &a, &b].into_iter().enumerate() {
        cmd.set_buffer(i as i64, x).unwrap();
    }
    cmd.finalize(&[16], &[16], 0).unwrap();
    sched.run(None, true).unwrap();
    b.release();
    let e = sched.run(None, true).unwrap_err();
    assert_eq!(e.status, Status::Released);
    assert!(e.message.contains("argument 2"), "{}", e.message);
    // Releasing something the schedule does not use changes nothing.
    let other = dev.create_buffer(64, DataType::F32).unwrap();
    other.release();
    sched.release();
    let e = sched.run(None, true).unwrap_err();
    assert_eq!(e.status, Status::Released);
}

#[test]
fn properties_answer_paths_and_name_what_is_missing() {
    let dev = cpu();
    let buf = dev.create_buffer(256, DataType::F32).unwrap();
    let p = buf.properties();
    assert_eq!(p.get_int(&path("Size")).unwrap(), 256);
    assert_eq!(p.get_int(&path("Count")).unwrap(), 64);
    assert_eq!(p.get_str(&path("DataType")).unwrap(), "float32");
    let e = p.get_int(&path("NoSuchProperty")).unwrap_err();
    assert!(e.message.contains("NoSuchProperty"), "{}", e.message);

    let info = dev.info();
    let size = info
        .get_int(&path("MemorySubsystem.MemoryTypes[0].Size"))
        .or_else(|_| info.get_int(&path("MemorySize")));
    assert!(size.unwrap() > 0);

    let ev = dev.create_event(EventType::Signal).unwrap();
    assert_eq!(
        ev.properties().get_str(&path("EventType")).unwrap(),
        "Signal"
    );
}
