"""Kernel catalogs: one artifact holding a kernel library built for several devices.

``device.load_library(path)`` takes a catalog wherever it takes a library
file, and nexus picks the build that fits the device (the selection runs in
the Rust core, ``crates/nexus/src/catalog.rs``):

1. a build for the device's exact architecture (binary, then portable, then source),
2. a binary of the same family (``sm_80`` on ``sm_86``, ``gfx9-generic`` on
   ``gfx90a``, ``amd64`` on ``x86_64``) or a binary for any architecture,
3. a portable form (PTX, SPIR-V; PTX for ``sm_80`` serves ``sm_80`` and newer),
4. source, compiled for the device at load.

The library's properties say which build was taken and why: ``Catalog``,
``CatalogLibrary``, ``CatalogBuild``, ``CatalogFile``, ``CatalogFormat``,
``CatalogKind``, ``CatalogArchitecture``, ``CatalogMatch`` (``exact``,
``family``, ``portable`` or ``source``) and ``CatalogReason`` (a sentence).
A device that no build fits raises ``nexus.Error`` naming the catalog, the
device's runtime and architecture, and the builds present.

A catalog is a folder holding ``nexus-catalog.json``, or a single ``.json``
manifest. A library of a catalog is named by a path inside it:
``load_library("build/catalog/kernels")`` or ``load_library("kernels.json#kernels")``;
a catalog of one library needs no name. The manifest (version 1)::

    {
      "nexus-catalog": 1,
      "generator": "nexus.catalog 0.1.0",
      "libraries": {
        "kernels": {
          "builds": [
            {"runtime": "cuda", "format": "cubin", "arch": "sm_90", "file": "kernels.sm_90.cubin"},
            {"runtime": "cuda", "format": "ptx", "arch": "sm_80", "file": "kernels.ptx"},
            {"runtime": "cuda", "format": "cuda", "file": "kernels.cu"},
            {"runtime": "cpu", "format": "so", "arch": "x86_64", "file": "kernels.x86_64.so"},
            {"runtime": "opencl", "format": "opencl-c", "file": "kernels.cl"},
            {"runtime": "vulkan", "format": "wgsl", "file": "kernels.wgsl"}
          ]
        }
      }
    }

Per build: ``runtime`` (a runtime name or a list, matched against the
device's ``Runtime`` property), ``format``, ``arch`` (a name or a list,
matched against the device's ``Architecture``; absent: any), ``file`` (a
path relative to the manifest) or ``data`` (the bytes, base64), and
``kind`` (``binary``, ``portable`` or ``source``; needed only for formats
nexus does not know). Unknown fields, a wrong version or a bad value raise
``nexus.Error`` naming the manifest and the field.

:func:`build` writes a manifest for a folder of builds, and
``python -m nexus.catalog FOLDER`` does the same from a shell.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import platform
import re
import sys
from typing import Any, Optional, Union

__all__ = ["MANIFEST", "VERSION", "EXTENSIONS", "build", "scan", "machine_arch", "main"]

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST = "nexus-catalog.json"
"""The manifest's file name inside a catalog folder."""

VERSION = 1
"""The manifest version this nexus writes (``"nexus-catalog": 1``)."""

EXTENSIONS: dict[str, tuple[str, str]] = {
    ".ptx": ("cuda", "ptx"),
    ".cubin": ("cuda", "cubin"),
    ".fatbin": ("cuda", "fatbin"),
    ".cu": ("cuda", "cuda"),
    ".so": ("cpu", "so"),
    ".spv": ("vulkan", "spirv"),
    ".wgsl": ("vulkan", "wgsl"),
    ".comp": ("vulkan", "glsl"),
    ".cl": ("opencl", "opencl-c"),
    ".hsaco": ("hip", "hsaco"),
    ".co": ("hip", "hsaco"),
    ".hip": ("hip", "hip"),
    ".metallib": ("metal", "metallib"),
    ".metal": ("metal", "msl"),
}
"""File extension -> (runtime, format) that :func:`build` records."""

# Formats whose builds are machine code for one architecture: the file
# name (or the file itself) must say which.
_NEEDS_ARCH = {"cubin", "hsaco"}

_CPU_ARCHS = {
    "x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64",
    "aarch64": "aarch64", "arm64": "aarch64",
    "i386": "x86", "i686": "x86", "x86": "x86",
    "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x",
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nexus")
    except Exception:  # noqa: BLE001 - only the generator string
        return "unknown"


def machine_arch() -> str:
    """This machine's CPU architecture as the CPU runtime reports it (``x86_64``, ``aarch64``)."""
    m = platform.machine().lower()
    return _CPU_ARCHS.get(m, m)


def _cubin_arch(path: pathlib.Path) -> Optional[str]:
    """``sm_XY`` from a cubin's ELF header (e_machine EM_CUDA), if it is one."""
    head = path.read_bytes()[:64]
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] != 2:
        return None
    if int.from_bytes(head[18:20], "little") != 190:  # EM_CUDA
        return None
    flags = int.from_bytes(head[48:52], "little")
    for sm in (flags & 0xFF, (flags >> 8) & 0xFF):
        if 20 <= sm <= 200:
            return f"sm_{sm}"
    return None


def _ptx_arch(path: pathlib.Path) -> Optional[str]:
    text = path.read_bytes()[:64 * 1024].decode("utf-8", "replace")
    m = re.search(r"^\s*\.target\s+(sm_\d+[a-z]?)", text, re.MULTILINE)
    return m.group(1) if m else None


def _describe(path: pathlib.Path, rel: str) -> Optional[tuple[str, dict[str, Any]]]:
    """(library name, build entry) for one file, or None if it is not a build."""
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        return None
    runtime, fmt = EXTENSIONS[ext]
    stem = path.name[: -len(path.suffix)]
    library, _, middle = stem.partition(".")
    if not library:
        return None
    arch: Optional[str] = middle or None
    if fmt == "so":
        arch = _CPU_ARCHS.get(arch.lower(), arch) if arch else machine_arch()
    elif fmt == "cubin" and arch is None:
        arch = _cubin_arch(path)
    elif fmt == "ptx" and arch is None:
        arch = _ptx_arch(path)
    if fmt in _NEEDS_ARCH and arch is None:
        raise ValueError(
            f"nexus.catalog: cannot tell the architecture of '{path}': name it "
            f"{library}.<arch>{path.suffix} (for example {library}.{'sm_90' if fmt == 'cubin' else 'gfx942'}{path.suffix})"
        )
    entry: dict[str, Any] = {"runtime": runtime, "format": fmt}
    if arch:
        entry["arch"] = arch
    entry["file"] = rel
    return library, entry


def scan(folder: PathLike, relative_to: Optional[PathLike] = None) -> dict[str, Any]:
    """The manifest (a dict) for the builds in ``folder`` and its subfolders.

    Files are taken by extension (:data:`EXTENSIONS`); ``NAME[.ARCH].EXT``
    puts a file in library ``NAME`` built for ``ARCH``: ``kernels.sm_90.cubin``,
    ``kernels.aarch64.so``. A ``.so`` without an architecture is taken as
    built for this machine; a cubin's is read from its ELF header and a
    PTX file's from its ``.target``; other files without one serve any
    architecture. ``file`` paths are relative to ``relative_to`` (default:
    ``folder``). Raises ``ValueError`` for a folder that is missing or holds
    no build.
    """
    root = pathlib.Path(os.fspath(folder))
    if not root.is_dir():
        raise ValueError(f"nexus.catalog: '{root}' is not a folder")
    base = pathlib.Path(os.fspath(relative_to)) if relative_to is not None else root
    libraries: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if not path.is_file() or path.name == MANIFEST or any(p.startswith(".") for p in parts):
            continue
        rel = pathlib.Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
        described = _describe(path, rel)
        if described is None:
            continue
        library, entry = described
        libraries.setdefault(library, {"builds": []})["builds"].append(entry)
    if not libraries:
        known = ", ".join(sorted(EXTENSIONS))
        raise ValueError(f"nexus.catalog: '{root}' holds no kernel build (files ending in {known})")
    return {"nexus-catalog": VERSION, "generator": f"nexus.catalog {_version()}", "libraries": libraries}


def build(folder: PathLike, out: Optional[PathLike] = None, *, embed: bool = False) -> str:
    """Writes the catalog manifest for the builds in ``folder``; returns its path.

    ``out`` defaults to ``folder/nexus-catalog.json`` (then ``folder`` is the
    catalog: ``load_library(folder)``, or ``load_library(folder / "kernels")``
    when it holds several libraries); a folder ``out`` gets
    ``out/nexus-catalog.json``; any other path is a single-file catalog
    whose ``file`` entries are relative to it. ``embed=True`` stores each
    build's bytes in the manifest (base64), so the one file is the whole
    catalog. The file is replaced atomically.
    """
    root = pathlib.Path(os.fspath(folder))
    if not root.is_dir():
        raise ValueError(f"nexus.catalog: '{root}' is not a folder")
    if out is None:
        target = root / MANIFEST
    else:
        target = pathlib.Path(os.fspath(out))
        if target.is_dir():
            target = target / MANIFEST
    if not target.parent.is_dir():
        raise ValueError(f"nexus.catalog: the folder of out '{target}' does not exist")
    manifest = scan(root, relative_to=target.parent)
    if embed:
        base = target.parent
        for lib in manifest["libraries"].values():
            for entry in lib["builds"]:
                data = (base / entry["file"]).read_bytes()
                entry["data"] = base64.b64encode(data).decode("ascii")
                entry["file"] = pathlib.PurePosixPath(entry["file"]).name
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return str(target)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m nexus.catalog FOLDER [-o OUT] [--embed]``."""
    parser = argparse.ArgumentParser(
        prog="python -m nexus.catalog",
        description="Write a nexus kernel catalog manifest for the kernel builds in FOLDER.",
    )
    parser.add_argument("folder", help="folder of builds (kernels.sm_90.cubin, kernels.ptx, kernels.cu, kernels.so, ...)")
    parser.add_argument("-o", "--out", help=f"manifest to write (default: FOLDER/{MANIFEST})")
    parser.add_argument("--embed", action="store_true", help="store the builds' bytes in the manifest (one self-contained file)")
    args = parser.parse_args(argv)
    try:
        path = build(args.folder, args.out, embed=args.embed)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    print(path)
    for name, lib in manifest["libraries"].items():
        for b in lib["builds"]:
            print(f"  {name}: {b['runtime']} {b['format']} {b.get('arch', 'any')} {b['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
