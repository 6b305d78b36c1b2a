// The spec examples' add_vectors for the Vulkan runtime:
// buf[i] = buf[i] + buf[i] for every i below the grid size.
@id(0) override group_x: u32 = 64u;
@id(1) override group_y: u32 = 1u;
@id(2) override group_z: u32 = 1u;
@id(4) override grid_x: u32 = 0u;

@group(0) @binding(0) var<storage, read_write> buf: array<f32>;

@compute @workgroup_size(group_x, group_y, group_z)
fn add_vectors(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < grid_x) {
        buf[i] = buf[i] + buf[i];
    }
}
