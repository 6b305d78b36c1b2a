"""Status codes returned by nexus calls and carried by ``nexus.Error.status``."""

from enum import IntEnum


class Status(IntEnum):
    NXS_Success = 0
    NXS_InvalidValue = -1
    NXS_InvalidType = -2
    NXS_InvalidProperty = -3
    NXS_InvalidRuntime = -4
    NXS_InvalidDevice = -5
    NXS_InvalidBuffer = -6
    NXS_InvalidLibrary = -7
    NXS_InvalidKernel = -8
    NXS_InvalidCommand = -9
    NXS_InvalidSchedule = -10
    NXS_InvalidStream = -11
    NXS_InvalidEvent = -12
    NXS_InvalidArgument = -13
    NXS_InvalidSize = -14
    NXS_OutOfMemory = -15
    NXS_Timeout = -16
    NXS_DriverError = -17
    NXS_CompileError = -18
    NXS_NotSupported = -19
    NXS_Released = -20


# Members at module level, so `nexus.status.X` works and type checkers see it.
NXS_Success = Status.NXS_Success
NXS_InvalidValue = Status.NXS_InvalidValue
NXS_InvalidType = Status.NXS_InvalidType
NXS_InvalidProperty = Status.NXS_InvalidProperty
NXS_InvalidRuntime = Status.NXS_InvalidRuntime
NXS_InvalidDevice = Status.NXS_InvalidDevice
NXS_InvalidBuffer = Status.NXS_InvalidBuffer
NXS_InvalidLibrary = Status.NXS_InvalidLibrary
NXS_InvalidKernel = Status.NXS_InvalidKernel
NXS_InvalidCommand = Status.NXS_InvalidCommand
NXS_InvalidSchedule = Status.NXS_InvalidSchedule
NXS_InvalidStream = Status.NXS_InvalidStream
NXS_InvalidEvent = Status.NXS_InvalidEvent
NXS_InvalidArgument = Status.NXS_InvalidArgument
NXS_InvalidSize = Status.NXS_InvalidSize
NXS_OutOfMemory = Status.NXS_OutOfMemory
NXS_Timeout = Status.NXS_Timeout
NXS_DriverError = Status.NXS_DriverError
NXS_CompileError = Status.NXS_CompileError
NXS_NotSupported = Status.NXS_NotSupported
NXS_Released = Status.NXS_Released
