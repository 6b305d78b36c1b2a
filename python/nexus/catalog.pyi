"""Kernel catalogs: one artifact holding a kernel library built for several devices."""

import os
from typing import Any, Optional, Union

__all__ = ["MANIFEST", "VERSION", "EXTENSIONS", "build", "scan", "machine_arch", "main"]

PathLike = Union[str, os.PathLike[str]]

MANIFEST: str
VERSION: int
EXTENSIONS: dict[str, tuple[str, str]]

def machine_arch() -> str: ...
def scan(folder: PathLike, relative_to: Optional[PathLike] = None) -> dict[str, Any]: ...
def build(folder: PathLike, out: Optional[PathLike] = None, *, embed: bool = False) -> str: ...
def main(argv: Optional[list[str]] = None) -> int: ...
