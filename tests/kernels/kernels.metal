// Test kernels for the Metal runtime: same names and arguments as
// kernels.cl and kernels.cu. Conventions (README, "Metal"): argument i is
// [[buffer(i)]] (scalars arrive through setBytes: `constant T &`), the
// command's shared_memory is the threadgroup memory at [[threadgroup(0)]]
// and its size is at [[buffer(30)]]. dispatchThreads runs exactly
// grid_size threads, so the bounds checks only guard n < grid.
//
// Not here: sum_args (64 arguments; a Metal kernel takes at most 30).
#include <metal_stdlib>
using namespace metal;

// c[i] = a[i] + b[i] for i < n
kernel void vadd(device const float *a [[buffer(0)]], device const float *b [[buffer(1)]],
                 device float *c [[buffer(2)]], constant int &n [[buffer(3)]],
                 uint i [[thread_position_in_grid]]) {
    if (int(i) < n) c[i] = a[i] + b[i];
}

// MSL has no double: axpy_f64 converts float64 bit patterns to float32 and
// back (exact for the values float32 holds, which the tests use).
static float f64_to_f32(ulong b) {
    uint sign = uint(b >> 63) << 31;
    int e = int((b >> 52) & 0x7ff);
    uint m = uint((b & 0xfffffffffffffUL) >> 29);
    if (e == 0x7ff) return as_type<float>(sign | 0x7f800000u | (m != 0 ? 0x400000u : 0u));
    int fe = e - 1023 + 127;
    if (e == 0 || fe <= 0) return as_type<float>(sign);
    if (fe >= 255) return as_type<float>(sign | 0x7f800000u);
    return as_type<float>(sign | (uint(fe) << 23) | m);
}

static ulong f32_to_f64(float f) {
    uint u = as_type<uint>(f);
    ulong sign = ulong(u >> 31) << 63;
    int e = int((u >> 23) & 0xff);
    ulong m = ulong(u & 0x7fffffu) << 29;
    if (e == 0) return sign;
    if (e == 255) return sign | (0x7ffUL << 52) | m;
    return sign | (ulong(e - 127 + 1023) << 52) | m;
}

// y[i] = alpha * x[i] + y[i] for i < n (float64 and int64 scalars)
kernel void axpy_f64(device ulong *y [[buffer(0)]], device const ulong *x [[buffer(1)]],
                     constant ulong &alpha [[buffer(2)]], constant long &n [[buffer(3)]],
                     uint i [[thread_position_in_grid]]) {
    if (long(i) < n) y[i] = f32_to_f64(f64_to_f32(alpha) * f64_to_f32(x[i]) + f64_to_f32(y[i]));
}

// x[i] = x[i] * mul + add + bias for i < n (uint32, uint64 and float32 scalars)
kernel void affine_u32(device uint *x [[buffer(0)]], constant uint &mul [[buffer(1)]],
                       constant ulong &add [[buffer(2)]], constant float &bias [[buffer(3)]],
                       constant int &n [[buffer(4)]], uint i [[thread_position_in_grid]]) {
    if (int(i) < n) x[i] = x[i] * mul + uint(add) + uint(bias);
}

// out[(z*ny + y)*nx + x] = x + 1000*y + 1000000*z over a 3-D grid
kernel void index3d(device int *out [[buffer(0)]], constant int &nx [[buffer(1)]],
                    constant int &ny [[buffer(2)]], constant int &nz [[buffer(3)]],
                    uint3 gid [[thread_position_in_grid]]) {
    int x = int(gid.x), y = int(gid.y), z = int(gid.z);
    if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = x + 1000 * y + 1000000 * z;
}

// out[g] = sum of in[g*group ..] staged through the group's threadgroup memory
kernel void group_sum(device const float *src [[buffer(0)]], device float *out [[buffer(1)]],
                      constant int &n [[buffer(2)]], threadgroup float *scratch [[threadgroup(0)]],
                      uint i [[thread_position_in_grid]], uint t [[thread_position_in_threadgroup]],
                      uint g [[threadgroup_position_in_grid]], uint size [[threads_per_threadgroup]]) {
    scratch[t] = int(i) < n ? src[i] : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (t == 0) {
        float s = 0.0f;
        for (uint j = 0; j < size; ++j) s += scratch[j];
        out[g] = s;
    }
}

// ---- kernels of the execution-model tests (test_execution_model.py, test_model_based.py) ----

// out[i] = value for i < n (float32)
kernel void fill_f32(device float *out [[buffer(0)]], constant float &value [[buffer(1)]],
                     constant int &n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (int(i) < n) out[i] = value;
}

// out[i] = value for i < n (int32)
kernel void fill_i32(device int *out [[buffer(0)]], constant int &value [[buffer(1)]],
                     constant int &n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (int(i) < n) out[i] = value;
}

// Every thread runs a dependent integer loop of about `microseconds` * 700
// steps (MSL has no clock), then out[i] = value: a slow writer.
kernel void spin_fill_f32(device float *out [[buffer(0)]], constant float &value [[buffer(1)]],
                          constant int &n [[buffer(2)]], constant int &microseconds [[buffer(3)]],
                          uint i [[thread_position_in_grid]]) {
    uint x = uint(microseconds) + i;
    for (long k = 0; k < long(microseconds) * 700; ++k) x = x * 1103515245u + 12345u;
    if (x == 0x7fffffffu && i == 0) out[0] = -1.0f;  // keeps the loop
    else if (int(i) < n) out[i] = value;
}

// x[i] = a * x[i] + b for i < n
kernel void affine_f32(device float *x [[buffer(0)]], constant float &a [[buffer(1)]],
                       constant float &b [[buffer(2)]], constant int &n [[buffer(3)]],
                       uint i [[thread_position_in_grid]]) {
    if (int(i) < n) x[i] = a * x[i] + b;
}

// dst[i] = src[i] for i < n
kernel void copy_f32(device float *dst [[buffer(0)]], device const float *src [[buffer(1)]],
                     constant int &n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (int(i) < n) dst[i] = src[i];
}

// Writes and reads back every byte of the group's threadgroup memory (the
// command's shared_memory), then out[i] = its size in bytes (-1 if a byte
// read back wrong).
kernel void shared_fill(device int *out [[buffer(0)]], constant int &n [[buffer(1)]],
                        threadgroup uchar *smem [[threadgroup(0)]],
                        constant uint &nxs_shared_memory_size [[buffer(30)]],
                        uint i [[thread_position_in_grid]], uint t [[thread_position_in_threadgroup]],
                        uint g [[threadgroup_position_in_grid]], uint stride [[threads_per_threadgroup]]) {
    uint size = nxs_shared_memory_size;
    for (uint j = t; j < size; j += stride) smem[j] = uchar(j * 7 + g);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    int bad = 0;
    for (uint j = t; j < size; j += stride) {
        uint k = size - 1 - j;  // bytes another thread wrote
        bad |= smem[k] != uchar(k * 7 + g);
    }
    if (int(i) < n) out[i] = bad ? -1 : int(size);
}

// The CPU version calls a host function; here it does nothing.
kernel void callback(constant ulong &host_fn [[buffer(0)]], constant long &arg [[buffer(1)]]) {
}
