// attention: causal grouped-query attention with document masking, flash style (O(seq) memory:
// the T x T score matrix is never stored; the forward keeps one log-sum-exp per query row and
// the backward recomputes the probabilities from it).
//
// attention_fwd:       grid (ceil(tq/8), heads, batch), block 256: warp w owns query row
//                      blockIdx.x*8 + w; keys stream through shared-memory tiles.
// attention_bwd_delta: 1-D launch, grid-stride over rows*heads.
// attention_bwd_dq:    grid (ceil(t/8), heads, batch), block 256: warp per query row.
// attention_bwd_dkdv:  grid (ceil(t/8), kv_heads, batch), block 256: warp per key row; queries
//                      of the group's heads stream through shared-memory tiles.
//
// Query i of sample b (row b*tq+i, position i+q_offset) attends key j (row b*tk+j) iff
// starts[b*tq+i] <= j <= i+q_offset and j < tk, through kv head h / (heads/kv_heads).
// Scores are scale*q.k; lse[(b*heads+h)*tq+i] = max + log(sum exp) in that space;
// delta[row*heads+h] = sum_d dout*o. The backward has tq = tk = t and q_offset = 0.
//
// Within a tile each lane owns one key (or query) row and computes its dot products from shared
// memory (rows padded to head_dim+1 floats, so the 32 lanes hit 32 different banks); the
// probabilities are then broadcast through shared memory and each lane accumulates the output
// values d = lane, lane+32, ... (head_dim <= 256, so at most 8 per lane). When a tile has fewer
// than 32 rows (large head_dim), 32/TK lanes share a row, each taking a slice of head_dim, and
// their partial dots are combined with shuffles. All shared memory comes from one static pool
// (47 KiB, under the 48 KiB static limit), carved at run time by head_dim; the tile length TK
// (32, 16 or 8) is the largest that fits.

#define ATT_ROWS 8          // warps per block: query (or key) rows per block
#define ATT_HD_MAX 256      // largest head_dim
#define ATT_NPL 8           // output values per lane: ATT_HD_MAX / 32
#define ATT_POOL 12032      // floats of shared memory per block (47 KiB)
#define ATT_FULL 0xffffffffu

// Largest tile length in {32, 16, 8} whose shared-memory need (floats) fits the pool.
// fwd: K tile TK*(hd+1), V tile TK*hd, q rows 8*hd, probabilities 8*32.
__device__ __forceinline__ int att_tile_fwd(int hd) {
    int tk = 32;
    while (tk > 8 && tk * (hd + 1) + tk * hd + ATT_ROWS * hd + ATT_ROWS * 32 > ATT_POOL) tk >>= 1;
    return tk;
}

// bwd: two padded tiles TK*(hd+1), two per-warp rows 8*hd, `arrays` per-warp arrays of 32.
__device__ __forceinline__ int att_tile_bwd(int hd, int arrays) {
    int tk = 32;
    while (tk > 8 && 2 * tk * (hd + 1) + 2 * ATT_ROWS * hd + arrays * ATT_ROWS * 32 > ATT_POOL)
        tk >>= 1;
    return tk;
}

// Sizes the kernels refuse (the host never launches them): nothing is written.
__device__ __forceinline__ bool att_bad_shape(int heads, int kv_heads, int head_dim) {
    return head_dim <= 0 || head_dim > ATT_HD_MAX || kv_heads <= 0 || heads < kv_heads ||
           heads % kv_heads != 0;
}

extern "C" __global__ void __launch_bounds__(256)
attention_fwd(const act_t* q, const act_t* k, const act_t* v, const unsigned* starts, act_t* o,
              float* lse, int batch, int tq, int tk, int q_offset, int heads, int kv_heads,
              int head_dim, float scale) {
    __shared__ float pool[ATT_POOL];
    const int hd = head_dim;
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * ATT_ROWS;
    // Block-uniform exits, before any barrier.
    if (att_bad_shape(heads, kv_heads, hd) || b >= batch || h >= heads || i0 >= tq) return;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int g = h / (heads / kv_heads);
    const long long qw = (long long)heads * hd, kw = (long long)kv_heads * hd;

    const int TK = att_tile_fwd(hd), KS = hd + 1;
    float* Ks = pool;                    // [TK][KS]
    float* Vs = Ks + TK * KS;            // [TK][hd]
    float* Qs = Vs + TK * hd;            // [8][hd]
    float* Ps = Qs + ATT_ROWS * hd;      // [8][32]
    float* qrow = Qs + w * hd;
    float* prow = Ps + w * 32;

    // Lane roles in the score step: row jj of the tile, dims [dlo, dhi) of it.
    const int spl = 32 / TK, jj = lane % TK, part = lane / TK;
    const int dlo = part * hd / spl, dhi = (part + 1) * hd / spl;

    const int i = i0 + w;
    const bool row_ok = i < tq;
    int st = 0, pos = -1;  // this row's allowed keys [st, pos]
    if (row_ok) {
        st = (int)starts[(long long)b * tq + i];
        pos = i + q_offset;
        if (pos > tk - 1) pos = tk - 1;
    }
    // The block's key range: the union of its rows' ranges (positions grow with i).
    unsigned sl = (lane < ATT_ROWS && i0 + lane < tq) ? starts[(long long)b * tq + i0 + lane]
                                                      : 0xffffffffu;
    const int lo = (int)warp_min_u(sl);
    int hi = (i0 + ATT_ROWS < tq ? i0 + ATT_ROWS : tq) - 1 + q_offset;
    if (hi > tk - 1) hi = tk - 1;

    const long long qbase = ((long long)b * tq + i) * qw + (long long)h * hd;
    if (row_ok)
        for (int d = lane; d < hd; d += 32) qrow[d] = lda(q, qbase + d);
    __syncwarp();

    float m = GRIST_NEG_INF, l = 0.0f, acc[ATT_NPL];
#pragma unroll
    for (int c = 0; c < ATT_NPL; ++c) acc[c] = 0.0f;

    for (int t0 = lo; t0 <= hi; t0 += TK) {
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < TK * hd; e += blockDim.x) {
            int r = e / hd, d = e - r * hd, j = t0 + r;
            float kx = 0.0f, vx = 0.0f;  // zeros past the range: p = 0 must meet finite values
            if (j <= hi) {
                long long src = ((long long)b * tk + j) * kw + (long long)g * hd + d;
                kx = lda(k, src);
                vx = lda(v, src);
            }
            Ks[r * KS + d] = kx;
            Vs[r * hd + d] = vx;
        }
        __syncthreads();

        const int j = t0 + jj;
        const bool ok = row_ok && j >= st && j <= pos;
        if (!__any_sync(ATT_FULL, ok)) continue;  // warp-uniform; no barrier skipped

        float dot = 0.0f;
        if (ok) {
            const float* kr = Ks + jj * KS;
#pragma unroll 4
            for (int d = dlo; d < dhi; ++d) dot += qrow[d] * kr[d];
        }
        for (int off = TK; off < 32; off <<= 1) dot += __shfl_xor_sync(ATT_FULL, dot, off);
        const float s = ok ? dot * scale : GRIST_NEG_INF;
        const float mn = fmaxf(m, warp_max(s));  // finite: some key of the tile is allowed
        const float alpha = expf(m - mn);        // 0 on the first tile (m = -inf)
        const float p = ok ? expf(s - mn) : 0.0f;
        l = l * alpha + warp_sum(part == 0 ? p : 0.0f);
        m = mn;
        if (part == 0) prow[jj] = p;
        __syncwarp();
#pragma unroll
        for (int c = 0; c < ATT_NPL; ++c) acc[c] *= alpha;
        for (int r = 0; r < TK; ++r) {
            const float pr = prow[r];
            const float* vr = Vs + r * hd;
#pragma unroll
            for (int c = 0; c < ATT_NPL; ++c) {
                int d = lane + 32 * c;
                if (d < hd) acc[c] += pr * vr[d];
            }
        }
        __syncwarp();  // prow is rewritten on the next tile
    }

    if (row_ok) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no division by zero, ever
#pragma unroll
        for (int c = 0; c < ATT_NPL; ++c) {
            int d = lane + 32 * c;
            if (d < hd) sta(o, qbase + d, acc[c] * inv);
        }
        if (lane == 0) lse[((long long)b * heads + h) * tq + i] = m + logf(l);
    }
}

extern "C" __global__ void attention_bwd_delta(const act_t* o, const float* dout, float* delta,
                                               int rows, int heads, int head_dim) {
    GRID_STRIDE_LOOP(idx, (long long)rows * heads) {
        // idx = row*heads + h, and head h of the row starts at idx*head_dim.
        long long base = idx * head_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; ++d) s += dout[base + d] * lda(o, base + d);
        delta[idx] = s;
    }
}

extern "C" __global__ void __launch_bounds__(256)
attention_bwd_dq(const act_t* q, const act_t* k, const act_t* v, const unsigned* starts,
                 const float* dout, const float* lse, const float* delta, float* dq, int batch,
                 int t, int heads, int kv_heads, int head_dim, float scale) {
    __shared__ float pool[ATT_POOL];
    const int hd = head_dim;
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * ATT_ROWS;
    if (att_bad_shape(heads, kv_heads, hd) || b >= batch || h >= heads || i0 >= t) return;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int g = h / (heads / kv_heads);
    const long long qw = (long long)heads * hd, kw = (long long)kv_heads * hd;

    const int TK = att_tile_bwd(hd, 1), KS = hd + 1;
    float* Ks = pool;                    // [TK][KS]
    float* Vs = Ks + TK * KS;            // [TK][KS]
    float* Qs = Vs + TK * KS;            // [8][hd]
    float* Ds = Qs + ATT_ROWS * hd;      // [8][hd]  dout rows
    float* Ss = Ds + ATT_ROWS * hd;      // [8][32]  ds = p*(dp - delta)
    float* qrow = Qs + w * hd;
    float* drow = Ds + w * hd;
    float* srow = Ss + w * 32;

    const int spl = 32 / TK, jj = lane % TK, part = lane / TK;
    const int dlo = part * hd / spl, dhi = (part + 1) * hd / spl;

    const int i = i0 + w;
    const bool row_ok = i < t;
    int st = 0, pos = -1;
    float lse_i = 0.0f, delta_i = 0.0f;
    const long long row = (long long)b * t + i;
    const long long qbase = row * qw + (long long)h * hd;
    if (row_ok) {
        st = (int)starts[row];
        pos = i;
        lse_i = lse[((long long)b * heads + h) * t + i];
        delta_i = delta[row * heads + h];
        for (int d = lane; d < hd; d += 32) {
            qrow[d] = lda(q, qbase + d);
            drow[d] = dout[qbase + d];
        }
    }
    __syncwarp();
    unsigned sl = (lane < ATT_ROWS && i0 + lane < t) ? starts[(long long)b * t + i0 + lane]
                                                     : 0xffffffffu;
    const int lo = (int)warp_min_u(sl);
    const int hi = (i0 + ATT_ROWS < t ? i0 + ATT_ROWS : t) - 1;

    float acc[ATT_NPL];
#pragma unroll
    for (int c = 0; c < ATT_NPL; ++c) acc[c] = 0.0f;

    for (int t0 = lo; t0 <= hi; t0 += TK) {
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < TK * hd; e += blockDim.x) {
            int r = e / hd, d = e - r * hd, j = t0 + r;
            float kx = 0.0f, vx = 0.0f;
            if (j <= hi) {
                long long src = ((long long)b * t + j) * kw + (long long)g * hd + d;
                kx = lda(k, src);
                vx = lda(v, src);
            }
            Ks[r * KS + d] = kx;
            Vs[r * KS + d] = vx;
        }
        __syncthreads();

        const int j = t0 + jj;
        const bool ok = row_ok && j >= st && j <= pos;
        if (!__any_sync(ATT_FULL, ok)) continue;

        float qk = 0.0f, dv = 0.0f;
        if (ok) {
            const float* kr = Ks + jj * KS;
            const float* vr = Vs + jj * KS;
#pragma unroll 4
            for (int d = dlo; d < dhi; ++d) {
                qk += qrow[d] * kr[d];
                dv += drow[d] * vr[d];
            }
        }
        for (int off = TK; off < 32; off <<= 1) {
            qk += __shfl_xor_sync(ATT_FULL, qk, off);
            dv += __shfl_xor_sync(ATT_FULL, dv, off);
        }
        const float p = ok ? expf(qk * scale - lse_i) : 0.0f;
        if (part == 0) srow[jj] = p * (dv - delta_i);
        __syncwarp();
        for (int r = 0; r < TK; ++r) {
            const float sr = srow[r];
            const float* kr = Ks + r * KS;
#pragma unroll
            for (int c = 0; c < ATT_NPL; ++c) {
                int d = lane + 32 * c;
                if (d < hd) acc[c] += sr * kr[d];
            }
        }
        __syncwarp();
    }

    if (row_ok) {
#pragma unroll
        for (int c = 0; c < ATT_NPL; ++c) {
            int d = lane + 32 * c;
            if (d < hd) dq[qbase + d] = acc[c] * scale;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
attention_bwd_dkdv(const act_t* q, const act_t* k, const act_t* v, const unsigned* starts,
                   const float* dout, const float* lse, const float* delta, float* dk, act_t* dv,
                   int batch, int t, int heads, int kv_heads, int head_dim, float scale) {
    __shared__ float pool[ATT_POOL];
    __shared__ float lse_s[32], delta_s[32];
    __shared__ unsigned starts_s[32];
    const int hd = head_dim;
    const int b = blockIdx.z, g = blockIdx.y, j0 = blockIdx.x * ATT_ROWS;
    if (att_bad_shape(heads, kv_heads, hd) || b >= batch || g >= kv_heads || j0 >= t) return;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int group = heads / kv_heads;
    const long long qw = (long long)heads * hd, kw = (long long)kv_heads * hd;

    const int TQ = att_tile_bwd(hd, 2), QS = hd + 1;
    float* Qt = pool;                    // [TQ][QS]  q rows of the tile
    float* Dt = Qt + TQ * QS;            // [TQ][QS]  dout rows of the tile
    float* Kw = Dt + TQ * QS;            // [8][hd]   each warp's key row
    float* Vw = Kw + ATT_ROWS * hd;      // [8][hd]   each warp's value row
    float* Pw = Vw + ATT_ROWS * hd;      // [8][32]   p
    float* Sw = Pw + ATT_ROWS * 32;      // [8][32]   ds = p*(dp - delta)
    float* krow = Kw + w * hd;
    float* vrow = Vw + w * hd;
    float* prow = Pw + w * 32;
    float* srow = Sw + w * 32;

    const int spl = 32 / TQ, ii = lane % TQ, part = lane / TQ;
    const int dlo = part * hd / spl, dhi = (part + 1) * hd / spl;

    const int j = j0 + w;
    const bool key_ok = j < t;
    const long long kbase = ((long long)b * t + j) * kw + (long long)g * hd;
    if (key_ok)
        for (int d = lane; d < hd; d += 32) {
            krow[d] = lda(k, kbase + d);
            vrow[d] = lda(v, kbase + d);
        }
    __syncwarp();
    const int jmax = (j0 + ATT_ROWS < t ? j0 + ATT_ROWS : t) - 1;  // the block's last key

    float gk[ATT_NPL], gv[ATT_NPL];
#pragma unroll
    for (int c = 0; c < ATT_NPL; ++c) gk[c] = gv[c] = 0.0f;

    for (int h = g * group; h < (g + 1) * group; ++h) {
        // Only queries i >= j0 can see the block's keys.
        for (int i0 = j0; i0 < t; i0 += TQ) {
            __syncthreads();  // the previous tile is no longer read
            int need = 0;
            if (threadIdx.x < TQ) {
                int i = i0 + threadIdx.x;
                unsigned s = 0xffffffffu;
                float ls = 0.0f, de = 0.0f;
                if (i < t) {
                    long long row = (long long)b * t + i;
                    s = starts[row];
                    ls = lse[((long long)b * heads + h) * t + i];
                    de = delta[row * heads + h];
                    need = s <= (unsigned)jmax;
                }
                starts_s[threadIdx.x] = s;
                lse_s[threadIdx.x] = ls;
                delta_s[threadIdx.x] = de;
            }
            // Skip tiles whose queries all start after the block's keys (other documents).
            if (!__syncthreads_or(need)) continue;  // block-uniform
            for (int e = threadIdx.x; e < TQ * hd; e += blockDim.x) {
                int r = e / hd, d = e - r * hd, i = i0 + r;
                float qx = 0.0f, dx = 0.0f;
                if (i < t) {
                    long long src = ((long long)b * t + i) * qw + (long long)h * hd + d;
                    qx = lda(q, src);
                    dx = dout[src];
                }
                Qt[r * QS + d] = qx;
                Dt[r * QS + d] = dx;
            }
            __syncthreads();

            const int i = i0 + ii;
            const bool ok = key_ok && i < t && i >= j && starts_s[ii] <= (unsigned)j;
            if (!__any_sync(ATT_FULL, ok)) continue;

            float qk = 0.0f, dp = 0.0f;
            if (ok) {
                const float* qr = Qt + ii * QS;
                const float* dr = Dt + ii * QS;
#pragma unroll 4
                for (int d = dlo; d < dhi; ++d) {
                    qk += qr[d] * krow[d];
                    dp += dr[d] * vrow[d];
                }
            }
            for (int off = TQ; off < 32; off <<= 1) {
                qk += __shfl_xor_sync(ATT_FULL, qk, off);
                dp += __shfl_xor_sync(ATT_FULL, dp, off);
            }
            const float p = ok ? expf(qk * scale - lse_s[ii]) : 0.0f;
            if (part == 0) {
                prow[ii] = p;
                srow[ii] = p * (dp - delta_s[ii]);
            }
            __syncwarp();
            for (int r = 0; r < TQ; ++r) {
                const float pr = prow[r], sr = srow[r];
                const float* qr = Qt + r * QS;
                const float* dr = Dt + r * QS;
#pragma unroll
                for (int c = 0; c < ATT_NPL; ++c) {
                    int d = lane + 32 * c;
                    if (d < hd) {
                        gv[c] += pr * dr[d];
                        gk[c] += sr * qr[d];
                    }
                }
            }
            __syncwarp();
        }
    }

    if (key_ok) {
#pragma unroll
        for (int c = 0; c < ATT_NPL; ++c) {
            int d = lane + 32 * c;
            if (d < hd) {
                dk[kbase + d] = gk[c] * scale;
                sta(dv, kbase + d, gv[c]);
            }
        }
    }
}
