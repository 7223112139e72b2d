// adamw: one AdamW step per element, in double, with exactly the arithmetic of
// src/train/optim.rs (adamw_update) so the CPU and GPU trainers agree bit for bit.
// adamw: 1-D launch, grid-stride over n.
// The _rn intrinsics keep NVRTC from contracting a*b+c into an FMA (Rust rounds each step).

extern "C" __global__ void adamw(float* p, const float* g, float* m, float* v, long long n,
                                 double beta1, double beta2, double eps, double decay,
                                 double step_size, double bc2_sqrt, double grad_scale) {
    GRID_STRIDE_LOOP(i, n) {
        double gi = __dmul_rn((double)g[i], grad_scale);
        double mi = __dadd_rn(__dmul_rn(beta1, (double)m[i]), __dmul_rn(1.0 - beta1, gi));
        double vi = __dadd_rn(__dmul_rn(beta2, (double)v[i]),
                              __dmul_rn(__dmul_rn(1.0 - beta2, gi), gi));
        m[i] = (float)mi;
        v[i] = (float)vi;
        double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(vi), bc2_sqrt), eps);
        double upd = __ddiv_rn(__dmul_rn(step_size, mi), denom);
        p[i] = (float)__dsub_rn(__dmul_rn((double)p[i], decay), upd);
    }
}
