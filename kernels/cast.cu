// cast: f32 -> act_t (round to nearest even for bf16; a copy for f32).
// cast_to_act: 1-D launch, grid-stride over n.

extern "C" __global__ void cast_to_act(const float* x, act_t* y, long long n) {
    GRID_STRIDE_LOOP(i, n) { sta(y, i, x[i]); }
}
