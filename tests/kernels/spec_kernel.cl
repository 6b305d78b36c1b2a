// The spec examples' add_vectors for OpenCL: buf[i] = buf[i] + buf[i].
__kernel void add_vectors(__global float *buf) {
    size_t i = get_global_id(0);
    buf[i] = buf[i] + buf[i];
}
