// Test kernels for the HIP runtime: same names and arguments as kernels.c
// (kernels.cu in HIP C++). AMD-only code is under __AMDGCN__ (hiprtc's
// device compile); the rest of the time this file is compiled through the
// HIP-on-CUDA test double (tests/support/hip_on_cuda.c), whose hiprtc is
// NVRTC, so the NVIDIA forms (PTX asm) stay beside the AMD ones.
#include <hip/hip_runtime.h>

extern "C" __global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void axpy_f64(double *y, const double *x, double alpha, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = alpha * x[i] + y[i];
}

extern "C" __global__ void affine_u32(unsigned *x, unsigned mul, unsigned long long add, float bias, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * mul + (unsigned)add + (unsigned)bias;
}

#define A(k) int a##k
extern "C" __global__ void sum_args(long long *out,
    A(1), A(2), A(3), A(4), A(5), A(6), A(7), A(8), A(9), A(10), A(11), A(12), A(13), A(14), A(15), A(16),
    A(17), A(18), A(19), A(20), A(21), A(22), A(23), A(24), A(25), A(26), A(27), A(28), A(29), A(30), A(31), A(32),
    A(33), A(34), A(35), A(36), A(37), A(38), A(39), A(40), A(41), A(42), A(43), A(44), A(45), A(46), A(47), A(48),
    A(49), A(50), A(51), A(52), A(53), A(54), A(55), A(56), A(57), A(58), A(59), A(60), A(61), A(62), A(63)) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int v[63] = {a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21,
                 a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35, a36, a37, a38, a39, a40, a41,
                 a42, a43, a44, a45, a46, a47, a48, a49, a50, a51, a52, a53, a54, a55, a56, a57, a58, a59, a60, a61,
                 a62, a63};
    long long s = 0;
    for (int i = 0; i < 63; ++i) s += v[i];
    out[0] = s;
}

extern "C" __global__ void index3d(int *out, int nx, int ny, int nz) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z * blockDim.z + threadIdx.z;
    if (x < nx && y < ny && z < nz) out[(z * ny + y) * nx + x] = x + 1000 * y + 1000000 * z;
}

extern "C" __global__ void group_sum(const float *in, float *out, int n) {
    extern __shared__ float scratch[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    scratch[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned j = 0; j < blockDim.x; ++j) s += scratch[j];
        out[blockIdx.x] = s;
    }
}

// ---- kernels of the execution-model tests (test_execution_model.py, test_model_based.py) ----

extern "C" __global__ void fill_f32(float *out, float value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}

extern "C" __global__ void fill_i32(int *out, int value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}

// Every thread busy-waits `microseconds` of wall-clock time (the GPU's
// global nanosecond timer), then writes out[i] = value: a slow writer.
extern "C" __global__ void spin_fill_f32(float *out, float value, int n, int microseconds) {
#ifdef __AMDGCN__
    // The constant-rate wall clock: 100 MHz on CDNA and RDNA parts
    // (hipDeviceAttributeWallClockRate), so 100 ticks per microsecond.
    unsigned long long start = wall_clock64(), now;
    do {
        now = wall_clock64();
    } while (now - start < (unsigned long long)microseconds * 100ull);
#else
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < (unsigned long long)microseconds * 1000ull);
#endif
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}

extern "C" __global__ void affine_f32(float *x, float a, float b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = a * x[i] + b;
}

extern "C" __global__ void copy_f32(float *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = src[i];
}

// Writes and reads back every byte of the block's dynamic shared memory,
// then out[i] = its size in bytes (-1 if a byte read back wrong).
extern "C" __global__ void shared_fill(int *out, int n) {
    extern __shared__ unsigned char smem[];
    unsigned size;
#ifdef __AMDGCN__
    // The dispatch packet's group_segment_size (byte 28) is the group's
    // whole LDS: the static part is what the compiler allotted.
    const unsigned char *packet = (const unsigned char *)__builtin_amdgcn_dispatch_ptr();
    size = *(const unsigned *)(packet + 28) - __builtin_amdgcn_groupstaticsize();
#else
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(size));
#endif
    for (unsigned j = threadIdx.x; j < size; j += blockDim.x) smem[j] = (unsigned char)(j * 7 + blockIdx.x);
    __syncthreads();
    int bad = 0;
    for (unsigned j = threadIdx.x; j < size; j += blockDim.x) {
        unsigned k = size - 1 - j;  // bytes another thread wrote
        bad |= smem[k] != (unsigned char)(k * 7 + blockIdx.x);
    }
    bad = __syncthreads_or(bad);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = bad ? -1 : (int)size;
}

// The CPU version calls a host function; on the GPU it does nothing.
extern "C" __global__ void callback(unsigned long long fn, long long arg) {
    (void)fn;
    (void)arg;
}
