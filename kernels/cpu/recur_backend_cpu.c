/* recur_backend_cpu.c: the CPU reference backend (see recur_backend_cpu.h).
 *
 * Written for clarity first: each op is the textbook loop of its definition in
 * recur_backend.h, with float32 storage and float32 arithmetic (the dot products keep
 * eight partial sums, which both lets the compiler vectorise without -ffast-math and
 * lowers the rounding error of long sums). */
#include "recur_backend_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recur_log.h"
#include "recur_sample_op.h"

/* The CPU backend's private state: the weight mode, the code tables of the one-byte
 * formats, and scratch grown to the largest use seen and then reused (the sample op's
 * per-row arrays; the narrowed activations of a quantized GEMM), so steady-state ops
 * allocate nothing. */
typedef struct cpu_ctx {
    recur_dtype_t wdt;     /* F32 (also for a BF16 request), I8 or F8E4M3 */
    float code_i8[256];    /* recur_quant_code_value of every byte */
    float code_f8[256];
    float *xq;             /* [M][K] activations as the quantized GEMM takes them, then sx[M] */
    size_t xq_cap;         /* floats */
    uint64_t *keys;  /* rank keys (recur_sample_rank_key) of a row's candidates */
    uint64_t *mass;  /* their kept masses, in the order of O */
    size_t    cap;
} cpu_ctx_t;

static const char *cpu_name(const recur_backend_t *b) { return "cpu"; }

static void *cpu_alloc(recur_backend_t *b, size_t n) { return calloc(1, n ? n : 1); }
static void cpu_buf_free(recur_backend_t *b, void *p) { free(p); }

static recur_status_t cpu_memcpy(recur_backend_t *b, void *dst, const void *src, size_t n) {
    if (n) memmove(dst, src, n);
    return RECUR_OK;
}

static recur_status_t cpu_copy_2d(recur_backend_t *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                  size_t row_bytes, size_t n_rows) {
    (void)b;
    for (size_t r = 0; r < n_rows; r++)
        memmove((char *)dst + r * dst_pitch, (const char *)src + r * src_pitch, row_bytes);
    return RECUR_OK;
}

static recur_status_t cpu_memzero(recur_backend_t *b, void *dst, size_t n) {
    if (n) memset(dst, 0, n);
    return RECUR_OK;
}

static recur_status_t cpu_synchronize(recur_backend_t *b) { return RECUR_OK; }

static recur_status_t cpu_weight_upload(recur_backend_t *b, const float *host, int64_t rows, int64_t cols,
                                        recur_weight_use_t use, recur_weight_t *w) {
    const cpu_ctx_t *c = b->ctx;
    const recur_dtype_t dt = use == RECUR_WEIGHT_PROJ ? c->wdt : RECUR_DTYPE_F32;
    *w = (recur_weight_t){.dtype = dt, .rows = rows, .cols = cols};
    if (recur_dtype_is_quant(dt)) { /* codes, then the row scales (recur_quant.h) */
        const size_t nb = recur_quant_buffer_bytes(rows, cols);
        w->data = malloc(nb ? nb : 1);
        if (!w->data) return RECUR_E_NOMEM;
        memset(w->data, 0, nb);
        w->scale = (float *)((char *)w->data + recur_quant_codes_bytes(rows, cols));
        for (int64_t r = 0; r < rows; r++)
            recur_quant_row(host + (size_t)r * (size_t)cols, cols, dt, (uint8_t *)w->data + (size_t)r * (size_t)cols,
                            &w->scale[r]);
        return RECUR_OK;
    }
    size_t n = (size_t)rows * (size_t)cols * sizeof(float);
    w->data = malloc(n ? n : 1);
    if (!w->data) return RECUR_E_NOMEM;
    memcpy(w->data, host, n);
    return RECUR_OK;
}

static void cpu_weight_free(recur_backend_t *b, recur_weight_t *w) {
    free(w->data);
    w->data = NULL;
    w->scale = NULL;
}

static recur_status_t cpu_embed(recur_backend_t *b, const recur_weight_t *emb, const int32_t *tokens,
                                int32_t M, float *out) {
    const float *e = (const float *)emb->data;
    size_t C = (size_t)emb->cols;
    for (int32_t m = 0; m < M; m++) {
        RECUR_ASSERT(tokens[m] >= 0 && tokens[m] < emb->rows);
        memcpy(out + (size_t)m * C, e + (size_t)tokens[m] * C, C * sizeof(float));
    }
    return RECUR_OK;
}

static recur_status_t cpu_layernorm(recur_backend_t *b, const float *x, const float *w, const float *bias,
                                    int32_t M, int32_t C, float eps, float *y) {
    for (int32_t m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * C;
        float *yr = y + (size_t)m * C;
        /* Two passes (mean, then centred variance): no cancellation for rows with a
         * large mean, which the residual stream does have. */
        double mean = 0.0, var = 0.0;
        for (int32_t i = 0; i < C; i++) mean += xr[i];
        mean /= C;
        for (int32_t i = 0; i < C; i++) { double d = xr[i] - mean; var += d * d; }
        var /= C;
        float inv = (float)(1.0 / sqrt(var + (double)eps));
        float fm = (float)mean;
        for (int32_t i = 0; i < C; i++) yr[i] = (xr[i] - fm) * inv * w[i] + bias[i];
    }
    return RECUR_OK;
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* dot_f32 with b given as one-byte codes, each widened through the table v */
static float dot_codes(const float *a, const uint8_t *q, const float *v, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * v[q[i + j]];
    for (; i < n; i++) s[0] += a[i] * v[q[i]];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* matmul with quantized W, as recur_backend.h defines it: up to RECUR_QUANT_GEMV_MAX_M rows
 * the fp32 activations meet the codes' values; above, the activations are first narrowed
 * as a GPU's tensor cores take them (bf16 for int8 weights; per-row scaled e4m3 for fp8),
 * into c->xq. Each row's scale multiplies its finished sum. */
static recur_status_t cpu_matmul_q(cpu_ctx_t *c, const float *x, const recur_weight_t *W, int32_t M, float *y,
                                   int accumulate) {
    const uint8_t *q = (const uint8_t *)W->data;
    const float *v = W->dtype == RECUR_DTYPE_I8 ? c->code_i8 : c->code_f8;
    const int64_t N = W->rows, K = W->cols;
    const float *xs = x, *sx = NULL;
    if (M > RECUR_QUANT_GEMV_MAX_M) {
        const size_t need = (size_t)M * (size_t)K + (size_t)M;
        if (need > c->xq_cap) {
            float *p = realloc(c->xq, need * sizeof(float));
            if (!p) {
                recur_log_err("cpu matmul: out of memory for %zu narrowed activations", need);
                return RECUR_E_NOMEM;
            }
            c->xq = p;
            c->xq_cap = need;
        }
        float *xr = c->xq, *s = c->xq + (size_t)M * (size_t)K;
        for (int32_t m = 0; m < M; m++) {
            const float *xm = x + (size_t)m * K;
            float *o = xr + (size_t)m * K;
            if (W->dtype == RECUR_DTYPE_I8) {
                for (int64_t k = 0; k < K; k++) o[k] = recur_bf16_to_f32(recur_f32_to_bf16(xm[k]));
            } else {
                s[m] = recur_quant_act_scale(xm, K);
                for (int64_t k = 0; k < K; k++) o[k] = recur_e4m3_to_f32(recur_f32_to_e4m3(xm[k] / s[m]));
            }
        }
        xs = xr;
        if (W->dtype == RECUR_DTYPE_F8E4M3) sx = s;
    }
    const int64_t NB = 64;
    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        int64_t n1 = n0 + NB < N ? n0 + NB : N;
        for (int32_t m = 0; m < M; m++) {
            const float *xr = xs + (size_t)m * K;
            float *yr = y + (size_t)m * N;
            for (int64_t n = n0; n < n1; n++) {
                float d = dot_codes(xr, q + (size_t)n * K, v, K) * W->scale[n];
                if (sx) d *= sx[m];
                yr[n] = accumulate ? yr[n] + d : d;
            }
        }
    }
    return RECUR_OK;
}

static recur_status_t cpu_matmul(recur_backend_t *b, const float *x, const recur_weight_t *W, int32_t M,
                                 float *y, int accumulate) {
    if (recur_dtype_is_quant(W->dtype)) return cpu_matmul_q(b->ctx, x, W, M, y, accumulate);
    RECUR_ASSERT(W->dtype == RECUR_DTYPE_F32);
    const float *w = (const float *)W->data;
    int64_t N = W->rows, K = W->cols;
    /* Blocks of rows of W stay in cache while every input row passes over them. */
    const int64_t NB = 64;
    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        int64_t n1 = n0 + NB < N ? n0 + NB : N;
        for (int32_t m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * K;
            float *yr = y + (size_t)m * N;
            for (int64_t n = n0; n < n1; n++) {
                float d = dot_f32(xr, w + (size_t)n * K, K);
                yr[n] = accumulate ? yr[n] + d : d;
            }
        }
    }
    return RECUR_OK;
}

/* y (=|+=) x . Wt with Wt [K][N]: per input row, the nonzero x[m][j] in increasing j each
 * add x[m][j] * Wt[j] into y[m]. A row's arithmetic never depends on M or on the other
 * rows (the model invariants test compares batch shapes bitwise), and exact zeros, which
 * would only add 0, are skipped. */
static recur_status_t cpu_matmul_sparse_in(recur_backend_t *b, const float *x, const recur_weight_t *Wt, int32_t M,
                                           float *y, int accumulate) {
    RECUR_ASSERT(Wt->dtype == RECUR_DTYPE_F32);
    const float *w = (const float *)Wt->data;
    int64_t K = Wt->rows, N = Wt->cols;
    for (int32_t m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * K;
        float *yr = y + (size_t)m * N;
        if (!accumulate) memset(yr, 0, (size_t)N * sizeof(float));
        for (int64_t j = 0; j < K; j++) {
            const float xv = xr[j];
            if (xv == 0.0f) continue;
            const float *wr = w + (size_t)j * N;
            for (int64_t n = 0; n < N; n++) yr[n] += xv * wr[n];
        }
    }
    return RECUR_OK;
}

static recur_status_t cpu_act(recur_backend_t *b, recur_act_t kind, const float *x, int64_t n, float *y) {
    switch (kind) {
    case RECUR_ACT_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case RECUR_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case RECUR_ACT_RELU_SQ:
        for (int64_t i = 0; i < n; i++) { float r = x[i] > 0.f ? x[i] : 0.f; y[i] = r * r; }
        break;
    default:
        RECUR_ASSERT(!"unknown activation");
    }
    return RECUR_OK;
}

static recur_status_t cpu_rmsnorm(recur_backend_t *b, const float *x, const float *w, int32_t M, int32_t C,
                                  float eps, float *y) {
    for (int32_t m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * C;
        float *yr = y + (size_t)m * C;
        double ss = 0.0;
        for (int32_t i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int32_t i = 0; i < C; i++) yr[i] = xr[i] * inv * w[i];
    }
    return RECUR_OK;
}

static recur_status_t cpu_silu_mul(recur_backend_t *b, const float *gate, const float *up, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
    return RECUR_OK;
}

static recur_status_t cpu_softcap(recur_backend_t *b, const float *x, int64_t n, float cap, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = cap * tanhf(x[i] / cap);
    return RECUR_OK;
}

static recur_status_t cpu_gather_rows(recur_backend_t *b, const float *src, const int32_t *idx, int32_t n,
                                      int32_t C, float *dst) {
    for (int32_t i = 0; i < n; i++)
        memmove(dst + (size_t)i * C, src + (size_t)idx[i] * C, (size_t)C * sizeof(float));
    return RECUR_OK;
}

static recur_status_t cpu_token_shift_mix(recur_backend_t *b, const float *x, int32_t C, const recur_rows_t *rows,
                                          recur_state_ref_t st, int32_t n_mix, const float *mix, float *out) {
    size_t MC = (size_t)rows->n_rows * C;
    for (int32_t s = 0; s < rows->n_seq; s++) {
        int32_t r0 = rows->seq_off[s], r1 = rows->seq_off[s + 1];
        float *shift = (float *)((char *)st.pool + (size_t)rows->slot[s] * st.slot_bytes + st.offset);
        for (int32_t t = r0; t < r1; t++) {
            const float *xt = x + (size_t)t * C;
            const float *prev = t == r0 ? shift : xt - C;
            for (int32_t j = 0; j < n_mix; j++) {
                const float *mj = mix + (size_t)j * C;
                float *o = out + j * MC + (size_t)t * C;
                for (int32_t i = 0; i < C; i++) o[i] = xt[i] + (prev[i] - xt[i]) * mj[i];
            }
        }
        /* Only now: the first row above still needed the old stored vector. */
        if (r1 > r0) memcpy(shift, x + (size_t)(r1 - 1) * C, (size_t)C * sizeof(float));
    }
    return RECUR_OK;
}

static float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* exp(-0.5): the RWKV-7 decay is exp(-exp(-0.5) * sigmoid(z)), in (0.5453, 1). */
#define RECUR_RWKV7_DECAY_SCALE 0.6065306597126334f

static recur_status_t cpu_rwkv7_prep(recur_backend_t *b, const recur_rwkv7_prep_args_t *p) {
    int32_t C = p->C, N = p->head_size, H = C / N;
    for (int32_t m = 0; m < p->M; m++) {
        size_t o = (size_t)m * C;
        float *w = p->w + o, *a = p->a + o, *k = p->k + o, *v = p->v + o, *kk = p->kk + o;
        float *vf = p->v_first + o;
        for (int32_t i = 0; i < C; i++) {
            w[i] = expf(-RECUR_RWKV7_DECAY_SCALE * sigmoidf_(p->w0[i] + w[i]));
            a[i] = sigmoidf_(p->a0[i] + a[i]);
            kk[i] = k[i] * p->k_k[i];
        }
        for (int32_t h = 0; h < H; h++) {
            float ss = 0.f;
            for (int32_t j = 0; j < N; j++) ss += kk[h * N + j] * kk[h * N + j];
            float nrm = sqrtf(ss);
            float inv = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
            for (int32_t j = 0; j < N; j++) kk[h * N + j] *= inv;
        }
        for (int32_t i = 0; i < C; i++) k[i] = k[i] * (1.0f + (a[i] - 1.0f) * p->k_a[i]);
        if (!p->v_mix) {
            memcpy(vf, v, (size_t)C * sizeof(float));
        } else {
            const float *vm = p->v_mix + o;
            for (int32_t i = 0; i < C; i++) v[i] = v[i] + (vf[i] - v[i]) * sigmoidf_(p->v0[i] + vm[i]);
        }
    }
    return RECUR_OK;
}

/* A bf16 state row into fp32, and back rounded to nearest even. */
static void bf16_row_load(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = recur_bf16_to_f32(src[i]);
}
static void bf16_row_store(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = recur_f32_to_bf16(src[i]);
}

static recur_status_t cpu_rwkv7_wkv(recur_backend_t *b, const recur_rwkv7_wkv_args_t *p) {
    int32_t C = p->C, N = p->head_size, H = C / N;
    const recur_rows_t *rows = &p->rows;
    const int bf = p->state.mat_dtype == RECUR_DTYPE_BF16;
    RECUR_ASSERT(bf || p->state.mat_dtype == RECUR_DTYPE_F32);
    RECUR_ASSERT(p->state.slot_bytes % 4 == 0 && p->state.offset % 4 == 0); /* recur_state_ref_t */
    const size_t es = recur_dtype_size(p->state.mat_dtype);
    /* bf16: one row of S at a time in fp32 (rows are independent, see below) */
    float *row = bf ? malloc((size_t)N * sizeof(float)) : NULL;
    if (bf && !row) return RECUR_E_NOMEM;
    for (int32_t s = 0; s < rows->n_seq; s++) {
        char *S0 = (char *)p->state.pool + (size_t)rows->slot[s] * p->state.slot_bytes + p->state.offset;
        for (int32_t t = rows->seq_off[s]; t < rows->seq_off[s + 1]; t++) {
            size_t o = (size_t)t * C;
            for (int32_t h = 0; h < H; h++) {
                const float *r = p->r + o + h * N, *w = p->w + o + h * N, *k = p->k + o + h * N;
                const float *v = p->v + o + h * N, *kk = p->kk + o + h * N, *a = p->a + o + h * N;
                float *y = p->y + o + h * N;
                char *S = S0 + (size_t)h * N * N * es;
                /* Rows of S (one per value index) are independent: row i only needs
                 * sa = S[i,:] . (-kk) from before its own update. */
                for (int32_t i = 0; i < N; i++) {
                    float *Si = bf ? row : (float *)S + (size_t)i * N;
                    if (bf) bf16_row_load((const uint16_t *)S + (size_t)i * N, row, (size_t)N);
                    float sa = 0.f;
                    for (int32_t j = 0; j < N; j++) sa -= Si[j] * kk[j];
                    float yi = 0.f;
                    for (int32_t j = 0; j < N; j++) {
                        Si[j] = Si[j] * w[j] + sa * kk[j] * a[j] + v[i] * k[j];
                        yi += Si[j] * r[j];
                    }
                    y[i] = yi;
                    /* bf16: rounded after every token (y above saw the fp32 row) */
                    if (bf) bf16_row_store(row, (uint16_t *)S + (size_t)i * N, (size_t)N);
                }
            }
        }
    }
    free(row);
    return RECUR_OK;
}

static recur_status_t cpu_rwkv7_out(recur_backend_t *b, const recur_rwkv7_out_args_t *p) {
    int32_t C = p->C, N = p->head_size, H = C / N;
    for (int32_t m = 0; m < p->M; m++) {
        size_t o = (size_t)m * C;
        for (int32_t h = 0; h < H; h++) {
            size_t ho = o + (size_t)h * N;
            const float *y = p->y + ho, *r = p->r + ho, *k = p->k + ho, *v = p->v + ho, *g = p->g + ho;
            const float *rk = p->r_k + h * N, *lw = p->ln_w + h * N, *lb = p->ln_b + h * N;
            float *out = p->out + ho;
            float mean = 0.f, var = 0.f, bonus = 0.f;
            for (int32_t j = 0; j < N; j++) mean += y[j];
            mean /= N;
            for (int32_t j = 0; j < N; j++) { float d = y[j] - mean; var += d * d; }
            var /= N;
            float inv = 1.0f / sqrtf(var + p->eps);
            for (int32_t j = 0; j < N; j++) bonus += r[j] * k[j] * rk[j];
            for (int32_t j = 0; j < N; j++)
                out[j] = ((y[j] - mean) * inv * lw[j] + lb[j] + bonus * v[j]) * g[j];
        }
    }
    return RECUR_OK;
}

/* log(sigmoid(x)) without overflow for large |x|. */
static float logsigmoidf_(float x) { return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x)); }

/* One chunk of n <= chunk tokens of one head (models/XLSTM.md §5). The running state
 * (C, n, m) enters as the state before the chunk and leaves as the state after it.
 * Scratch: bcum[n], lg_i[n], dmat[n*n]. */
static void mlstm_chunk(const recur_mlstm_args_t *p, int32_t t0, int32_t nt, int32_t h, float *C, float *nv,
                        float *m, float *bcum, float *ig, float *dmat) {
    const int32_t NH = p->n_head, DK = p->dqk, DV = p->dv;
    const size_t qk_stride = (size_t)NH * DK, v_stride = (size_t)NH * DV;
    const float scale = 1.0f / sqrtf((float)DK), cap = p->gate_cap;
    float acc = 0.f;
    for (int32_t t = 0; t < nt; t++) {
        size_t r = (size_t)(t0 + t) * NH + h;
        float fi = cap * tanhf((p->f_pre[r] + p->f_bias[h]) / cap);
        ig[t] = cap * tanhf((p->i_pre[r] + p->i_bias[h]) / cap);
        acc += logsigmoidf_(fi);
        bcum[t] = acc; /* b_t: inclusive cumulative log forget gate within the chunk */
    }
    const float m_prev = *m;
    /* ---- outputs h_t, from the state before the chunk plus the chunk's own tokens */
    for (int32_t t = 0; t < nt; t++) {
        const float *q = p->q + (size_t)(t0 + t) * qk_stride + (size_t)h * DK;
        float *out = p->h + (size_t)(t0 + t) * v_stride + (size_t)h * DV;
        float mt = bcum[t] + m_prev;
        for (int32_t s = 0; s <= t; s++) {
            float d = bcum[t] - bcum[s] + ig[s];
            dmat[t * nt + s] = d;
            if (d > mt) mt = d;
        }
        float w_prev = expf(bcum[t] + m_prev - mt), den = 0.f;
        for (int32_t j = 0; j < DV; j++) out[j] = 0.f;
        /* inter-chunk part: (q/sqrt(d))^T C_prev and (q/sqrt(d)) . n_prev */
        for (int32_t a = 0; a < DK; a++) {
            float qa = q[a] * scale * w_prev;
            if (qa == 0.f) continue;
            const float *Ca = C + (size_t)a * DV;
            for (int32_t j = 0; j < DV; j++) out[j] += qa * Ca[j];
            den += qa * nv[a];
        }
        /* intra-chunk part */
        for (int32_t s = 0; s <= t; s++) {
            const float *ks = p->k + (size_t)(t0 + s) * qk_stride + (size_t)h * DK;
            const float *vs = p->v + (size_t)(t0 + s) * v_stride + (size_t)h * DV;
            float qk = 0.f;
            for (int32_t a = 0; a < DK; a++) qk += q[a] * ks[a];
            float c = expf(dmat[t * nt + s] - mt) * qk * scale;
            den += c;
            for (int32_t j = 0; j < DV; j++) out[j] += c * vs[j];
        }
        float div = fmaxf(fabsf(den), expf(-mt)) + p->eps;
        for (int32_t j = 0; j < DV; j++) out[j] /= div;
    }
    /* ---- state after the chunk */
    const float g = bcum[nt - 1];
    float m_new = g + m_prev;
    for (int32_t t = 0; t < nt; t++) {
        float a = g - bcum[t] + ig[t];
        if (a > m_new) m_new = a;
    }
    const float decay = expf(g + m_prev - m_new);
    for (size_t e = 0; e < (size_t)DK * DV; e++) C[e] *= decay;
    for (int32_t a = 0; a < DK; a++) nv[a] *= decay;
    for (int32_t t = 0; t < nt; t++) {
        const float *kt = p->k + (size_t)(t0 + t) * qk_stride + (size_t)h * DK;
        const float *vt = p->v + (size_t)(t0 + t) * v_stride + (size_t)h * DV;
        float wt = expf(g - bcum[t] + ig[t] - m_new);
        for (int32_t a = 0; a < DK; a++) {
            float ka = wt * kt[a];
            float *Ca = C + (size_t)a * DV;
            for (int32_t j = 0; j < DV; j++) Ca[j] += ka * vt[j];
            nv[a] += ka;
        }
    }
    *m = m_new;
}

/* BF16 C: a head's C is widened into fp32 scratch when the call reaches it, carried in
 * fp32 through every chunk of the call and rounded once at the end (the GPU's chunked
 * kernels keep C in shared memory or registers the same way); with L = 1, the step form,
 * it is rounded after every token instead, as a step kernel that stores each token's state
 * does. F32 C is updated in place. n and m are F32 in either case. */
static recur_status_t cpu_mlstm(recur_backend_t *b, const recur_mlstm_args_t *p) {
    const int32_t NH = p->n_head, DK = p->dqk, DV = p->dv, L = p->chunk > 0 ? p->chunk : 1;
    const int bf = p->state.mat_dtype == RECUR_DTYPE_BF16;
    RECUR_ASSERT(bf || p->state.mat_dtype == RECUR_DTYPE_F32);
    RECUR_ASSERT(!bf || ((size_t)NH * DK * DV) % 2 == 0);
    RECUR_ASSERT(p->state.slot_bytes % 4 == 0 && p->state.offset % 4 == 0);
    const size_t CE = (size_t)DK * DV, n_off = recur_mlstm_state_n_offset(NH, DK, DV, p->state.mat_dtype);
    /* Scratch sized by the chunk (and a head's C for bf16); small next to the
     * O(L * DK * DV) work it serves, so a per-call allocation is cheap. */
    float *scratch = malloc(((size_t)2 * L + (size_t)L * L + (bf ? CE : 0)) * sizeof(float));
    if (!scratch) return RECUR_E_NOMEM;
    float *cbuf = scratch + (size_t)2 * L + (size_t)L * L;
    for (int32_t s = 0; s < p->rows.n_seq; s++) {
        char *st = (char *)p->state.pool + (size_t)p->rows.slot[s] * p->state.slot_bytes + p->state.offset;
        for (int32_t h = 0; h < NH; h++) {
            uint16_t *Cb = (uint16_t *)st + (size_t)h * CE;
            float *C = bf ? cbuf : (float *)st + (size_t)h * CE;
            float *nv = (float *)(st + n_off) + (size_t)h * DK;
            float *m = (float *)(st + n_off) + (size_t)NH * DK + h;
            if (bf) bf16_row_load(Cb, C, CE);
            for (int32_t t0 = p->rows.seq_off[s]; t0 < p->rows.seq_off[s + 1]; t0 += L) {
                int32_t nt = p->rows.seq_off[s + 1] - t0 < L ? p->rows.seq_off[s + 1] - t0 : L;
                mlstm_chunk(p, t0, nt, h, C, nv, m, scratch, scratch + L, scratch + 2 * L);
                if (bf && L == 1)
                    for (size_t e = 0; e < CE; e++) C[e] = recur_bf16_to_f32(recur_f32_to_bf16(C[e]));
            }
            if (bf) bf16_row_store(C, Cb, CE);
        }
    }
    free(scratch);
    return RECUR_OK;
}

static recur_status_t cpu_xlstm_head_out(recur_backend_t *b, const float *h, const float *o_pre, const float *w,
                                         int32_t M, int32_t NH, int32_t DV, float eps, float *out) {
    for (int32_t m = 0; m < M; m++)
        for (int32_t hh = 0; hh < NH; hh++) {
            size_t o = (size_t)m * NH * DV + (size_t)hh * DV;
            const float *x = h + o;
            double mean = 0.0, var = 0.0;
            for (int32_t j = 0; j < DV; j++) mean += x[j];
            mean /= DV;
            for (int32_t j = 0; j < DV; j++) { double d = x[j] - mean; var += d * d; }
            var /= DV;
            float inv = (float)(1.0 / sqrt(var + (double)eps)), fm = (float)mean;
            for (int32_t j = 0; j < DV; j++)
                out[o + j] = (x[j] - fm) * inv * w[hh * DV + j] * sigmoidf_(o_pre[o + j]);
        }
    return RECUR_OK;
}

/* ---- sampling (recur_sample_op.h defines the op; this is its plain reference) */

static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* One row of the sample op, step for step as recur_sample_op.h words it: sort the
 * candidates along O (s descending, id ascending), cut top-k, filter min-p, cut top-p,
 * then walk O (descending probability) with exact integer masses until the running mass
 * exceeds t. Only candidates with s - s_max >= -RECUR_SAMPLE_CUT are sorted: the others
 * have mass 0 and rank after all of them, so they could only change the count top-k
 * compares with, and a cut past the last sorted candidate keeps the same mass. */
static int32_t cpu_sample_row(cpu_ctx_t *c, const float *l, int32_t nv, const recur_sample_row_t *p) {
    if (nv <= 0) return 0;
    uint64_t first = UINT64_MAX;
    if (!(p->temperature > 0.0f) || p->top_k == 1) { /* greedy: the argmax of the raw logits */
        for (int32_t i = 0; i < nv; i++)
            if (isfinite(l[i])) {
                const uint64_t k = recur_sample_rank_key(l[i] == 0.0f ? 0.0f : l[i], i);
                if (k < first) first = k;
            }
        return first == UINT64_MAX ? 0 : recur_sample_key_id(first);
    }
    const float inv_t = recur_sample_inv_t(p->temperature);
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i])) {
            const uint64_t k = recur_sample_rank_key(recur_sample_scale(l[i], inv_t), i);
            if (k < first) first = k;
        }
    if (first == UINT64_MAX) return 0;
    const float smax = recur_sample_key_s(first);
    size_t n = 0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i])) {
            const float s = recur_sample_scale(l[i], inv_t);
            if (recur_sample_sub(s, smax) >= -RECUR_SAMPLE_CUT) c->keys[n++] = recur_sample_rank_key(s, i);
        }
    qsort(c->keys, n, sizeof *c->keys, cmp_u64); /* keys[0] == first */
    if (p->top_k > 0 && (size_t)p->top_k < n) n = (size_t)p->top_k;
    const int min_p_on = p->min_p > 0.0f;
    uint64_t M = 0;
    for (size_t j = 0; j < n; j++) {
        const float w = recur_sample_exp(recur_sample_sub(recur_sample_key_s(c->keys[j]), smax));
        const int keep = !min_p_on || w >= p->min_p || j == 0;
        c->mass[j] = keep ? recur_sample_q(w) : 0;
        M += c->mass[j];
    }
    if (p->top_p < 1.0f) { /* the shortest prefix reaching X; M becomes its mass */
        const uint64_t X = recur_sample_top_p_target(p->top_p, M);
        uint64_t acc = 0;
        size_t j = 0;
        while (j < n) {
            acc += c->mass[j++];
            if (acc >= X) break;
        }
        M = acc;
        n = j;
    }
    const uint64_t t = recur_sample_draw_target(M, (uint32_t)(recur_sample_uniform(p->seed, p->step) * 16777216.0f));
    uint64_t acc = 0;
    for (size_t j = 0; j < n; j++) {
        acc += c->mass[j];
        if (acc > t) return recur_sample_key_id(c->keys[j]);
    }
    RECUR_ASSERT(!"sample: the draw target lies below the kept mass");
    return 0;
}

/* Steps 1 and 2 of the op (recur_backend.h) on row r of logits, in place: its logit
 * bias, then its penalties, each id at most once per list. */
static void cpu_adjust_row(float *l, int32_t nv, const recur_sample_row_t *p, const recur_sample_extras_t *ex,
                           int32_t r) {
    if (ex->n_bias > 0)
        for (int32_t j = ex->bias_off[r]; j < ex->bias_off[r + 1]; j++) {
            const int32_t t = ex->bias[j].token;
            if (t >= 0 && t < nv) l[t] = recur_sample_add_bias(l[t], ex->bias[j].bias);
        }
    if (ex->n_hist > 0)
        for (int32_t j = ex->hist_off[r]; j < ex->hist_off[r + 1]; j++) {
            const recur_sample_hist_t *h = &ex->hist[j];
            if (h->token >= 0 && h->token < nv)
                l[h->token] = recur_sample_penalize(l[h->token], h->n_all, h->n_out, p->repetition_penalty,
                                                    p->presence_penalty, p->frequency_penalty);
        }
}

/* Step 4 on row r: log-softmax in double over the finite logits of ids [0, nv) (two
 * passes: max, then the sum of e^(l - max)), the sampled token's value, and the k most
 * likely ids by an insertion list of rank keys (the greedy order: logit descending, id
 * ascending). */
static void cpu_logprobs_row(const float *l, int32_t nv, const recur_sample_row_t *p, const recur_sample_extras_t *ex,
                             int32_t r, int32_t token) {
    const int32_t cols = ex->top_n;
    int32_t *tt = cols > 0 ? ex->top_token + (size_t)r * (size_t)cols : NULL;
    float *tl = cols > 0 ? ex->top_logprob + (size_t)r * (size_t)cols : NULL;
    for (int32_t j = 0; j < cols; j++) tt[j] = -1, tl[j] = 0.0f;
    ex->logprob[r] = 0.0f;
    if (p->logprobs < 0) return;
    double mx = -INFINITY, sum = 0.0;
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i]) && l[i] > mx) mx = l[i];
    for (int32_t i = 0; i < nv; i++)
        if (isfinite(l[i])) sum += exp((double)l[i] - mx);
    const double lsum = log(sum);
#define CPU_LOGPROB_(x) (isfinite(x) ? (float)(((double)(x) - mx) - lsum) : -INFINITY)
    ex->logprob[r] = token >= 0 && token < nv ? CPU_LOGPROB_(l[token]) : -INFINITY;
    const int32_t k = p->logprobs < cols ? p->logprobs : cols;
    uint64_t keys[RECUR_SAMPLE_MAX_TOP];
    int32_t have = 0;
    for (int32_t i = 0; i < nv && k > 0; i++) {
        if (!isfinite(l[i])) continue;
        const uint64_t key = recur_sample_rank_key(l[i] == 0.0f ? 0.0f : l[i], i);
        if (have == k && key >= keys[k - 1]) continue;
        int32_t j = have < k ? have++ : k - 1;
        for (; j > 0 && keys[j - 1] > key; j--) keys[j] = keys[j - 1];
        keys[j] = key;
    }
    for (int32_t j = 0; j < have; j++) {
        const int32_t id = recur_sample_key_id(keys[j]);
        tt[j] = id;
        tl[j] = CPU_LOGPROB_(l[id]);
    }
#undef CPU_LOGPROB_
}

static recur_status_t cpu_sample(recur_backend_t *b, float *logits, int32_t n, int32_t V, int32_t n_valid,
                                 const recur_sample_row_t *params, const recur_sample_extras_t *ex, int32_t *tokens) {
    RECUR_ASSERT(n >= 0 && V >= 0);
    const int32_t nv = n_valid < 0 ? 0 : n_valid < V ? n_valid : V;
    RECUR_ASSERT(nv <= RECUR_SAMPLE_MAX_VOCAB);
    RECUR_ASSERT(!ex || !ex->logprob || (ex->top_n >= 0 && ex->top_n <= RECUR_SAMPLE_MAX_TOP));
    if (!b->ctx) {
        b->ctx = calloc(1, sizeof(cpu_ctx_t));
        if (!b->ctx) return RECUR_E_NOMEM;
    }
    cpu_ctx_t *c = b->ctx;
    if ((size_t)nv > c->cap) {
        uint64_t *k = realloc(c->keys, (size_t)nv * sizeof *k);
        if (k) c->keys = k;
        uint64_t *m = realloc(c->mass, (size_t)nv * sizeof *m);
        if (m) c->mass = m;
        if (!k || !m) {
            recur_log_err("cpu sample: out of memory for %d ids", nv);
            return RECUR_E_NOMEM;
        }
        c->cap = (size_t)nv;
    }
    const int adjust = ex && (ex->n_bias > 0 || ex->n_hist > 0), lp = ex && ex->logprob;
    for (int32_t r = 0; r < n; r++) {
        float *l = logits + (size_t)r * (size_t)V;
        if (adjust) cpu_adjust_row(l, nv, &params[r], ex, r);
        tokens[r] = cpu_sample_row(c, l, nv, &params[r]);
        if (lp) cpu_logprobs_row(l, nv, &params[r], ex, r, tokens[r]);
    }
    return RECUR_OK;
}

static void cpu_free(recur_backend_t *b) {
    cpu_ctx_t *c = b->ctx;
    if (c) {
        free(c->keys);
        free(c->mass);
        free(c->xq);
        free(c);
    }
    free(b);
}

recur_status_t recur_backend_cpu_init(const recur_backend_params_t *p, recur_backend_t **out) {
    *out = NULL;
    const recur_dtype_t req = p ? p->weight_dtype : RECUR_DTYPE_F32;
    if (req != RECUR_DTYPE_F32 && req != RECUR_DTYPE_BF16 && !recur_dtype_is_quant(req)) {
        recur_log_err("cpu backend: weight dtype %s is not supported (f32, bf16, int8 or fp8)", recur_dtype_name(req));
        return RECUR_E_UNSUPPORTED;
    }
    recur_backend_t *b = calloc(1, sizeof *b);
    cpu_ctx_t *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return RECUR_E_NOMEM;
    }
    c->wdt = recur_dtype_is_quant(req) ? req : RECUR_DTYPE_F32; /* bf16 is kept as f32 here */
    for (int i = 0; i < 256; i++) {
        c->code_i8[i] = recur_quant_code_value(RECUR_DTYPE_I8, (uint8_t)i);
        c->code_f8[i] = recur_quant_code_value(RECUR_DTYPE_F8E4M3, (uint8_t)i);
    }
    b->ctx = c;
    b->iface = (recur_backend_iface_t){
        .name = cpu_name,
        .alloc = cpu_alloc,
        .buf_free = cpu_buf_free,
        .upload = cpu_memcpy,
        .download = cpu_memcpy,
        .copy = cpu_memcpy,
        .memzero = cpu_memzero,
        .copy_2d = cpu_copy_2d,
        .synchronize = cpu_synchronize,
        .weight_upload = cpu_weight_upload,
        .weight_free = cpu_weight_free,
        .embed = cpu_embed,
        .layernorm = cpu_layernorm,
        .matmul = cpu_matmul,
        .matmul_sparse_in = cpu_matmul_sparse_in,
        .act = cpu_act,
        .rmsnorm = cpu_rmsnorm,
        .silu_mul = cpu_silu_mul,
        .softcap = cpu_softcap,
        .gather_rows = cpu_gather_rows,
        .token_shift_mix = cpu_token_shift_mix,
        .rwkv7_prep = cpu_rwkv7_prep,
        .rwkv7_wkv = cpu_rwkv7_wkv,
        .rwkv7_out = cpu_rwkv7_out,
        .mlstm = cpu_mlstm,
        .xlstm_head_out = cpu_xlstm_head_out,
        .sample = cpu_sample,
        .free = cpu_free,
    };
    /* quantized FFN-down matrices keep the matmul layout (recur_backend.h, matmul_sparse_in) */
    if (recur_dtype_is_quant(c->wdt)) b->iface.matmul_sparse_in = NULL;
    *out = b;
    return RECUR_OK;
}
