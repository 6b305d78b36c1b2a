// Kernels of bench_vulkan.py, the same WGSL for nexus and wgpu-py: no
// scalars (bounds from arrayLength), a fixed group size.
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(256)
fn vadd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < arrayLength(&c)) {
        c[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(64)
fn empty() {}
