// The spec examples' add_vectors for HIP: buf[i] = buf[i] + buf[i].
#include <hip/hip_runtime.h>

extern "C" __global__ void add_vectors(float *buf) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[i] = buf[i] + buf[i];
}
