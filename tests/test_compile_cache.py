"""The persistent compile cache (crates/nexus/src/cache.rs) through NVRTC:
first vs cached load_library of a .cu file, a corrupt entry, the cache off.
Skipped where the CUDA runtime lists no device (the cache module itself is
tested by `cargo test -p nexus cache::`)."""

from __future__ import annotations

import pathlib
import time

import nexus
import numpy as np
import pytest

CUDA = nexus.get_runtime("cuda")
if len(CUDA.get_devices()) == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"


def _vadd_works(lib: nexus.Library, device: nexus.Device, n: int = 4096) -> None:
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 3.0, dtype=np.float32)
    bufs = [device.create_buffer(x) for x in (a, b, np.zeros(n, np.float32))]
    sched = device.create_schedule()
    cmd = sched.create_command(lib.get_kernel("vadd"))
    for i, buf in enumerate(bufs):
        cmd.set_buffer(i, buf)
    cmd.set_arg(3, n)
    cmd.finalize(256, n)
    sched.run()
    out = np.zeros(n, np.float32)
    bufs[2].copy(out)
    np.testing.assert_array_equal(out, a + b)


def _timed_load(device: nexus.Device, path: pathlib.Path) -> tuple[nexus.Library, float]:
    t0 = time.perf_counter()
    lib = device.load_library(str(path))
    return lib, time.perf_counter() - t0


def test_first_and_cached_load_of_a_cu_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    device = CUDA.get_device(0)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(cache))
    source = KERNELS / "kernels.cu"
    first, t_first = _timed_load(device, source)
    assert first.get_property_str("CompileCache") == "miss"
    entries = list((cache / "nvrtc").glob("*.bin"))
    assert len(entries) == 1, entries
    second, t_cached = _timed_load(device, source)
    assert second.get_property_str("CompileCache") == "hit"
    _vadd_works(first, device)
    _vadd_works(second, device)
    arch = device.get_property_str("Architecture")
    with capsys.disabled():
        print(f"\nNVRTC compile cache on {device.get_property_str('Name')} ({arch}): "
              f"first load_library(kernels.cu) {t_first * 1e3:.1f} ms, cached {t_cached * 1e3:.1f} ms")

    # A corrupt entry is ignored, compiled again and replaced.
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    third, _ = _timed_load(device, source)
    assert third.get_property_str("CompileCache") == "miss"
    _vadd_works(third, device)
    assert device.load_library(str(source)).get_property_str("CompileCache") == "hit"

    # Another source is another entry.
    edited = tmp_path / "edited.cu"
    edited.write_text(source.read_text() + "\n// edited\n")
    assert device.load_library(str(edited)).get_property_str("CompileCache") == "miss"
    assert len(list((cache / "nvrtc").glob("*.bin"))) == 2


def test_cache_off_and_unwritable(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = CUDA.get_device(0)
    source = str(KERNELS / "kernels.cu")
    monkeypatch.setenv("NEXUS_CACHE_DIR", "0")
    lib = device.load_library(source)
    assert lib.get_property_str("CompileCache") == "off"
    _vadd_works(lib, device)
    # A cache "folder" that is a file: loads still work, nothing is kept.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(blocker))
    for _ in range(2):
        lib = device.load_library(source)
        assert lib.get_property_str("CompileCache") == "miss"
        _vadd_works(lib, device)


def test_catalog_source_build_goes_through_the_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import nexus.catalog

    device = CUDA.get_device(0)
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "catalog"
    folder.mkdir()
    shutil.copy(KERNELS / "kernels.cu", folder / "kernels.cu")
    nexus.catalog.build(folder)
    first = device.load_library(str(folder))
    assert first.get_property_str("CatalogMatch") == "source"
    assert first.get_property_str("CompileCache") == "miss"
    second = device.load_library(str(folder))
    assert second.get_property_str("CompileCache") == "hit"
    _vadd_works(second, device)
