// norm: partial sums of squares for the global gradient norm (clipping).
// sum_squares: grid 512 x block 256 (any grid works); block b writes partial[b], the double sum
//   of x^2 over its grid-stride share, rounded to float. The host adds the partials in order.

extern "C" __global__ void sum_squares(const float* x, long long n, float* partial) {
    double acc = 0.0;
    GRID_STRIDE_LOOP(i, n) {
        double xi = (double)x[i];
        acc += xi * xi;
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = (float)acc;
}
