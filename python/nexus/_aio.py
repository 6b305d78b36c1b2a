"""Hands results of nexus's completion thread to asyncio futures (called on
the future's own event loop through ``call_soon_threadsafe``)."""

from __future__ import annotations

import asyncio
from typing import Any, Optional


def _resolve(future: asyncio.Future, result: Any, error: Optional[BaseException]) -> None:
    if future.done():  # cancelled by its task meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _resolve_many(items: list) -> None:
    for future, result, error in items:
        _resolve(future, result, error)
