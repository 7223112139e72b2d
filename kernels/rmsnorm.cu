// rmsnorm: RMSNorm forward and backward, and the column sums that fold the backward's
// per-block dw partials.
// rmsnorm_fwd: grid = rows (any grid works: blocks loop over rows), block 256; one row per block.
// rmsnorm_bwd: grid = ceil(rows / rows_per_block), block 256; block b takes rows
//   b*rows_per_block .. min(rows, (b+1)*rows_per_block)-1 and writes dw_part[b, 0..d).
// add_column_sums: 1-D launch, grid-stride over d.

extern "C" __global__ void rmsnorm_fwd(const float* x, const float* w, act_t* y, float* rstd,
                                       int rows, int d, float eps) {
    // The row loop bound is the same for every thread, so the barriers inside are safe.
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + (long long)row * d;
        float ss = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
        ss = block_sum(ss);
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        if (threadIdx.x == 0) rstd[row] = r;
        long long base = (long long)row * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) sta(y, base + j, xr[j] * r * w[j]);
    }
}

extern "C" __global__ void rmsnorm_bwd(const float* dy, const float* x, const float* w,
                                       const float* rstd, float* dx, float* dw_part, int rows,
                                       int d, int rows_per_block, int accumulate) {
    long long lo = (long long)blockIdx.x * rows_per_block;
    long long hi = lo + rows_per_block;
    if (hi > rows) hi = rows;
    // A block past the last row (only rows == 0, launched as one block) writes nothing: dw_part
    // holds exactly ceil(rows / rows_per_block) rows.
    if (lo >= rows) return;  // block-uniform, before any barrier
    // First, column by column: each thread owns its columns and adds the block's rows in
    // ascending order (as the CPU does), so dw needs no shared array.
    // This pass comes first so that it still reads the original dy and x.
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = 0.0f;
        for (long long row = lo; row < hi; ++row) {
            long long k = row * d + j;
            acc += dy[k] * x[k] * rstd[row];
        }
        dw_part[(long long)blockIdx.x * d + j] = acc;
    }
    // Then row by row: the row's dot needs the whole block, then dx. (Block-uniform loop.)
    // Every element of a row is read before it is written, by the same thread, so dx may alias
    // dy or x.
    for (long long row = lo; row < hi; ++row) {
        const float* dyr = dy + row * d;
        const float* xr = x + row * d;
        float r = rstd[row];
        float dot = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * w[j] * xr[j];
        dot = block_sum(dot);
        float c = dot * r * r * r / (float)d;
        float* dxr = dx + row * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float v = r * w[j] * dyr[j] - c * xr[j];
            if (accumulate) dxr[j] += v;
            else dxr[j] = v;
        }
    }
}

extern "C" __global__ void add_column_sums(const float* part, float* out, int parts, int d) {
    GRID_STRIDE_LOOP(j, d) {
        // Sum the partials in block order first, then add once (as embedding_bwd does).
        float s = 0.0f;
        for (int b = 0; b < parts; ++b) s += part[(long long)b * d + j];
        out[j] += s;
    }
}
