/* The "kernel.so" of the spec's examples: add_vectors over one buffer,
 * buf[i] = buf[i] + buf[i] (the spec's snippets bind a single buffer). */
#include <nexus_cpu.h>

NXS_KERNEL void add_vectors(void **args, const nxs_launch *l) {
    float *buf = NXS_BUFFER(args, 0, float);
    for (size_t i = nxs_group_start(l, 0); i < nxs_group_end(l, 0); ++i) buf[i] = buf[i] + buf[i];
}
