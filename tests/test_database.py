"""The device database through the API: lookups, paths, provenance, user entries."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import nexus
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHS = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120",
         "gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1201", "m1", "m2", "m3", "m4", "x86_64", "aarch64"]


def test_every_architecture_is_in_the_database() -> None:
    db = nexus.get_device_info()
    assert len(db) >= len(ARCHS)
    found = {p.get_str("Architecture") for p in db.values()}
    assert set(ARCHS) <= found
    for name, props in db.items():
        assert isinstance(props, nexus.Properties)
        assert props.get_str(["Sources", 0, "Url"]).startswith("http"), name


def test_lookup_by_stem_and_bare_architecture() -> None:
    h = nexus.lookup_device_info("sm_90")
    assert h is not None
    assert h.to_dict() == nexus.lookup_device_info("nvidia-gpu-sm_90").to_dict()
    assert h.get_str("Vendor") == "NVIDIA"
    assert h.get_int(["MemorySubsystem", "MemoryTypes", 1, "Size"]) == 50 * 1024 * 1024
    assert h.get_str(["MemorySubsystem", "MemoryTypes", 1, "Type"]) == "L2"
    assert h.get_int("MemorySubsystem.MemoryTypes[1].Size") == 50 * 1024 * 1024
    assert h.get_str(["MemorySubsystem", nexus.property.MemoryTypes, 1, nexus.property.Type]) == "L2"
    assert "bf16" in h.get_str_vec(["SpecializedHardware", "MatrixUnits", "DataTypes"])
    assert h.get_flt(["SpecializedHardware", "MatrixUnits", "PeakTFLOPS", "bf16"]) > 900
    assert h.get_source("Name") == "database 'nvidia-gpu-sm_90'"
    assert nexus.lookup_device_info("gfx942").get_str("Vendor") == "AMD"
    assert nexus.lookup_device_info("no_such_arch") is None


def test_missing_path_names_path_and_existing_keys() -> None:
    h = nexus.lookup_device_info("sm_80")
    with pytest.raises(nexus.Error, match=r"Limits") as e:
        h.get_int(["Limits", "NoSuchLimit"])
    assert "MaxThreadsPerGroup" in str(e.value)
    with pytest.raises(ValueError, match="malformed property path"):
        h.get_int("Limits..MaxThreadsPerGroup")


def test_cpu_info_merges_live_caches_over_the_generic_entry(cpu_device: nexus.Device) -> None:
    info = cpu_device.get_info()
    arch = info.get_str("Architecture")
    entry = nexus.lookup_device_info(arch)
    if entry is None:
        pytest.skip(f"no generic entry for {arch}")
    assert info.get_str("DatabaseEntry") == f"generic-cpu-{arch}"
    # Live values win and say so; values only the database has say where they came from.
    assert info.get_str("Name") == cpu_device.get_property_str("Name")
    assert info.get_source("Name") == "live"
    assert info.get_source("Sources") == f"database 'generic-cpu-{arch}'"
    l1 = info.get_int(["MemorySubsystem", "MemoryTypes", 0, "Size"])
    assert l1 == cpu_device.get_property_int(["MemorySubsystem", "MemoryTypes", 0, "Size"])
    assert info.get_source(["MemorySubsystem", "MemoryTypes", 0, "Size"]) == "live"


def _run_with_device_path(tmp_path: pathlib.Path, code: str) -> subprocess.CompletedProcess:
    env = {"NEXUS_DEVICE_PATH": f"{tmp_path / 'missing'}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_user_entries_add_and_override(tmp_path: pathlib.Path) -> None:
    base = json.loads((ROOT / "device_lib" / "nvidia-gpu-sm_90.json").read_text())
    override = dict(base, Name="My Hopper")
    (tmp_path / "nvidia-gpu-sm_90.json").write_text(json.dumps(override))
    new = dict(base, Name="Future GPU", Vendor="Acme", Architecture="acme_1")
    (tmp_path / "acme-gpu-acme_1.json").write_text(json.dumps(new))
    (tmp_path / "broken.json").write_text("{ not json")
    bad = dict(base)
    bad["MemorySubsystem"] = {"MemoryTypes": "L2"}
    (tmp_path / "violates.json").write_text(json.dumps(bad))
    code = (
        "import logging, nexus\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s %(levelname)s %(message)s')\n"
        "print(nexus.lookup_device_info('sm_90').get_str('Name'))\n"
        "print(nexus.lookup_device_info('acme_1').get_str('Vendor'))\n"
        "print(nexus.lookup_device_info('acme-gpu-acme_1').get_source('Name'))\n"
        "print(nexus.lookup_device_info('gfx942').get_str('Vendor'))\n"
        "print(len(nexus.get_device_info()))\n"
    )
    proc = _run_with_device_path(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "My Hopper"
    assert lines[1] == "Acme"
    assert str(tmp_path / "acme-gpu-acme_1.json") in lines[2]
    assert lines[3] == "AMD"
    assert int(lines[4]) == len(nexus.get_device_info()) + 1
    warnings = [w for w in proc.stderr.splitlines() if w.startswith("nexus WARNING")]
    assert any("broken.json" in w and "not valid JSON" in w for w in warnings), proc.stderr
    assert any("violates.json" in w and "does not match the device schema" in w for w in warnings), proc.stderr
    assert any("missing" in w for w in warnings), proc.stderr
    # One warning per bad file, and import itself logged nothing.
    assert sum("broken.json" in w for w in warnings) == 1


def test_database_is_not_read_at_import(tmp_path: pathlib.Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    proc = _run_with_device_path(tmp_path, "import logging; logging.basicConfig(); import nexus")
    assert proc.returncode == 0
    assert "broken.json" not in proc.stderr


def test_user_entries_need_only_name_vendor_type_architecture(tmp_path: pathlib.Path) -> None:
    minimal = {"Name": "Acme One", "Vendor": "Acme", "Type": "npu", "Architecture": "acme_1"}
    (tmp_path / "acme-npu-acme_1.json").write_text(json.dumps(minimal))
    (tmp_path / "novendor.json").write_text(json.dumps({"Name": "x", "Type": "gpu", "Architecture": "nov_1"}))
    bad_type = dict(minimal, Architecture="acme_2", Type="toaster")
    (tmp_path / "badtype.json").write_text(json.dumps(bad_type))
    code = (
        "import logging, nexus\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s %(levelname)s %(message)s')\n"
        "info = nexus.lookup_device_info('acme_1')\n"
        "print(info.get_str('Vendor'), info.get_str('Type'), info.get_source('Name'))\n"
        "print(nexus.lookup_device_info('nov_1'), nexus.lookup_device_info('acme_2'))\n"
    )
    proc = _run_with_device_path(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("Acme npu database 'acme-npu-acme_1'")
    assert second == "None None"
    warnings = [w for w in proc.stderr.splitlines() if w.startswith("nexus WARNING")]
    assert any("novendor.json" in w and "the required field 'Vendor' is missing" in w for w in warnings), proc.stderr
    assert any("badtype.json" in w and "toaster" in w for w in warnings), proc.stderr


def test_shipped_entries_keep_the_full_schema() -> None:
    schema = json.loads((ROOT / "schema" / "device.schema.json").read_text())
    assert {"MemorySubsystem", "Sources"} <= set(schema["required"])
    for props in nexus.get_device_info().values():
        if props.get_source("Name").startswith("database '") and "(" not in props.get_source("Name"):
            assert props.get_str(["Sources", 0, "Url"]).startswith("http")
