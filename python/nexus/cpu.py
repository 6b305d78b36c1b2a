"""Helpers for the CPU runtime: the kernel ABI header and a C compiler driver."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Optional, Union

from ._nexus import Error

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["include_dir", "header_path", "find_compiler", "build_library"]


def include_dir() -> str:
    """The folder holding ``nexus_cpu.h`` (pass it to the compiler with ``-I``)."""
    return str(pathlib.Path(__file__).resolve().parent / "include")


def header_path() -> str:
    return os.path.join(include_dir(), "nexus_cpu.h")


def find_compiler() -> Optional[str]:
    """``$CC`` if set, else the first of cc, gcc, clang on PATH."""
    env = os.environ.get("CC")
    if env:
        return env
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _looks_like_path(source: str) -> bool:
    return "\n" not in source and source.endswith((".c", ".cc", ".cpp", ".cxx")) and os.path.exists(source)


def build_library(source: PathLike, output: Optional[PathLike] = None, flags: Optional[list[str]] = None) -> str:
    """Compile a C/C++ kernel file, or C source text, into a loadable library.

    Returns the library's path. ``output`` defaults to a new file in a
    temporary folder. A compile error raises ``nexus.Error`` carrying the
    compiler's message.
    """
    compiler = find_compiler()
    if compiler is None:
        raise Error("nexus.cpu.build_library: no C compiler found (set CC or install cc/gcc/clang)")
    src = os.fspath(source)
    workdir = tempfile.mkdtemp(prefix="nexus-build-")
    if not _looks_like_path(src):
        if "\n" not in src and src.endswith((".c", ".cc", ".cpp", ".cxx")):
            raise Error(f"nexus.cpu.build_library: source file does not exist: {src!r}")
        path = os.path.join(workdir, "kernel.c")
        with open(path, "w", encoding="utf-8") as f:
            f.write(src)
        src = path
    out = os.fspath(output) if output is not None else os.path.join(workdir, "kernels.so")
    cmd = [compiler, "-O3", "-shared", "-fPIC", "-I", include_dir(), src, "-o", out, "-lm"]
    if flags:
        cmd[1:1] = list(flags)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise Error(f"nexus.cpu.build_library: compiling {src} failed:\n{proc.stderr.strip()}")
    return out
