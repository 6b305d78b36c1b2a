"""Properties by name, by enum and by path, on every object."""

from __future__ import annotations

import json

import nexus
import numpy as np
import pytest


def test_device_properties_by_name_enum_and_path(device: nexus.Device) -> None:
    assert device.get_property_str("Type") in ("cpu", "gpu")
    assert device.get_property_str(nexus.property.Name) == device.get_property_str("Name")
    assert device.get_property_int("ComputeUnits") >= 1
    assert device.get_property_int(["MemorySubsystem", "MemoryTypes", 1, "Size"]) > 0
    assert device.get_property_str(["MemorySubsystem", nexus.property.MemoryTypes, 0, nexus.property.Type]) == "L1"
    assert "Name" in device.get_property_keys()
    assert device.get_property_flt("ComputeUnits") == float(device.get_property_int("ComputeUnits"))


def test_cpu_device_reads_the_os(cpu_device: nexus.Device) -> None:
    info = cpu_device.get_info()
    assert info.get_str("Type") == "cpu"
    assert info.get_str("Architecture") in ("x86_64", "aarch64", "arm", "riscv64", "powerpc64", "s390x")
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    if models:
        assert info.get_str("Name") == models[0]
    import os

    assert info.get_int("ComputeUnits") == os.cpu_count()
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    assert info.get_int("MemorySize") == kb * 1024


def test_properties_object(cpu_device: nexus.Device) -> None:
    info = cpu_device.get_info()
    assert len(info) == len(info.get_property_keys()) > 5
    assert "Name" in info
    assert ["MemorySubsystem", "MemoryTypes", 0] in info
    assert "NoSuchKey" not in info
    assert list(info) == info.get_property_keys()
    d = info.to_dict()
    assert d["Name"] == info.get_str("Name")
    assert json.loads(info.to_json())["Type"] == "cpu"
    assert info["MemorySubsystem"]["MemoryTypes"][0]["Type"] == "L1"
    assert info.get_property_keys(["MemorySubsystem"]) == ["SupportedMemoryTypes", "MemoryTypes"] or "MemoryTypes" in info.get_property_keys(["MemorySubsystem"])
    assert info.get_str_vec(["MemorySubsystem", "SupportedMemoryTypes"])[0] == "L1"
    assert "Properties" in repr(info)


def test_missing_property_raises_naming_path_and_keys(cpu_device: nexus.Device) -> None:
    info = cpu_device.get_info()
    with pytest.raises(nexus.Error, match=r"NoSuch") as e:
        info.get_int(["MemorySubsystem", "NoSuch"])
    assert "MemoryTypes" in str(e.value)
    assert isinstance(e.value, RuntimeError)
    assert e.value.status == nexus.status.NXS_InvalidProperty
    with pytest.raises(nexus.Error, match="items"):
        info.get_int(["MemorySubsystem", "MemoryTypes", 99, "Size"])
    with pytest.raises(nexus.Error, match="not an integer"):
        info.get_int("Name")
    with pytest.raises(nexus.Error, match="unknown property enum value"):
        info.get_str(10_000)
    with pytest.raises(TypeError, match="property key"):
        info.get_str(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        info.get_str(["MemorySubsystem", "MemoryTypes", -1])


@pytest.mark.parametrize("getter", ["get_property_str", "get_property_int", "get_property_flt", "get_property_str_vec", "get_property_int_vec", "get_property_flt_vec"])
def test_every_object_has_the_getters(device: nexus.Device, getter: str) -> None:
    buf = device.create_buffer(np.zeros(4, np.float32))
    lib = device.get_builtin_library()
    kernel = lib.get_kernel("add_vectors")
    sched = device.create_schedule()
    cmd = sched.create_command(kernel)
    event = device.create_event()
    stream = device.create_stream()
    runtime = nexus.get_runtime(device.get_property_str("Runtime"))
    for obj in (runtime, device, buf, lib, kernel, sched, cmd, event, stream, device.get_info()):
        assert callable(getattr(obj, getter))
        assert obj.get_property_keys()
        with pytest.raises(nexus.Error):
            getattr(obj, getter)("NoSuchProperty")


def test_object_properties(device: nexus.Device) -> None:
    buf = device.create_buffer(np.zeros(10, np.int64))
    assert buf.get_property_int("Size") == 80
    assert buf.get_property_str("DataType") == "int64"
    assert buf.get_property_int(nexus.property.Count) == 10
    lib = device.get_builtin_library()
    assert lib.get_property_str("Type")
    kernel = lib.get_kernel("add_vectors")
    assert kernel.get_property_str("Name") == "add_vectors"
    sched = device.create_schedule()
    assert sched.get_property_str("Status") == "recording"
    cmd = sched.create_command(kernel)
    for i in range(3):
        cmd.set_buffer(i, buf)
    assert cmd.get_property_int_vec("Arguments") == [nexus.data_type.I64] * 3
    assert cmd.get_property_str("Status") == "recording"
    cmd.finalize(2, 10)
    assert cmd.get_property_int_vec("GroupSize") == [2, 1, 1]
    sched.run()
    assert sched.get_property_str("Status") == "encoded"
    ev = device.create_event(nexus.event_type.Fence)
    assert ev.get_property_str("EventType") == "Fence"
    assert nexus.get_runtime("cpu").get_property_int("Count") == 1


def test_enums_match_the_core() -> None:
    from nexus import _nexus

    tables = _nexus._enum_tables()
    for module, enum in [(nexus.status, nexus.status.Status), (nexus.property, nexus.property.Property), (nexus.data_type, nexus.data_type.DataType), (nexus.event_type, nexus.event_type.EventType)]:
        key = module.__name__.rsplit(".", 1)[1]
        assert [(m.name, m.value) for m in enum] == [tuple(x) for x in tables[key]], key
        for m in enum:
            assert getattr(module, m.name) is m
    assert nexus.status.NXS_Success == 0
