// Test kernels for the OpenCL runtime: same names and arguments as kernels.c
// and kernels.cu. nexus binds each `__local` pointer to the command's
// shared_memory and a parameter named `nxs_shared_memory_size` to its size.

// c[i] = a[i] + b[i] for i < n
__kernel void vadd(__global const float *a, __global const float *b, __global float *c, int n) {
    int i = get_global_id(0);
    if (i < n) c[i] = a[i] + b[i];
}

// y[i] = alpha * x[i] + y[i] for i < n (float64 and int64 scalars)
__kernel void axpy_f64(__global double *y, __global const double *x, double alpha, long n) {
    long i = get_global_id(0);
    if (i < n) y[i] = alpha * x[i] + y[i];
}

// x[i] = x[i] * mul + add for i < n (uint32, uint64 and float32 scalars)
__kernel void affine_u32(__global uint *x, uint mul, ulong add, float bias, int n) {
    int i = get_global_id(0);
    if (i < n) x[i] = x[i] * mul + (uint)add + (uint)bias;
}

// out[0] = sum of the 63 int32 scalars after it (the argument limit is 64)
#define A(k) int a##k
__kernel void sum_args(__global long *out,
    A(1), A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), A(13), A(14), A(15), A(16),
    A(17), A(18), A(19), A(20), A(21), A(22), A(23), A(24), A(25), A(26), A(27), A(28), A(29), A(30), A(31), A(32),
    A(33), A(34), A(35), A(36), A(37), A(38), A(39), A(40), A(41), A(42), A(43), A(44), A(45), A(46), A(47), A(48),
    A(49), A(50), A(51), A(52), A(53), A(54), A(55), A(56), A(57), A(58), A(59), A(60), A(61), A(62), A(63)) {
    if (get_global_id(0) != 0) return;
    int v[63] = {a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21,
                 a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35, a36, a37, a38, a39, a40, a41,
                 a42, a43, a44, a45, a46, a47, a48, a49, a50, a51, a52, a53, a54, a55, a56, a57, a58, a59, a60, a61,
                 a62, a63};
    long s = 0;
    for (int i = 0; i < 63; ++i) s += v[i];
    out[0] = s;
}

// out[(z*ny + y)*nx + x] = x + 1000*y + 1000000*z over a 3-D grid
__kernel void index3d(__global int *out, int nx, int ny, int nz) {
    int x = get_global_id(0), y = get_global_id(1), z = get_global_id(2);
    if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = x + 1000 * y + 1000000 * z;
}

// out[g] = sum of in[g*group .. ] staged through the group's local memory
__kernel void group_sum(__global const float *in, __global float *out, int n, __local float *scratch) {
    int i = get_global_id(0);
    int t = get_local_id(0);
    scratch[t] = i < n ? in[i] : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (t == 0) {
        float s = 0.0f;
        for (uint j = 0; j < get_local_size(0); ++j) s += scratch[j];
        out[get_group_id(0)] = s;
    }
}

// ---- kernels of the execution-model tests (test_execution_model.py, test_model_based.py) ----

// out[i] = value for i < n (float32)
__kernel void fill_f32(__global float *out, float value, int n) {
    int i = get_global_id(0);
    if (i < n) out[i] = value;
}

// out[i] = value for i < n (int32)
__kernel void fill_i32(__global int *out, int value, int n) {
    int i = get_global_id(0);
    if (i < n) out[i] = value;
}

// Work-item 0 of each group busy-waits about `microseconds` (OpenCL C has
// no clock: a dependent chain of about 700 multiply-adds per microsecond
// on a CPU, longer elsewhere), then every work-item writes out[i] = value:
// a slow writer. (One spinner per group: CPU devices run a group's
// work-items one after another.)
__kernel void spin_fill_f32(__global float *out, float value, int n, int microseconds) {
    uint x = (uint)microseconds;
    if (get_local_id(0) == 0) {
        for (long k = 0; k < (long)microseconds * 700; ++k) x = x * 1103515245u + 12345u;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    int i = get_global_id(0);
    if (x == 0x7fffffffu && i == 0) out[0] = -1.0f;  // keeps the loop
    else if (i < n) out[i] = value;
}

// x[i] = a * x[i] + b for i < n
__kernel void affine_f32(__global float *x, float a, float b, int n) {
    int i = get_global_id(0);
    if (i < n) x[i] = a * x[i] + b;
}

// dst[i] = src[i] for i < n
__kernel void copy_f32(__global float *dst, __global const float *src, int n) {
    int i = get_global_id(0);
    if (i < n) dst[i] = src[i];
}

// Writes and reads back every byte of the group's local memory (the
// command's shared_memory), then out[i] = its size in bytes (-1 if a byte
// read back wrong).
__kernel void shared_fill(__global int *out, int n, __local uchar *smem, uint nxs_shared_memory_size) {
    uint size = nxs_shared_memory_size;
    uint t = get_local_id(0), g = get_group_id(0), step = get_local_size(0);
    for (uint j = t; j < size; j += step) smem[j] = (uchar)(j * 7 + g);
    barrier(CLK_LOCAL_MEM_FENCE);
    int bad = 0;
    for (uint j = t; j < size; j += step) {
        uint k = size - 1 - j;  // bytes another work-item wrote
        bad |= smem[k] != (uchar)(k * 7 + g);
    }
    int i = get_global_id(0);
    if (i < n) out[i] = bad ? -1 : (int)size;
}

// The CPU version calls a host function; here it does nothing.
__kernel void callback(ulong fn, long arg) {
}
