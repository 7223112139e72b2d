// common.cuh: prelude that grist prepends to every kernel family before NVRTC compiles it.
// It holds the bf16 type and its conversions, the activation type act_t and its accessors,
// and the warp/block reductions the families share. No header is included: NVRTC here has
// no CUDA headers, so only compiler built-ins are used.

typedef unsigned short bf16_t;

// bf16 is the high half of an f32, so widening is a shift.
__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((unsigned)h) << 16);
}

// Round to nearest even, NaN kept NaN (quiet bit set): bit for bit `half::bf16::from_f32`.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((x >> 16) | 0x40u);
    unsigned r = x >> 16;
    // Round up when the dropped half is above a tie, or a tie with an odd kept part.
    if ((x & 0x8000u) != 0u && (x & 0x17fffu) != 0u) r += 1u;
    return (bf16_t)r;
}

#ifdef GRIST_ACT_BF16
typedef bf16_t act_t;
#else
typedef float act_t;
#endif

// Activations are read and written only through these, so one source serves both precisions.
__device__ __forceinline__ float lda(const act_t* p, long long i) {
#ifdef GRIST_ACT_BF16
    return bf16_to_f32(p[i]);
#else
    return p[i];
#endif
}

__device__ __forceinline__ void sta(act_t* p, long long i, float v) {
#ifdef GRIST_ACT_BF16
    p[i] = f32_to_bf16(v);
#else
    p[i] = v;
#endif
}

// INFINITY is not defined without headers.
#define GRIST_NEG_INF (__int_as_float(0xff800000))

// 1-D grid-stride loop over [0, n) with a 64-bit index.
#define GRID_STRIDE_LOOP(i, n)                                                      \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

// Butterfly reductions: every lane ends with the same value, and the order of the additions is
// fixed, so results are deterministic. The whole warp must be active.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ unsigned warp_min_u(unsigned v) {
    for (int o = 16; o > 0; o >>= 1) {
        unsigned w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w < v ? w : v;
    }
    return v;
}

// Block reductions (blockDim.x a multiple of 32, at most 1024). Every thread of the block must
// call them (they hold barriers) and every thread gets the result. The leading barrier lets a
// kernel call them back to back: nobody overwrites the scratch while another still reads it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float scratch[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = lane < nw ? scratch[lane] : 0.0f;
        r = warp_sum(r);
        if (lane == 0) scratch[32] = r;
    }
    __syncthreads();
    return scratch[32];
}

__device__ __forceinline__ double block_sum_d(double v) {
    __shared__ double scratch_d[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch_d[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double r = lane < nw ? scratch_d[lane] : 0.0;
        r = warp_sum_d(r);
        if (lane == 0) scratch_d[32] = r;
    }
    __syncthreads();
    return scratch_d[32];
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float scratch_m[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch_m[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = lane < nw ? scratch_m[lane] : GRIST_NEG_INF;
        r = warp_max(r);
        if (lane == 0) scratch_m[32] = r;
    }
    __syncthreads();
    return scratch_m[32];
}
