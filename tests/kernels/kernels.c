/* Test kernels for the CPU runtime. tests/kernels/kernels.cu holds the same
 * kernels, with the same names and arguments, for the CUDA runtime. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <nexus_cpu.h>
#include <time.h>

/* c[i] = a[i] + b[i] for i < n */
NXS_KERNEL_ARGS(vadd, 4);
NXS_KERNEL void vadd(void **args, const nxs_launch *l) {
    const float *a = NXS_BUFFER(args, 0, const float);
    const float *b = NXS_BUFFER(args, 1, const float);
    float *c = NXS_BUFFER(args, 2, float);
    int32_t n = NXS_SCALAR(args, 3, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) c[i] = a[i] + b[i];
}

/* y[i] = alpha * x[i] + y[i] for i < n (float64 and int64 scalars) */
NXS_KERNEL void axpy_f64(void **args, const nxs_launch *l) {
    double *y = NXS_BUFFER(args, 0, double);
    const double *x = NXS_BUFFER(args, 1, const double);
    double alpha = NXS_SCALAR(args, 2, double);
    int64_t n = NXS_SCALAR(args, 3, int64_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && (int64_t)i < n; ++i) y[i] = alpha * x[i] + y[i];
}

/* x[i] = x[i] * mul + add for i < n (uint32, uint64 and float32 scalars) */
NXS_KERNEL void affine_u32(void **args, const nxs_launch *l) {
    uint32_t *x = NXS_BUFFER(args, 0, uint32_t);
    uint32_t mul = NXS_SCALAR(args, 1, uint32_t);
    uint64_t add = NXS_SCALAR(args, 2, uint64_t);
    float bias = NXS_SCALAR(args, 3, float);
    int32_t n = NXS_SCALAR(args, 4, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i)
        x[i] = x[i] * mul + (uint32_t)add + (uint32_t)bias;
}

/* out[0] = sum of the 63 int32 scalars after it (the argument limit is 64) */
NXS_KERNEL void sum_args(void **args, const nxs_launch *l) {
    (void)l;
    int64_t *out = NXS_BUFFER(args, 0, int64_t);
    int64_t s = 0;
    for (int i = 1; i < 64; ++i) s += NXS_SCALAR(args, i, int32_t);
    out[0] = s;
}

/* out[(z*ny + y)*nx + x] = x + 1000*y + 1000000*z over a 3-D grid */
NXS_KERNEL void index3d(void **args, const nxs_launch *l) {
    int32_t *out = NXS_BUFFER(args, 0, int32_t);
    int32_t nx = NXS_SCALAR(args, 1, int32_t), ny = NXS_SCALAR(args, 2, int32_t), nz = NXS_SCALAR(args, 3, int32_t);
    for (size_t z = nxs_group_start(l, 2); z < nxs_group_end(l, 2); ++z)
        for (size_t y = nxs_group_start(l, 1); y < nxs_group_end(l, 1); ++y)
            for (size_t x = nxs_group_start(l, 0); x < nxs_group_end(l, 0); ++x)
                if ((int32_t)x < nx && (int32_t)y < ny && (int32_t)z < nz)
                    out[(z * ny + y) * nx + x] = (int32_t)(x + 1000 * y + 1000000 * z);
}

/* out[g] = sum of in[g*group .. ] staged through the group's scratch memory */
NXS_KERNEL void group_sum(void **args, const nxs_launch *l) {
    const float *in = NXS_BUFFER(args, 0, const float);
    float *out = NXS_BUFFER(args, 1, float);
    int32_t n = NXS_SCALAR(args, 2, int32_t);
    float *scratch = (float *)l->scratch;
    size_t start = nxs_group_start(l, 0), end = nxs_group_end(l, 0);
    size_t k = 0;
    for (size_t i = start; i < end; ++i, ++k) scratch[k] = (int32_t)i < n ? in[i] : 0.0f;
    float s = 0.0f;
    for (size_t j = 0; j < k; ++j) s += scratch[j];
    out[l->group_id[0]] = s;
}

/* ---- kernels of the execution-model tests (test_execution_model.py, test_model_based.py) ---- */

/* out[i] = value for i < n (float32) */
NXS_KERNEL_ARGS(fill_f32, 3);
NXS_KERNEL void fill_f32(void **args, const nxs_launch *l) {
    float *out = NXS_BUFFER(args, 0, float);
    float value = NXS_SCALAR(args, 1, float);
    int32_t n = NXS_SCALAR(args, 2, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) out[i] = value;
}

/* out[i] = value for i < n (int32) */
NXS_KERNEL_ARGS(fill_i32, 3);
NXS_KERNEL void fill_i32(void **args, const nxs_launch *l) {
    int32_t *out = NXS_BUFFER(args, 0, int32_t);
    int32_t value = NXS_SCALAR(args, 1, int32_t);
    int32_t n = NXS_SCALAR(args, 2, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) out[i] = value;
}

/* Each group busy-waits `microseconds` of wall-clock time, then writes
 * out[i] = value for its i < n: a slow writer for ordering tests. */
NXS_KERNEL_ARGS(spin_fill_f32, 4);
NXS_KERNEL void spin_fill_f32(void **args, const nxs_launch *l) {
    float *out = NXS_BUFFER(args, 0, float);
    float value = NXS_SCALAR(args, 1, float);
    int32_t n = NXS_SCALAR(args, 2, int32_t);
    int32_t us = NXS_SCALAR(args, 3, int32_t);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000L < (long)us);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) out[i] = value;
}

/* x[i] = a * x[i] + b for i < n */
NXS_KERNEL_ARGS(affine_f32, 4);
NXS_KERNEL void affine_f32(void **args, const nxs_launch *l) {
    float *x = NXS_BUFFER(args, 0, float);
    float a = NXS_SCALAR(args, 1, float);
    float b = NXS_SCALAR(args, 2, float);
    int32_t n = NXS_SCALAR(args, 3, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) x[i] = a * x[i] + b;
}

/* dst[i] = src[i] for i < n */
NXS_KERNEL_ARGS(copy_f32, 3);
NXS_KERNEL void copy_f32(void **args, const nxs_launch *l) {
    float *dst = NXS_BUFFER(args, 0, float);
    const float *src = NXS_BUFFER(args, 1, const float);
    int32_t n = NXS_SCALAR(args, 2, int32_t);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) dst[i] = src[i];
}

/* Writes and reads back every byte of the group's shared (scratch) memory,
 * then out[i] = its size in bytes for the group's i < n (-1 if a byte read
 * back wrong). */
NXS_KERNEL_ARGS(shared_fill, 2);
NXS_KERNEL void shared_fill(void **args, const nxs_launch *l) {
    int32_t *out = NXS_BUFFER(args, 0, int32_t);
    int32_t n = NXS_SCALAR(args, 1, int32_t);
    unsigned char *s = (unsigned char *)l->scratch;
    size_t size = s ? (size_t)l->scratch_size : 0;
    for (size_t j = 0; j < size; ++j) s[j] = (unsigned char)(j * 7 + l->group_id[0]);
    int32_t bad = 0;
    for (size_t j = 0; j < size; ++j) bad |= s[size - 1 - j] != (unsigned char)((size - 1 - j) * 7 + l->group_id[0]);
    size_t end = nxs_group_end(l, 0);
    for (size_t i = nxs_group_start(l, 0); i < end && i < (size_t)n; ++i) out[i] = bad ? -1 : (int32_t)size;
}

/* Group 0 calls the C function at address `fn` (void fn(int64_t)) with `arg`:
 * lets a test call back into Python from inside a kernel. */
NXS_KERNEL_ARGS(callback, 2);
NXS_KERNEL void callback(void **args, const nxs_launch *l) {
    typedef void (*callback_fn)(int64_t);
    uint64_t fn = NXS_SCALAR(args, 0, uint64_t);
    int64_t arg = NXS_SCALAR(args, 1, int64_t);
    if (l->group_id[0] == 0 && l->group_id[1] == 0 && l->group_id[2] == 0 && fn != 0)
        ((callback_fn)(uintptr_t)fn)(arg);
}
