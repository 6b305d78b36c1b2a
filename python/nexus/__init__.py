"""nexus: one Python API for every accelerator on a machine.

    import nexus
    device = nexus.get_runtimes()[0].get_devices()[0]   # the best device present

Importing registers classes only: drivers are opened and worker threads
started on first use.
"""

from . import data_type, event_type, property, status
from ._nexus import (
    MAX_KERNEL_ARGS,
    Buffer,
    Command,
    Device,
    Error,
    Event,
    Kernel,
    Library,
    Properties,
    Runtime,
    Schedule,
    Stream,
    __version__,
    create_buffer,
    get_device_info,
    get_runtime,
    get_runtimes,
    known_runtimes,
    lookup_device_info,
)
from .timeline import trace

__all__ = [
    "MAX_KERNEL_ARGS",
    "__version__",
    "Buffer",
    "Command",
    "Device",
    "Error",
    "Event",
    "Kernel",
    "Library",
    "Properties",
    "Runtime",
    "Schedule",
    "Stream",
    "create_buffer",
    "data_type",
    "event_type",
    "get_device_info",
    "get_runtime",
    "get_runtimes",
    "known_runtimes",
    "lookup_device_info",
    "property",
    "status",
    "trace",
]
