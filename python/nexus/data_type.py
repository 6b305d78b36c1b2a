"""Element types of buffers and scalar kernel arguments."""

from enum import IntEnum


class DataType(IntEnum):
    Undefined = 0
    F32 = 1
    F16 = 2
    BF16 = 3
    F64 = 4
    I32 = 5
    U32 = 6
    I64 = 7
    U64 = 8
    I16 = 9
    U16 = 10
    I8 = 11
    U8 = 12
    Bool = 13


# Members at module level, so `nexus.data_type.X` works and type checkers see it.
Undefined = DataType.Undefined
F32 = DataType.F32
F16 = DataType.F16
BF16 = DataType.BF16
F64 = DataType.F64
I32 = DataType.I32
U32 = DataType.U32
I64 = DataType.I64
U64 = DataType.U64
I16 = DataType.I16
U16 = DataType.U16
I8 = DataType.I8
U8 = DataType.U8
Bool = DataType.Bool
