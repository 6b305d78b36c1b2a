"""The spec's snippets, run as written (only the library path differs)."""

from __future__ import annotations

import nexus
import numpy as np


def test_example_usage(device: nexus.Device, spec_library_path: str) -> None:
    # --- the spec's "Example Usage", with `device` the device under test ---
    data = np.ones(1024, dtype=np.float32)
    buf = device.create_buffer(data)

    lib = device.load_library(spec_library_path)
    kernel = lib.get_kernel("add_vectors")

    schedule = device.create_schedule()
    command = schedule.create_command(kernel)
    command.set_buffer(0, buf)
    command.finalize(32, 1024)

    schedule.run()
    # --- end of the snippet; check what it computed ---
    out = np.zeros(1024, dtype=np.float32)
    assert buf.copy(out) == nexus.status.NXS_Success
    np.testing.assert_array_equal(out, data + data)


def test_example_usage_first_device_is_best() -> None:
    runtimes = nexus.get_runtimes()
    runtime = runtimes[0]
    devices = runtime.get_devices()
    device = devices[0]
    # The CPU runtime comes after every runtime with a GPU; only runtimes of
    # CPU or software devices (PoCL, lavapipe) follow it (DESIGN.md, "Names").
    names = [r.get_name() for r in runtimes]
    assert "cpu" in names
    after = runtimes[names.index("cpu") + 1 :]
    assert all(d.get_property_str("Type") != "gpu" for r in after for d in r.get_devices())
    assert isinstance(device, nexus.Device)


def test_event_based_synchronization(device: nexus.Device, spec_library_path: str) -> None:
    kernel = device.load_library(spec_library_path).get_kernel("add_vectors")
    host = np.arange(1024, dtype=np.float32)
    input_buffer = device.create_buffer(host)

    # --- the spec's "Event-Based Synchronization" ---
    event = device.create_event()
    schedule = device.create_schedule()

    cmd = schedule.create_command(kernel)
    cmd.set_buffer(0, input_buffer)
    cmd.finalize(256, 1024)

    signal_cmd = schedule.create_signal_command(event, 1)

    schedule.run(blocking=False)

    event.wait(1)
    # --- end of the snippet ---
    out = np.empty_like(host)
    input_buffer.copy(out)
    np.testing.assert_array_equal(out, host * 2)
    assert signal_cmd.get_event().get_property_int("Value") >= 1


def test_basic_event_usage(device: nexus.Device) -> None:
    event = device.create_event(nexus.event_type.Shared)
    assert event.signal(1) == nexus.status.NXS_Success
    assert event.wait(1) == nexus.status.NXS_Success


def test_property_snippets(device: nexus.Device) -> None:
    info = device.get_info()
    assert info.get_str("Name")
    assert info.get_str("Vendor")
    assert info.get_str(nexus.property.Architecture) == info.get_str("Architecture")
    l2 = info.get_int(["MemorySubsystem", "MemoryTypes", 1, "Size"])
    assert l2 > 0
    mem_types = info.get_str_vec(["MemorySubsystem", "SupportedMemoryTypes"])
    assert mem_types[:2] == ["L1", "L2"]

    buffer = device.create_buffer(np.zeros(16, dtype=np.float32))
    assert buffer.get_property_int("Size") == 64
    assert buffer.get_property_str("DataType") == "float32"
