// swiglu: h = silu(gate) * up and its gradient, element-wise.
// Both kernels: 1-D launch, grid-stride over n. Each element is read then written by one thread,
// so dgate/dup may alias gate/up.

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void swiglu_fwd(const act_t* gate, const act_t* up, act_t* h, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        float g = lda(gate, i), u = lda(up, i);
        sta(h, i, g * sigmoidf_(g) * u);
    }
}

extern "C" __global__ void swiglu_bwd(const float* dh, const act_t* gate, const act_t* up,
                                      act_t* dgate, act_t* dup, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        float g = lda(gate, i), u = lda(up, i), d = dh[i];
        float s = sigmoidf_(g);
        float du = d * (g * s);
        float dg = d * u * s * (1.0f + g * (1.0f - s));
        sta(dup, i, du);
        sta(dgate, i, dg);
    }
}
