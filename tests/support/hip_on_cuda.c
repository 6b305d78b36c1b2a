/*
 * A HIP-on-CUDA test double: the subset of the HIP runtime and hiprtc API
 * that nexus's `hip` backend calls, implemented on the CUDA driver API and
 * NVRTC, so every path of the HIP runtime can run on an NVIDIA GPU.
 *
 *   NEXUS_HIP_LIBRARY=$PWD/libhip_on_cuda.so python -m pytest tests
 *
 * Built by tests/support/build_hip_on_cuda.sh with gcc alone: libcuda.so.1
 * and NVRTC are opened with dlopen at run time, so no CUDA header or
 * library is needed to build it. HIP's error codes, enums and flags are the
 * ones of the HIP headers (ROCm 6: hipMemoryTypeHost/Device are 1/2, and
 * hipRuntimeGetVersion says 6.2); most equal CUDA's numbers, and the few
 * that differ (device attributes) are translated.
 *
 * What stands in for what:
 * - code objects are PTX (hiprtcGetCode returns NVRTC's PTX, which
 *   hipModuleLoadData hands to cuModuleLoadData);
 * - hiprtc is NVRTC: `--offload-arch=gfx...` becomes the GPU's own
 *   `--gpu-architecture=compute_XY`, `-O<n>` is dropped, and
 *   <hip/hip_runtime.h> is supplied in memory (HIP C++ kernels that use
 *   only what CUDA C++ also has compile unchanged);
 * - the device reports the gfx architecture NEXUS_HIP_DOUBLE_ARCH (default
 *   "gfx90a") through hipGetDeviceProperties, so the device database
 *   lookup works; nothing else of hipDeviceProp_t is filled;
 * - HIP's per-thread current device maps to the device's primary context,
 *   made current on any thread that calls in without one.
 *
 * It is a test double, not a HIP implementation: only what nexus calls is
 * here, and only with the arguments nexus passes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef int hipError_t;
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUgraph;
typedef void *CUgraphExec;
typedef void *CUgraphNode;
typedef void (*hostfn_t)(void *);
typedef int nvrtcResult;
typedef void *nvrtcProgram;

enum {
    hipSuccess = 0,
    hipErrorInvalidValue = 1,
    hipErrorNotInitialized = 3,
    hipErrorNoDevice = 100,
    hipErrorInvalidDevice = 101,
    hipErrorNotSupported = 801,
};

typedef struct {
    unsigned x, y, z;
} dim3;

/* hipKernelNodeParams (HIP's field order). */
typedef struct {
    dim3 blockDim;
    void **extra;
    void *func;
    dim3 gridDim;
    void **kernelParams;
    unsigned sharedMemBytes;
} hipKernelNodeParams;

/* CUDA_KERNEL_NODE_PARAMS_v2 (v1 is its prefix up to `extra`). */
typedef struct {
    CUfunction func;
    unsigned gridDimX, gridDimY, gridDimZ;
    unsigned blockDimX, blockDimY, blockDimZ;
    unsigned sharedMemBytes;
    void **kernelParams;
    void **extra;
    void *kern;
    CUcontext ctx;
} CudaKernelNodeParams;

/* ---- the CUDA driver and NVRTC, opened at run time ---------------------- */

#define CU_FUNCTIONS(X)                                                                    \
    X(cuInit, CUresult, (unsigned))                                                        \
    X(cuDriverGetVersion, CUresult, (int *))                                               \
    X(cuGetErrorName, CUresult, (CUresult, const char **))                                 \
    X(cuDeviceGetCount, CUresult, (int *))                                                 \
    X(cuDeviceGet, CUresult, (int *, int))                                                 \
    X(cuDeviceGetName, CUresult, (char *, int, int))                                       \
    X(cuDeviceTotalMem_v2, CUresult, (size_t *, int))                                      \
    X(cuDeviceGetAttribute, CUresult, (int *, int, int))                                   \
    X(cuDeviceGetPCIBusId, CUresult, (char *, int, int))                                   \
    X(cuDevicePrimaryCtxRetain, CUresult, (CUcontext *, int))                              \
    X(cuCtxSetCurrent, CUresult, (CUcontext))                                              \
    X(cuCtxGetCurrent, CUresult, (CUcontext *))                                            \
    X(cuCtxSynchronize, CUresult, (void))                                                  \
    X(cuMemAlloc_v2, CUresult, (CUdeviceptr *, size_t))                                    \
    X(cuMemFree_v2, CUresult, (CUdeviceptr))                                               \
    X(cuMemcpyHtoDAsync_v2, CUresult, (CUdeviceptr, const void *, size_t, CUstream))       \
    X(cuMemcpyDtoHAsync_v2, CUresult, (void *, CUdeviceptr, size_t, CUstream))            \
    X(cuMemcpyDtoDAsync_v2, CUresult, (CUdeviceptr, CUdeviceptr, size_t, CUstream))       \
    X(cuMemsetD8Async, CUresult, (CUdeviceptr, unsigned char, size_t, CUstream))           \
    X(cuMemsetD16Async, CUresult, (CUdeviceptr, unsigned short, size_t, CUstream))         \
    X(cuMemsetD32Async, CUresult, (CUdeviceptr, unsigned, size_t, CUstream))               \
    X(cuMemsetD2D8Async, CUresult,                                                         \
      (CUdeviceptr, size_t, unsigned char, size_t, size_t, CUstream))                      \
    X(cuMemHostAlloc, CUresult, (void **, size_t, unsigned))                               \
    X(cuMemFreeHost, CUresult, (void *))                                                   \
    X(cuMemHostGetDevicePointer_v2, CUresult, (CUdeviceptr *, void *, unsigned))           \
    X(cuPointerGetAttribute, CUresult, (void *, int, CUdeviceptr))                         \
    X(cuStreamCreate, CUresult, (CUstream *, unsigned))                                    \
    X(cuStreamDestroy_v2, CUresult, (CUstream))                                            \
    X(cuStreamSynchronize, CUresult, (CUstream))                                           \
    X(cuStreamQuery, CUresult, (CUstream))                                                 \
    X(cuEventCreate, CUresult, (CUevent *, unsigned))                                      \
    X(cuEventRecord, CUresult, (CUevent, CUstream))                                        \
    X(cuEventQuery, CUresult, (CUevent))                                                   \
    X(cuEventElapsedTime, CUresult, (float *, CUevent, CUevent))                           \
    X(cuEventDestroy_v2, CUresult, (CUevent))                                              \
    X(cuModuleLoadData, CUresult, (CUmodule *, const void *))                              \
    X(cuModuleUnload, CUresult, (CUmodule))                                                \
    X(cuModuleGetFunction, CUresult, (CUfunction *, CUmodule, const char *))               \
    X(cuFuncGetAttribute, CUresult, (int *, int, CUfunction))                              \
    X(cuFuncSetAttribute, CUresult, (CUfunction, int, int))                                \
    X(cuLaunchKernel, CUresult,                                                            \
      (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,   \
       CUstream, void **, void **))                                                        \
    X(cuLaunchHostFunc, CUresult, (CUstream, hostfn_t, void *))                            \
    X(cuGraphCreate, CUresult, (CUgraph *, unsigned))                                      \
    X(cuGraphInstantiateWithFlags, CUresult, (CUgraphExec *, CUgraph, unsigned long long)) \
    X(cuGraphLaunch, CUresult, (CUgraphExec, CUstream))                                    \
    X(cuGraphExecDestroy, CUresult, (CUgraphExec))                                         \
    X(cuGraphDestroy, CUresult, (CUgraph))

#define NVRTC_FUNCTIONS(X)                                                                    \
    X(nvrtcVersion, nvrtcResult, (int *, int *))                                              \
    X(nvrtcGetErrorString, const char *, (nvrtcResult))                                       \
    X(nvrtcCreateProgram, nvrtcResult,                                                        \
      (nvrtcProgram *, const char *, const char *, int, const char *const *,                  \
       const char *const *))                                                                  \
    X(nvrtcDestroyProgram, nvrtcResult, (nvrtcProgram *))                                     \
    X(nvrtcCompileProgram, nvrtcResult, (nvrtcProgram, int, const char *const *))            \
    X(nvrtcGetProgramLogSize, nvrtcResult, (nvrtcProgram, size_t *))                          \
    X(nvrtcGetProgramLog, nvrtcResult, (nvrtcProgram, char *))                                \
    X(nvrtcGetPTXSize, nvrtcResult, (nvrtcProgram, size_t *))                                 \
    X(nvrtcGetPTX, nvrtcResult, (nvrtcProgram, char *))

#define DECLARE(name, ret, args) static ret(*p_##name) args;
CU_FUNCTIONS(DECLARE)
NVRTC_FUNCTIONS(DECLARE)
static CUresult (*p_cuDeviceGetUuid)(unsigned char *, int);
static CUresult (*p_cuFuncLoad)(CUfunction);
static CUresult (*p_cuStreamWriteValue64)(CUstream, CUdeviceptr, unsigned long long, unsigned);
static CUresult (*p_cuStreamWaitValue64)(CUstream, CUdeviceptr, unsigned long long, unsigned);
static CUresult (*p_cuGraphAddKernelNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                          const CudaKernelNodeParams *);

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static int cuda_loaded; /* 1: every required entry point resolved */
static pthread_once_t nvrtc_once = PTHREAD_ONCE_INIT;
static int nvrtc_loaded;

static void *first_symbol(void *lib, const char *a, const char *b) {
    void *f = dlsym(lib, a);
    return f || !b ? f : dlsym(lib, b);
}

static void load_cuda(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
#define RESOLVE(name, ret, args)                                                  \
    p_##name = (ret(*) args)dlsym(lib, #name);                                    \
    if (!p_##name) {                                                              \
        fprintf(stderr, "hip_on_cuda: libcuda lacks %s\n", #name);                \
        return;                                                                   \
    }
    CU_FUNCTIONS(RESOLVE)
    p_cuDeviceGetUuid = first_symbol(lib, "cuDeviceGetUuid_v2", "cuDeviceGetUuid");
    p_cuFuncLoad = first_symbol(lib, "cuFuncLoad", NULL);
    p_cuStreamWriteValue64 = first_symbol(lib, "cuStreamWriteValue64_v2", "cuStreamWriteValue64");
    p_cuStreamWaitValue64 = first_symbol(lib, "cuStreamWaitValue64_v2", "cuStreamWaitValue64");
    p_cuGraphAddKernelNode = first_symbol(lib, "cuGraphAddKernelNode_v2", "cuGraphAddKernelNode");
    cuda_loaded = 1;
}

static void load_nvrtc(void) {
    const char *names[] = {getenv("NEXUS_NVRTC"),
                           "libnvrtc.so",
                           "libnvrtc.so.13",
                           "libnvrtc.so.12",
                           "/usr/local/cuda/lib64/libnvrtc.so",
                           "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so",
                           "/usr/local/cuda/targets/sbsa-linux/lib/libnvrtc.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !lib; i++)
        if (names[i]) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
#undef RESOLVE
#define RESOLVE(name, ret, args)                                                  \
    p_##name = (ret(*) args)dlsym(lib, #name);                                    \
    if (!p_##name) return;
    NVRTC_FUNCTIONS(RESOLVE)
    nvrtc_loaded = 1;
}

static int have_cuda(void) {
    pthread_once(&cuda_once, load_cuda);
    return cuda_loaded;
}

/* ---- devices and the per-thread current device --------------------------- */

#define MAX_DEVICES 64
static CUcontext primary[MAX_DEVICES];
static int device_count = -1;
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int current_device;

static CUcontext primary_of(int dev) {
    if (dev < 0 || dev >= MAX_DEVICES) return NULL;
    pthread_mutex_lock(&ctx_lock);
    if (!primary[dev]) {
        CUcontext c = NULL;
        if (p_cuDevicePrimaryCtxRetain(&c, dev) == 0) primary[dev] = c;
    }
    CUcontext c = primary[dev];
    pthread_mutex_unlock(&ctx_lock);
    return c;
}

/* Makes the current device's primary context current on this thread. */
static hipError_t bind(void) {
    if (!have_cuda()) return hipErrorNotInitialized;
    CUcontext want = primary_of(current_device), cur = NULL;
    if (!want) return hipErrorInvalidDevice;
    if (p_cuCtxGetCurrent(&cur) == 0 && cur == want) return hipSuccess;
    return p_cuCtxSetCurrent(want);
}

#define BIND()                             \
    do {                                   \
        hipError_t bound_ = bind();        \
        if (bound_ != hipSuccess) return bound_; \
    } while (0)

EXPORT hipError_t hipInit(unsigned flags) {
    if (!have_cuda()) return hipErrorNoDevice;
    CUresult r = p_cuInit(flags);
    if (r != 0) return r;
    int n = 0;
    if (p_cuDeviceGetCount(&n) != 0 || n == 0) return hipErrorNoDevice;
    device_count = n < MAX_DEVICES ? n : MAX_DEVICES;
    return hipSuccess;
}

EXPORT hipError_t hipDriverGetVersion(int *v) {
    if (!have_cuda()) return hipErrorNotInitialized;
    return p_cuDriverGetVersion(v);
}

/* HIP_VERSION of ROCm 6.2.0: major * 10^7 + minor * 10^5 + patch. */
EXPORT hipError_t hipRuntimeGetVersion(int *v) {
    *v = 60200000;
    return hipSuccess;
}

EXPORT const char *hipGetErrorName(hipError_t e) {
    switch (e) {
    case 0: return "hipSuccess";
    case 1: return "hipErrorInvalidValue";
    case 2: return "hipErrorOutOfMemory";
    case 3: return "hipErrorNotInitialized";
    case 100: return "hipErrorNoDevice";
    case 101: return "hipErrorInvalidDevice";
    case 200: return "hipErrorInvalidImage";
    case 201: return "hipErrorInvalidContext";
    case 209: return "hipErrorNoBinaryForGpu";
    case 218: return "hipErrorInvalidKernelFile";
    case 400: return "hipErrorInvalidHandle";
    case 500: return "hipErrorNotFound";
    case 600: return "hipErrorNotReady";
    case 700: return "hipErrorIllegalAddress";
    case 701: return "hipErrorLaunchOutOfResources";
    case 719: return "hipErrorLaunchFailure";
    case 801: return "hipErrorNotSupported";
    default: {
        const char *name = NULL;
        if (have_cuda() && p_cuGetErrorName(e, &name) == 0 && name) return name;
        return "hipErrorUnknown";
    }
    }
}

EXPORT const char *hipGetErrorString(hipError_t e) { return hipGetErrorName(e); }

EXPORT hipError_t hipGetDeviceCount(int *n) {
    if (!have_cuda() || device_count <= 0) {
        *n = 0;
        return hipErrorNoDevice;
    }
    *n = device_count;
    return hipSuccess;
}

EXPORT hipError_t hipDeviceGet(int *dev, int ordinal) {
    if (!have_cuda()) return hipErrorNotInitialized;
    return p_cuDeviceGet(dev, ordinal);
}

EXPORT hipError_t hipDeviceGetName(char *name, int len, int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    return p_cuDeviceGetName(name, len, dev);
}

EXPORT hipError_t hipDeviceTotalMem(size_t *bytes, int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    return p_cuDeviceTotalMem_v2(bytes, dev);
}

/* hipDeviceAttribute_t -> CUdevice_attribute (-1: answered here). */
static int cuda_attribute(int hip) {
    switch (hip) {
    case 2: return 40;   /* AsyncEngineCount */
    case 3: return 19;   /* CanMapHostMemory */
    case 5: return 13;   /* ClockRate */
    case 16: return 18;  /* Integrated */
    case 19: return 38;  /* L2CacheSize */
    case 23: return 75;  /* ComputeCapabilityMajor */
    case 24: return 83;  /* ManagedMemory */
    case 26: return 2;   /* MaxBlockDimX */
    case 27: return 3;
    case 28: return 4;
    case 29: return 5;   /* MaxGridDimX */
    case 30: return 6;
    case 31: return 7;
    case 56: return 1;   /* MaxThreadsPerBlock */
    case 57: return 39;  /* MaxThreadsPerMultiProcessor */
    case 59: return 37;  /* MemoryBusWidth */
    case 60: return 36;  /* MemoryClockRate */
    case 61: return 76;  /* ComputeCapabilityMinor */
    case 63: return 16;  /* MultiprocessorCount */
    case 67: return 33;  /* PciBusId */
    case 68: return 34;  /* PciDeviceId */
    case 69: return 50;  /* PciDomainID */
    case 71: return 12;  /* MaxRegistersPerBlock */
    case 72: return 82;  /* MaxRegistersPerMultiprocessor */
    case 74: return 8;   /* MaxSharedMemoryPerBlock */
    case 75: return 97;  /* SharedMemPerBlockOptin */
    case 76: return 81;  /* SharedMemPerMultiprocessor */
    case 83: return 9;   /* TotalConstantMemory */
    case 85: return 41;  /* UnifiedAddressing */
    case 87: return 10;  /* WarpSize */
    case 10000: return 13; /* ClockInstructionRate */
    case 10002: return 81; /* MaxSharedMemoryPerMultiprocessor */
    case 10015: return 16; /* PhysicalMultiProcessorCount */
    default: return -1;
    }
}

EXPORT hipError_t hipDeviceGetAttribute(int *value, int attr, int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    int cu = cuda_attribute(attr);
    if (cu >= 0) return p_cuDeviceGetAttribute(value, cu, dev);
    switch (attr) {
    case 10011: /* IsLargeBar */
    case 10016: /* FineGrainSupport */
        *value = 1;
        return hipSuccess;
    case 10012: /* AsicRevision */
        *value = 0;
        return hipSuccess;
    case 10013: { /* CanUseStreamWaitValue: CUDA's 64-bit stream memory operations */
        int a = 0, b = 0;
        p_cuDeviceGetAttribute(&a, 122, dev);
        p_cuDeviceGetAttribute(&b, 93, dev);
        *value = (a || b) && p_cuStreamWaitValue64 && p_cuStreamWriteValue64;
        return hipSuccess;
    }
    default:
        return hipErrorInvalidValue;
    }
}

EXPORT hipError_t hipDeviceGetPCIBusId(char *id, int len, int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    return p_cuDeviceGetPCIBusId(id, len, dev);
}

EXPORT hipError_t hipDeviceGetUuid(unsigned char *uuid, int dev) {
    if (!have_cuda() || !p_cuDeviceGetUuid) return hipErrorNotSupported;
    return p_cuDeviceGetUuid(uuid, dev);
}

/* Not hipDeviceProp_t: the name at byte 0 and the gfx name at byte 1024,
 * which is all nexus reads (it scans for the gfx name). The caller's
 * buffer must hold 1280 bytes (nexus passes 64 KiB). */
static hipError_t device_properties(void *prop, int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    char *p = prop;
    memset(p, 0, 1280);
    p_cuDeviceGetName(p, 255, dev);
    const char *arch = getenv("NEXUS_HIP_DOUBLE_ARCH");
    snprintf(p + 1024, 256, "%s:sramecc+:xnack-", arch && *arch ? arch : "gfx90a");
    return hipSuccess;
}

EXPORT hipError_t hipGetDeviceProperties(void *prop, int dev) { return device_properties(prop, dev); }
EXPORT hipError_t hipGetDevicePropertiesR0600(void *prop, int dev) { return device_properties(prop, dev); }

EXPORT hipError_t hipSetDevice(int dev) {
    if (!have_cuda()) return hipErrorNotInitialized;
    if (dev < 0 || dev >= device_count) return hipErrorInvalidDevice;
    current_device = dev;
    return bind();
}

EXPORT hipError_t hipGetDevice(int *dev) {
    *dev = current_device;
    return hipSuccess;
}

EXPORT hipError_t hipDeviceSynchronize(void) {
    BIND();
    return p_cuCtxSynchronize();
}

/* ---- memory ------------------------------------------------------------- */

EXPORT hipError_t hipMalloc(void **ptr, size_t size) {
    BIND();
    CUdeviceptr d = 0;
    CUresult r = p_cuMemAlloc_v2(&d, size);
    *ptr = (void *)(uintptr_t)d;
    return r;
}

EXPORT hipError_t hipFree(void *ptr) {
    BIND();
    return p_cuMemFree_v2((CUdeviceptr)(uintptr_t)ptr);
}

EXPORT hipError_t hipMemcpyHtoDAsync(void *dst, void *src, size_t n, CUstream s) {
    BIND();
    return p_cuMemcpyHtoDAsync_v2((CUdeviceptr)(uintptr_t)dst, src, n, s);
}

EXPORT hipError_t hipMemcpyDtoHAsync(void *dst, void *src, size_t n, CUstream s) {
    BIND();
    return p_cuMemcpyDtoHAsync_v2(dst, (CUdeviceptr)(uintptr_t)src, n, s);
}

EXPORT hipError_t hipMemcpyDtoDAsync(void *dst, void *src, size_t n, CUstream s) {
    BIND();
    return p_cuMemcpyDtoDAsync_v2((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n, s);
}

EXPORT hipError_t hipMemsetD8Async(void *dst, unsigned char v, size_t n, CUstream s) {
    BIND();
    return p_cuMemsetD8Async((CUdeviceptr)(uintptr_t)dst, v, n, s);
}

EXPORT hipError_t hipMemsetD16Async(void *dst, unsigned short v, size_t n, CUstream s) {
    BIND();
    return p_cuMemsetD16Async((CUdeviceptr)(uintptr_t)dst, v, n, s);
}

EXPORT hipError_t hipMemsetD32Async(void *dst, int v, size_t n, CUstream s) {
    BIND();
    return p_cuMemsetD32Async((CUdeviceptr)(uintptr_t)dst, (unsigned)v, n, s);
}

EXPORT hipError_t hipMemset2DAsync(void *dst, size_t pitch, int v, size_t width, size_t height,
                                   CUstream s) {
    BIND();
    return p_cuMemsetD2D8Async((CUdeviceptr)(uintptr_t)dst, pitch, (unsigned char)v, width, height, s);
}

/* hipHostMallocPortable (1) and hipHostMallocMapped (2) are CUDA's
 * CU_MEMHOSTALLOC_PORTABLE and CU_MEMHOSTALLOC_DEVICEMAP. */
EXPORT hipError_t hipHostMalloc(void **ptr, size_t size, unsigned flags) {
    BIND();
    return p_cuMemHostAlloc(ptr, size, flags & 3);
}

EXPORT hipError_t hipHostFree(void *ptr) {
    BIND();
    return p_cuMemFreeHost(ptr);
}

EXPORT hipError_t hipHostGetDevicePointer(void **dev, void *host, unsigned flags) {
    BIND();
    CUdeviceptr d = 0;
    CUresult r = p_cuMemHostGetDevicePointer_v2(&d, host, flags);
    *dev = (void *)(uintptr_t)d;
    return r;
}

/* hipPointer_attribute numbers are CUDA's; the memory types nexus reads
 * (host 1, device 2) are ROCm 6's and CUDA's alike. */
EXPORT hipError_t hipPointerGetAttribute(void *data, int attr, void *ptr) {
    BIND();
    return p_cuPointerGetAttribute(data, attr, (CUdeviceptr)(uintptr_t)ptr);
}

/* ---- streams and events -------------------------------------------------- */

EXPORT hipError_t hipStreamCreateWithFlags(CUstream *s, unsigned flags) {
    BIND();
    return p_cuStreamCreate(s, flags);
}

EXPORT hipError_t hipStreamDestroy(CUstream s) {
    BIND();
    return p_cuStreamDestroy_v2(s);
}

EXPORT hipError_t hipStreamSynchronize(CUstream s) {
    BIND();
    return p_cuStreamSynchronize(s);
}

EXPORT hipError_t hipStreamQuery(CUstream s) {
    BIND();
    return p_cuStreamQuery(s);
}

EXPORT hipError_t hipEventCreateWithFlags(CUevent *e, unsigned flags) {
    BIND();
    return p_cuEventCreate(e, flags);
}

EXPORT hipError_t hipEventRecord(CUevent e, CUstream s) {
    BIND();
    return p_cuEventRecord(e, s);
}

EXPORT hipError_t hipEventQuery(CUevent e) {
    BIND();
    return p_cuEventQuery(e);
}

EXPORT hipError_t hipEventElapsedTime(float *ms, CUevent start, CUevent end) {
    BIND();
    return p_cuEventElapsedTime(ms, start, end);
}

EXPORT hipError_t hipEventDestroy(CUevent e) {
    BIND();
    return p_cuEventDestroy_v2(e);
}

/* hipStreamWaitValueGte/Eq/And/Nor (0..3) are CUDA's GEQ/EQ/AND/NOR; only
 * a full mask has a CUDA equivalent. */
EXPORT hipError_t hipStreamWaitValue64(CUstream s, void *ptr, unsigned long long value,
                                       unsigned flags, unsigned long long mask) {
    BIND();
    if (!p_cuStreamWaitValue64) return hipErrorNotSupported;
    if (mask != ~0ull) return hipErrorInvalidValue;
    return p_cuStreamWaitValue64(s, (CUdeviceptr)(uintptr_t)ptr, value, flags);
}

EXPORT hipError_t hipStreamWriteValue64(CUstream s, void *ptr, unsigned long long value,
                                        unsigned flags) {
    BIND();
    if (!p_cuStreamWriteValue64) return hipErrorNotSupported;
    (void)flags; /* hipStreamWriteValueDefault */
    return p_cuStreamWriteValue64(s, (CUdeviceptr)(uintptr_t)ptr, value, 0);
}

/* hipStreamAddCallback(stream, callback(stream, status, user), user, 0)
 * as a CUDA host function (which gets only `user`). */
typedef void (*hip_callback_t)(CUstream, hipError_t, void *);
struct callback {
    hip_callback_t fn;
    CUstream stream;
    void *user;
};

static void run_callback(void *p) {
    struct callback c = *(struct callback *)p;
    free(p);
    c.fn(c.stream, hipSuccess, c.user);
}

EXPORT hipError_t hipStreamAddCallback(CUstream s, hip_callback_t fn, void *user, unsigned flags) {
    BIND();
    if (flags != 0) return hipErrorInvalidValue;
    struct callback *c = malloc(sizeof *c);
    if (!c) return 2; /* hipErrorOutOfMemory */
    c->fn = fn;
    c->stream = s;
    c->user = user;
    CUresult r = p_cuLaunchHostFunc(s, run_callback, c);
    if (r != 0) free(c);
    return r;
}

/* ---- modules and launches ------------------------------------------------ */

EXPORT hipError_t hipModuleLoadData(CUmodule *m, const void *image) {
    BIND();
    return p_cuModuleLoadData(m, image);
}

EXPORT hipError_t hipModuleUnload(CUmodule m) {
    BIND();
    return p_cuModuleUnload(m);
}

/* Loads the kernel's code now: under CUDA's lazy loading a first launch
 * waits for the device, which a parked stream wait would block. */
EXPORT hipError_t hipModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    BIND();
    CUresult r = p_cuModuleGetFunction(f, m, name);
    if (r == 0 && p_cuFuncLoad) r = p_cuFuncLoad(*f);
    return r;
}

EXPORT hipError_t hipFuncGetAttribute(int *value, int attr, CUfunction f) {
    BIND();
    return p_cuFuncGetAttribute(value, attr, f);
}

/* AMD GPUs need no opt-in for a group's shared memory; CUDA does above
 * 48 KiB (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES). */
static CUresult allow_shared(CUfunction f, unsigned bytes) {
    if (bytes <= 48 * 1024) return 0;
    return p_cuFuncSetAttribute(f, 8, (int)bytes);
}

EXPORT hipError_t hipModuleLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                        unsigned bx, unsigned by, unsigned bz, unsigned shared,
                                        CUstream s, void **params, void **extra) {
    BIND();
    CUresult r = allow_shared(f, shared);
    if (r != 0) return r;
    return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
}

/* ---- graphs -------------------------------------------------------------- */

EXPORT hipError_t hipGraphCreate(CUgraph *g, unsigned flags) {
    BIND();
    return p_cuGraphCreate(g, flags);
}

EXPORT hipError_t hipGraphAddKernelNode(CUgraphNode *node, CUgraph g, const CUgraphNode *deps,
                                        size_t ndeps, const hipKernelNodeParams *p) {
    BIND();
    if (!p_cuGraphAddKernelNode) return hipErrorNotSupported;
    CUresult r = allow_shared(p->func, p->sharedMemBytes);
    if (r != 0) return r;
    CudaKernelNodeParams c = {
        .func = p->func,
        .gridDimX = p->gridDim.x,
        .gridDimY = p->gridDim.y,
        .gridDimZ = p->gridDim.z,
        .blockDimX = p->blockDim.x,
        .blockDimY = p->blockDim.y,
        .blockDimZ = p->blockDim.z,
        .sharedMemBytes = p->sharedMemBytes,
        .kernelParams = p->kernelParams,
        .extra = p->extra,
    };
    return p_cuGraphAddKernelNode(node, g, deps, ndeps, &c);
}

EXPORT hipError_t hipGraphInstantiate(CUgraphExec *exec, CUgraph g, CUgraphNode *error_node,
                                      char *log, size_t log_size) {
    (void)error_node;
    if (log && log_size) log[0] = 0;
    BIND();
    return p_cuGraphInstantiateWithFlags(exec, g, 0);
}

EXPORT hipError_t hipGraphLaunch(CUgraphExec exec, CUstream s) {
    BIND();
    return p_cuGraphLaunch(exec, s);
}

EXPORT hipError_t hipGraphExecDestroy(CUgraphExec exec) {
    BIND();
    return p_cuGraphExecDestroy(exec);
}

EXPORT hipError_t hipGraphDestroy(CUgraph g) {
    BIND();
    return p_cuGraphDestroy(g);
}

/* ---- hiprtc on NVRTC ------------------------------------------------------ */

enum { HIPRTC_ERROR_INVALID_INPUT = 3, HIPRTC_ERROR_INTERNAL_ERROR = 11 };

static int have_nvrtc(void) {
    pthread_once(&nvrtc_once, load_nvrtc);
    return nvrtc_loaded;
}

/* What HIP kernels include; CUDA C++ under NVRTC already has the rest. */
static const char HIP_RUNTIME_H[] =
    "#pragma once\n"
    "#define __HIP_PLATFORM_NVIDIA__ 1\n"
    "#define __HIP_PLATFORM_NVCC__ 1\n"
    "#define __HIPCC_RTC__ 1\n";

EXPORT int hiprtcVersion(int *major, int *minor) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcVersion(major, minor);
}

EXPORT const char *hiprtcGetErrorString(int e) {
    if (!have_nvrtc()) return "hiprtc (NVRTC) is not available";
    return p_nvrtcGetErrorString(e);
}

EXPORT int hiprtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name, int n,
                               const char *const *headers, const char *const *names) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    if (n < 0 || n > 1000) return HIPRTC_ERROR_INVALID_INPUT;
    const char *h[1001], *hn[1001];
    for (int i = 0; i < n; i++) {
        h[i] = headers[i];
        hn[i] = names[i];
    }
    h[n] = HIP_RUNTIME_H;
    hn[n] = "hip/hip_runtime.h";
    return p_nvrtcCreateProgram(prog, src, name, n + 1, h, hn);
}

EXPORT int hiprtcDestroyProgram(nvrtcProgram *prog) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcDestroyProgram(prog);
}

/* --offload-arch=gfx* -> the current device's compute_XY; -O<n> dropped. */
EXPORT int hiprtcCompileProgram(nvrtcProgram prog, int n, const char *const *options) {
    if (!have_nvrtc() || !have_cuda()) return HIPRTC_ERROR_INTERNAL_ERROR;
    if (n < 0 || n > 1000) return HIPRTC_ERROR_INVALID_INPUT;
    int major = 0, minor = 0;
    p_cuDeviceGetAttribute(&major, 75, current_device);
    p_cuDeviceGetAttribute(&minor, 76, current_device);
    char arch[64];
    snprintf(arch, sizeof arch, "--gpu-architecture=compute_%d%d", major, minor);
    const char *opts[1002];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(options[i], "--offload-arch=", 15) == 0) {
            opts[k++] = arch;
        } else if (strncmp(options[i], "-O", 2) == 0) {
            continue;
        } else {
            opts[k++] = options[i];
        }
    }
    return p_nvrtcCompileProgram(prog, k, opts);
}

EXPORT int hiprtcGetProgramLogSize(nvrtcProgram prog, size_t *size) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcGetProgramLogSize(prog, size);
}

EXPORT int hiprtcGetProgramLog(nvrtcProgram prog, char *log) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcGetProgramLog(prog, log);
}

/* The "code object" is NVRTC's PTX, NUL included. */
EXPORT int hiprtcGetCodeSize(nvrtcProgram prog, size_t *size) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcGetPTXSize(prog, size);
}

EXPORT int hiprtcGetCode(nvrtcProgram prog, char *code) {
    if (!have_nvrtc()) return HIPRTC_ERROR_INTERNAL_ERROR;
    return p_nvrtcGetPTX(prog, code);
}
