// rope: rotary position embedding on rows of `heads` heads of head_dim values (pairs i, i+half).
// rope_fwd / rope_bwd: 1-D launch, grid-stride over rows*heads*half. Each thread reads and
// writes one pair, so `out` may alias `in` when act_t is float.
// The tables are named cos_t/sin_t (the README's cos/sin) so they do not shadow the built-ins.

extern "C" __global__ void rope_fwd(const float* in, act_t* out, const float* cos_t,
                                    const float* sin_t, const unsigned* positions, int rows,
                                    int heads, int head_dim) {
    int half = head_dim / 2;
    GRID_STRIDE_LOOP(idx, (long long)rows * heads * half) {
        long long rh = idx / half;
        int i = (int)(idx - rh * half);
        long long row = rh / heads;
        long long base = rh * head_dim;  // == row*heads*head_dim + h*head_dim
        long long t = (long long)positions[row] * half + i;
        float c = cos_t[t], s = sin_t[t];
        float x0 = in[base + i], x1 = in[base + i + half];
        sta(out, base + i, x0 * c - x1 * s);
        sta(out, base + i + half, x1 * c + x0 * s);
    }
}

extern "C" __global__ void rope_bwd(const float* in, act_t* out, const float* cos_t,
                                    const float* sin_t, const unsigned* positions, int rows,
                                    int heads, int head_dim) {
    int half = head_dim / 2;
    GRID_STRIDE_LOOP(idx, (long long)rows * heads * half) {
        long long rh = idx / half;
        int i = (int)(idx - rh * half);
        long long row = rh / heads;
        long long base = rh * head_dim;
        long long t = (long long)positions[row] * half + i;
        float c = cos_t[t], s = sin_t[t];
        float g0 = in[base + i], g1 = in[base + i + half];
        sta(out, base + i, g0 * c + g1 * s);
        sta(out, base + i + half, g1 * c - g0 * s);
    }
}
