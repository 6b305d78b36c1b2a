// The spec examples' add_vectors for CUDA: buf[i] = buf[i] + buf[i].
extern "C" __global__ void add_vectors(float *buf) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[i] = buf[i] + buf[i];
}
