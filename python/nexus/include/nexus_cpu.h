/*
 * nexus CPU kernel ABI.
 *
 * A CPU kernel is a C function called once per work-group:
 *
 *     NXS_KERNEL void my_kernel(void **args, const nxs_launch *launch);
 *
 * args[i] points at argument i's value, as cuLaunchKernel's kernelParams do:
 *   - a buffer argument: args[i] points at a `void *` holding the buffer's data,
 *     read it with NXS_BUFFER(args, i, float);
 *   - a scalar argument (int32, uint32, int64, uint64, float32, float64):
 *     args[i] points at the value, read it with NXS_SCALAR(args, i, int32_t).
 * At most NXS_MAX_ARGS arguments. NXS_KERNEL_ARGS(name, n) declares how
 * many a kernel reads; nexus then refuses commands that set fewer.
 *
 * `launch` describes the launch: grid_size is the total number of work-items
 * per axis, group_size the work-items per group, num_groups = ceil(grid/group),
 * group_id this call's group. Groups run in parallel on all cores, in any
 * order; a kernel must bounds-check (the last group may be partial).
 * `scratch` is this call's group-shared memory (`shared_memory` bytes asked
 * for at finalize; NULL when 0), private to the calling thread.
 */
#ifndef NEXUS_CPU_H
#define NEXUS_CPU_H

#include <stddef.h>
#include <stdint.h>

#define NXS_MAX_ARGS 64

typedef struct nxs_launch {
    uint32_t grid_size[3];
    uint32_t group_size[3];
    uint32_t num_groups[3];
    uint32_t group_id[3];
    void *scratch;
    uint64_t scratch_size;
} nxs_launch;

#ifdef __cplusplus
#define NXS_KERNEL extern "C" __attribute__((visibility("default")))
#else
#define NXS_KERNEL __attribute__((visibility("default")))
#endif

/* Optional: declares how many arguments `name` reads, so nexus refuses to
 * run a command that sets fewer (instead of the kernel reading past them):
 *     NXS_KERNEL_ARGS(vadd, 4);                                              */
#define NXS_KERNEL_ARGS(name, n) NXS_KERNEL const uint32_t name##__nxs_num_args = (n)

#define NXS_BUFFER(args, i, type) (*(type *const *)(args)[i])
#define NXS_SCALAR(args, i, type) (*(const type *)(args)[i])

/* First global work-item index of this group along `axis`. */
static inline size_t nxs_group_start(const nxs_launch *l, int axis) {
    return (size_t)l->group_id[axis] * l->group_size[axis];
}

/* One past the last global index of this group along `axis` (clipped to the grid). */
static inline size_t nxs_group_end(const nxs_launch *l, int axis) {
    size_t end = nxs_group_start(l, axis) + l->group_size[axis];
    return end < l->grid_size[axis] ? end : l->grid_size[axis];
}

#endif /* NEXUS_CPU_H */
