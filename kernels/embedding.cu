// embedding: token-embedding lookup and its gradient.
// embedding_fwd: 1-D launch, grid-stride over rows*d.
// embedding_bwd: grid = segments (a larger or smaller grid also works), block 256; threads
//   stride over the d columns. Segment s gathers the dx rows order[seg_start[s] .. seg_start[s+1]-1]
//   of one token, so each dtable row is written by one block: no atomics, fixed order.

extern "C" __global__ void embedding_fwd(const float* table, const unsigned* tokens, float* x,
                                         int rows, int d) {
    GRID_STRIDE_LOOP(idx, (long long)rows * d) {
        long long r = idx / d, c = idx - r * d;
        x[idx] = table[(long long)tokens[r] * d + c];
    }
}

extern "C" __global__ void embedding_bwd(const float* dx, const unsigned* order,
                                         const unsigned* seg_start, const unsigned* seg_token,
                                         float* dtable, int segments, int d) {
    for (int s = blockIdx.x; s < segments; s += gridDim.x) {
        unsigned lo = seg_start[s], hi = seg_start[s + 1];
        long long dst = (long long)seg_token[s] * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            // Sum the segment first (in the given order), then add it once.
            float sum = 0.0f;
            for (unsigned i = lo; i < hi; ++i) sum += dx[(long long)order[i] * d + j];
            dtable[dst + j] += sum;
        }
    }
}
