// The spec examples' add_vectors for the Metal runtime: buf[i] = buf[i] + buf[i]
// (dispatchThreads runs exactly grid_size threads).
#include <metal_stdlib>
using namespace metal;

kernel void add_vectors(device float *buf [[buffer(0)]], uint i [[thread_position_in_grid]]) {
    buf[i] = buf[i] + buf[i];
}
