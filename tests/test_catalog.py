"""Kernel catalogs: nexus.catalog.build, the manifest's validation, and the
choice of build for a device (exact architecture, family, portable, source)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import nexus
import nexus.catalog
import numpy as np
import pytest
from conftest import KERNELS, library_path, runtimes_with_kernels

# Another name of each CPU architecture's family (the CPU runtime reports x86_64 / aarch64).
FAMILY_ALIAS = {"x86_64": "amd64", "aarch64": "arm64"}
OTHER_ARCH = {"x86_64": "riscv64", "aarch64": "riscv64"}


def _run_vadd(lib: nexus.Library, device: nexus.Device, n: int = 1000) -> None:
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 2.0, dtype=np.float32)
    ab, bb, cb = device.create_buffer(a), device.create_buffer(b), device.create_buffer(np.zeros(n, np.float32))
    sched = device.create_schedule()
    cmd = sched.create_command(lib.get_kernel("vadd"))
    cmd.set_buffer(0, ab)
    cmd.set_buffer(1, bb)
    cmd.set_buffer(2, cb)
    cmd.set_arg(3, n)
    cmd.finalize(64, n)
    sched.run()
    out = np.zeros(n, np.float32)
    cb.copy(out)
    np.testing.assert_array_equal(out, a + b)


@pytest.fixture(scope="module")
def cpu_so(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A real CPU build of tests/kernels/kernels.c."""
    return pathlib.Path(nexus.cpu.build_library(KERNELS / "kernels.c", tmp_path_factory.mktemp("so") / "kernels.so"))


def _write(folder: pathlib.Path, builds: list[dict], libraries: str = "kernels") -> pathlib.Path:
    manifest = {"nexus-catalog": 1, "libraries": {libraries: {"builds": builds}}}
    path = folder / nexus.catalog.MANIFEST
    path.write_text(json.dumps(manifest))
    return folder


# ---------------------------------------------------------------- build()


def test_build_scans_a_folder_by_extension(tmp_path: pathlib.Path) -> None:
    files = {
        "kernels.cu": b'extern "C" __global__ void k() {}',
        "kernels.ptx": b".version 7.0\n.target sm_80\n.address_size 64\n",
        "kernels.sm_90.cubin": b"\x7fELF",
        "kernels.so": b"\x7fELF",
        "kernels.aarch64.so": b"\x7fELF",
        "kernels.cl": b"__kernel void k() {}",
        "kernels.wgsl": b"@compute @workgroup_size(1) fn k() {}",
        "kernels.comp": b"#version 450\n",
        "scale.spv": b"\x03\x02\x23\x07",
        "other.gfx942.hsaco": b"\x7fELF",
        "other.hip": b"__global__ void k() {}",
        "other.metallib": b"MTLB",
        "other.metal": b"kernel void k() {}",
        "README.md": b"not a build",
        ".hidden.cl": b"ignored",
    }
    sub = tmp_path / "sub"
    sub.mkdir()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (sub / "nested.cl").write_bytes(b"__kernel void k() {}")
    path = nexus.catalog.build(tmp_path)
    assert path == str(tmp_path / "nexus-catalog.json")
    manifest = json.loads(pathlib.Path(path).read_text())
    assert manifest["nexus-catalog"] == 1
    assert manifest["generator"].startswith("nexus.catalog")
    libs = manifest["libraries"]
    assert sorted(libs) == ["kernels", "nested", "other", "scale"]
    got = {(b["file"], b["runtime"], b["format"], b.get("arch")) for b in libs["kernels"]["builds"]}
    assert got == {
        ("kernels.cu", "cuda", "cuda", None),
        ("kernels.ptx", "cuda", "ptx", "sm_80"),  # from its .target
        ("kernels.sm_90.cubin", "cuda", "cubin", "sm_90"),
        ("kernels.so", "cpu", "so", nexus.catalog.machine_arch()),
        ("kernels.aarch64.so", "cpu", "so", "aarch64"),
        ("kernels.cl", "opencl", "opencl-c", None),
        ("kernels.wgsl", "vulkan", "wgsl", None),
        ("kernels.comp", "vulkan", "glsl", None),
    }
    other = {(b["file"], b["runtime"], b["format"], b.get("arch")) for b in libs["other"]["builds"]}
    assert other == {
        ("other.gfx942.hsaco", "hip", "hsaco", "gfx942"),
        ("other.hip", "hip", "hip", None),
        ("other.metallib", "metal", "metallib", None),
        ("other.metal", "metal", "msl", None),
    }
    assert libs["scale"]["builds"] == [{"runtime": "vulkan", "format": "spirv", "file": "scale.spv"}]
    assert libs["nested"]["builds"][0]["file"] == "sub/nested.cl"


def test_cubin_architecture_comes_from_its_elf_header(tmp_path: pathlib.Path) -> None:
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    header[18:20] = (190).to_bytes(2, "little")  # EM_CUDA
    header[48:52] = (0x00590059).to_bytes(4, "little")  # sm_89
    (tmp_path / "k.cubin").write_bytes(bytes(header))
    manifest = json.loads(pathlib.Path(nexus.catalog.build(tmp_path)).read_text())
    assert manifest["libraries"]["k"]["builds"][0]["arch"] == "sm_89"


def test_build_errors_are_value_errors_naming_the_path(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        nexus.catalog.build(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"holds no kernel build \(files ending in"):
        nexus.catalog.build(tmp_path)
    (tmp_path / "k.hsaco").write_bytes(b"\x7fELF")
    with pytest.raises(ValueError, match=r"k\.hsaco'.*name it k\.<arch>\.hsaco"):
        nexus.catalog.build(tmp_path)
    (tmp_path / "k.hsaco").unlink()
    (tmp_path / "k.cl").write_text("__kernel void k() {}")
    with pytest.raises(ValueError, match="does not exist"):
        nexus.catalog.build(tmp_path, tmp_path / "no" / "such" / "out.json")


def test_command_line(tmp_path: pathlib.Path) -> None:
    (tmp_path / "kernels.cl").write_text("__kernel void k() {}")
    proc = subprocess.run([sys.executable, "-m", "nexus.catalog", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(tmp_path / "nexus-catalog.json")
    assert "kernels: opencl opencl-c any kernels.cl" in lines[1]
    proc = subprocess.run([sys.executable, "-m", "nexus.catalog", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr


# ---------------------------------------------------------------- selection on the CPU


def test_exact_architecture_beats_family_and_others(cpu_device: nexus.Device, cpu_so: pathlib.Path, tmp_path: pathlib.Path) -> None:
    arch = cpu_device.get_property_str("Architecture")
    shutil.copy(cpu_so, tmp_path / "good.so")
    (tmp_path / "decoy.so").write_bytes(b"\x7fELF not loadable")
    _write(tmp_path, [
        {"runtime": "cpu", "format": "so", "arch": FAMILY_ALIAS.get(arch, "x86"), "file": "decoy.so"},
        {"runtime": "cpu", "format": "so", "kind": "source", "file": "decoy.so"},
        {"runtime": "cuda", "format": "so", "arch": arch, "file": "decoy.so"},
        {"runtime": "cpu", "format": "so", "arch": [OTHER_ARCH.get(arch, "z80"), arch], "file": "good.so"},
    ])
    lib = cpu_device.load_library(tmp_path)
    assert lib.get_property_str("CatalogMatch") == "exact"
    assert lib.get_property_str("CatalogBuild") == "good.so"
    assert lib.get_property_str("CatalogArchitecture").endswith(arch)
    assert lib.get_property_str("CatalogReason").startswith("exact architecture")
    assert lib.get_property_str("CatalogLibrary") == "kernels"
    assert lib.get_property_str("Catalog") == str(tmp_path / "nexus-catalog.json")
    assert pathlib.Path(lib.get_property_str("CatalogFile")) == tmp_path / "good.so"
    _run_vadd(lib, cpu_device)


@pytest.mark.parametrize("case", ["family", "any-arch binary", "portable", "source"])
def test_each_fallback_step(case: str, cpu_device: nexus.Device, cpu_so: pathlib.Path, tmp_path: pathlib.Path) -> None:
    arch = cpu_device.get_property_str("Architecture")
    shutil.copy(cpu_so, tmp_path / "good.so")
    (tmp_path / "decoy.so").write_bytes(b"\x7fELF not loadable")
    other = {"runtime": "cpu", "format": "so", "arch": OTHER_ARCH.get(arch, "z80"), "file": "decoy.so"}
    good = {
        "family": {"runtime": "cpu", "format": "so", "arch": FAMILY_ALIAS.get(arch, arch + "_v2"), "file": "good.so"},
        "any-arch binary": {"runtime": "cpu", "format": "so", "file": "good.so"},
        "portable": {"runtime": ["opencl", "cpu"], "format": "cpu-ir", "kind": "portable", "file": "good.so"},
        "source": {"runtime": "cpu", "format": "c", "kind": "source", "file": "good.so"},
    }[case]
    # Every worse step is present too, as a build that would fail to load.
    worse = {
        "family": [{"runtime": "cpu", "format": "ir", "kind": "portable", "file": "decoy.so"},
                   {"runtime": "cpu", "format": "c", "kind": "source", "file": "decoy.so"}],
        "any-arch binary": [{"runtime": "cpu", "format": "ir", "kind": "portable", "file": "decoy.so"}],
        "portable": [{"runtime": "cpu", "format": "c", "kind": "source", "file": "decoy.so"}],
        "source": [],
    }[case]
    _write(tmp_path, [other, *worse, good])
    lib = cpu_device.load_library(tmp_path)
    expected = "portable" if case == "portable" else "source" if case == "source" else "family"
    assert lib.get_property_str("CatalogMatch") == expected
    assert lib.get_property_str("CatalogBuild") == "good.so"
    assert arch in lib.get_property_str("CatalogReason") or case == "any-arch binary"
    _run_vadd(lib, cpu_device)


def test_no_build_for_the_device_names_catalog_architecture_and_builds(cpu_device: nexus.Device, tmp_path: pathlib.Path) -> None:
    arch = cpu_device.get_property_str("Architecture")
    (tmp_path / "k.so").write_bytes(b"\x7fELF")
    _write(tmp_path, [
        {"runtime": "cpu", "format": "so", "arch": OTHER_ARCH.get(arch, "z80"), "file": "k.so"},
        {"runtime": "cuda", "format": "ptx", "arch": "sm_80", "file": "k.so"},
    ])
    with pytest.raises(nexus.Error) as e:
        cpu_device.load_library(tmp_path)
    msg = str(e.value)
    assert e.value.status == nexus.status.NXS_InvalidLibrary
    assert str(tmp_path / "nexus-catalog.json") in msg
    assert f"(runtime cpu, architecture {arch})" in msg
    assert f"cpu so for {OTHER_ARCH.get(arch, 'z80')} (k.so)" in msg
    assert "cuda ptx for sm_80 (k.so)" in msg


def test_a_backend_error_names_the_chosen_build(cpu_device: nexus.Device, tmp_path: pathlib.Path) -> None:
    (tmp_path / "broken.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"\xff" * 200)
    _write(tmp_path, [{"runtime": "cpu", "format": "so", "file": "broken.so"}])
    with pytest.raises(nexus.Error, match=r"(?s)not a loadable CPU kernel library.*catalog '.*' library 'kernels', build 'broken.so'"):
        cpu_device.load_library(tmp_path)


def test_libraries_are_named_by_a_path_inside_the_catalog(cpu_device: nexus.Device, cpu_so: pathlib.Path, tmp_path: pathlib.Path) -> None:
    shutil.copy(cpu_so, tmp_path / "kernels.so")
    shutil.copy(cpu_so, tmp_path / "more.so")
    nexus.catalog.build(tmp_path)
    for path in (tmp_path / "kernels", f"{tmp_path}/nexus-catalog.json#kernels", f"{tmp_path}#more"):
        lib = cpu_device.load_library(path)
        _run_vadd(lib, cpu_device)
    assert cpu_device.load_library(tmp_path / "more").get_property_str("CatalogLibrary") == "more"
    with pytest.raises(nexus.Error, match=r"holds several libraries \(kernels, more\): name one"):
        cpu_device.load_library(tmp_path)
    with pytest.raises(nexus.Error, match=r"has no library 'nope' \(libraries: kernels, more\)"):
        cpu_device.load_library(tmp_path / "nope")
    # A folder without a manifest is not a catalog: the backend says so, as before.
    (tmp_path / "nexus-catalog.json").unlink()
    with pytest.raises(nexus.Error, match="not a file"):
        cpu_device.load_library(tmp_path)


def test_single_file_catalog_with_embedded_builds(cpu_device: nexus.Device, cpu_so: pathlib.Path,
                                                  tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "builds"
    folder.mkdir()
    shutil.copy(cpu_so, folder / "kernels.so")
    one = tmp_path / "kernels-catalog.json"
    assert nexus.catalog.build(folder, one, embed=True) == str(one)
    shutil.rmtree(folder)  # the one file is the whole catalog
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(tmp_path / "cache"))
    lib = cpu_device.load_library(one)
    assert lib.get_property_str("CatalogBuild") == "kernels.so"
    extracted = pathlib.Path(lib.get_property_str("CatalogFile"))
    assert extracted.is_relative_to(tmp_path / "cache" / "catalog") and extracted.name == "kernels.so"
    _run_vadd(lib, cpu_device)
    # The same manifest as bytes.
    lib = cpu_device.load_library(one.read_bytes())
    assert lib.get_property_str("Catalog") == f"<{one.stat().st_size} bytes>"
    _run_vadd(lib, cpu_device)


def test_single_file_catalog_with_relative_files(cpu_device: nexus.Device, cpu_so: pathlib.Path, tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "builds"
    folder.mkdir()
    shutil.copy(cpu_so, folder / "kernels.so")
    out = nexus.catalog.build(folder, tmp_path / "index.json")
    builds = json.loads(pathlib.Path(out).read_text())["libraries"]["kernels"]["builds"]
    assert builds[0]["file"] == "builds/kernels.so"
    _run_vadd(cpu_device.load_library(out), cpu_device)


@pytest.mark.parametrize(("manifest", "fragment"), [
    ('{"nexus-catalog": 1, "libraries": ', "not valid JSON"),
    ('[1, 2]', "expected a JSON object, got a list"),
    ('{"libraries": {}}', 'not a nexus catalog: the field "nexus-catalog"'),
    ('{"nexus-catalog": 9, "libraries": {}}', "version 9 is newer than this nexus reads (1)"),
    ('{"nexus-catalog": "1", "libraries": {}}', "expected the version number 1"),
    ('{"nexus-catalog": 1}', 'the field "libraries" is missing'),
    ('{"nexus-catalog": 1, "libraries": {}}', "the catalog lists no library"),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": []}}}', "libraries.k.builds: the list is empty"),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": [{"runtime": "cpu", "file": "k.so"}]}}}', 'libraries.k.builds[0]: the field "format" is missing'),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": [{"runtime": "cpu", "format": "so"}]}}}', 'needs "file"'),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": [{"runtime": "cpu", "format": "so", "arch": 5, "file": "k"}]}}}', "builds[0].arch: expected a non-empty string or a list of them, got a number"),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": [{"runtime": "cpu", "format": "blob", "file": "k"}]}}}', 'format "blob" is not one nexus knows'),
    ('{"nexus-catalog": 1, "libraries": {"k": {"builds": [{"runtime": "cpu", "format": "so", "data": "%%%"}]}}}', "builds[0].data: not valid base64"),
    ('{"nexus-catalog": 1, "libraries": {"a/b": {"builds": []}}}', "a library name must be non-empty"),
])
def test_manifest_errors_name_the_file_and_the_field(cpu_device: nexus.Device, tmp_path: pathlib.Path, manifest: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(manifest)
    with pytest.raises(nexus.Error) as e:
        cpu_device.load_library(path)
    assert e.value.status == nexus.status.NXS_InvalidLibrary
    assert f"catalog '{path}'" in str(e.value)
    assert fragment in str(e.value)


# ---------------------------------------------------------------- every runtime


def test_test_kernels_load_through_one_catalog(device: nexus.Device, kernels: nexus.Library, build_dir: pathlib.Path) -> None:
    runtime = device.get_property_str("Runtime")
    catalog = build_dir / "catalog"
    assert library_path(device, "kernels", build_dir) == str(catalog / "kernels")
    assert kernels.get_property_str("Catalog") == str(catalog / "nexus-catalog.json")
    assert kernels.get_property_str("CatalogLibrary") == "kernels"
    assert kernels.get_property_str("CatalogMatch") in {"exact", "family", "portable", "source"}
    if runtime == "cpu":
        assert kernels.get_property_str("CatalogMatch") == "exact"
        assert kernels.get_property_str("CatalogArchitecture") == device.get_property_str("Architecture")
    manifest = json.loads((catalog / "nexus-catalog.json").read_text())
    runtimes = {b["runtime"] for b in manifest["libraries"]["kernels"]["builds"]}
    assert runtimes == runtimes_with_kernels(build_dir)
    assert set(manifest["libraries"]) == {"kernels", "spec_kernel"}
    _run_vadd(kernels, device)


def test_direct_per_runtime_paths_still_load(device: nexus.Device, build_dir: pathlib.Path) -> None:
    from conftest import direct_library_path

    path = direct_library_path(device, "kernels", build_dir)
    lib = device.load_library(path)
    with pytest.raises(nexus.Error):
        lib.get_property_str("Catalog")
    _run_vadd(lib, device)


def test_catalog_module_is_documented() -> None:
    doc = nexus.catalog.__doc__ or ""
    for word in ('"nexus-catalog": 1', "CatalogMatch", "CatalogReason", "exact", "family", "portable", "source"):
        assert word in doc
