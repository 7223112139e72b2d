// cross_entropy: per-row softmax cross-entropy of logits against targets, with the logits'
// gradient written straight from the row (the probabilities are never stored).
// cross_entropy: grid = rows (any grid works: blocks loop over rows), block 256; one row per
//   block, three passes over the row (max, sum of exp, gradient), the later ones mostly from L2.
//   dlogits may be null when want_grad == 0.

extern "C" __global__ void cross_entropy(const float* logits, const int* targets, float* losses,
                                         act_t* dlogits, int rows, int vocab, float grad_scale,
                                         int want_grad) {
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* z = logits + (long long)row * vocab;
        long long base = (long long)row * vocab;
        int t = targets[row];
        // t is the same for the whole block, so these branches never split a barrier.
        // An out-of-range target is treated like an ignored one rather than read out of bounds.
        if (t < 0 || t >= vocab) {
            if (threadIdx.x == 0) losses[row] = 0.0f;
            if (want_grad)
                for (int j = threadIdx.x; j < vocab; j += blockDim.x) sta(dlogits, base + j, 0.0f);
            continue;
        }
        float mx = GRIST_NEG_INF;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, z[j]);
        mx = block_max(mx);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(z[j] - mx);
        sum = block_sum(sum);
        if (threadIdx.x == 0) losses[row] = logf(sum) + mx - z[t];
        if (want_grad) {
            for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
                float g = grad_scale * expf(z[j] - mx) / sum;
                if (j == t) g -= grad_scale;
                sta(dlogits, base + j, g);
            }
        }
    }
}
