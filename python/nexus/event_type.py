"""Event types accepted by ``Device.create_event``."""

from enum import IntEnum


class EventType(IntEnum):
    Shared = 0
    Signal = 1
    Fence = 2


# Members at module level, so `nexus.event_type.X` works and type checkers see it.
Shared = EventType.Shared
Signal = EventType.Signal
Fence = EventType.Fence
