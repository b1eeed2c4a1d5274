/* test_backend_cpu.c: every op of the backend table against an independent float64
 * implementation written here from its definition in recur_backend.h, on random inputs
 * with a varlen batch (several sequences of different lengths in shuffled slots).
 * The backend under test is argv[1] ("cpu" by default), so a GPU backend can be held
 * to the same definitions. Tolerances: 1e-5 absolute + 1e-5 relative for fp32 kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recur_backend.h"
#include "recur_testutil.h"

static int failures;
static uint64_t rng = 0x1234567887654321ull;

static float frand(float lo, float hi) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 11) * 0x1.0p-53);
}

static void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = frand(lo, hi);
}

/* backend buffer from host data */
static void *dev(recur_backend_t *b, const void *h, size_t n) {
    void *d = b->iface.alloc(b, n);
    if (h) b->iface.upload(b, d, h, n);
    return d;
}

static void get(recur_backend_t *b, void *h, const void *d, size_t n) { b->iface.download(b, h, d, n); }

static void check(const float *got, const double *want, size_t n, float tol, const char *what) {
    float *w = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) w[i] = (float)want[i];
    if (!recur_allclose(got, w, n, tol, tol, what, NULL)) failures++;
    free(w);
}

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

enum { C = 128, N = 64, H = C / N, M = 11, NSEQ = 4, NSLOT = 6, F = 3 * C };
static const int32_t seq_off[NSEQ + 1] = {0, 1, 5, 6, 11}; /* lengths 1, 4, 1, 5 */
static const int32_t slots[NSEQ] = {4, 1, 5, 2};

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cpu";
    recur_backend_t *b = NULL;
    if (recur_backend_init(name, NULL, &b) != RECUR_OK) return RECUR_TEST_SKIP;
    fprintf(stderr, "backend: %s\n", recur_backend_name(b));
    const float tol = 1e-5f;
    size_t MC = (size_t)M * C;
    float *x = malloc(MC * sizeof(float)), *got = malloc(4 * MC * sizeof(float) + (size_t)M * F * sizeof(float));
    double *want = malloc(4 * MC * sizeof(double) + (size_t)M * F * sizeof(double));
    float w[C], bias[C];
    fill(x, MC, -3.f, 3.f);
    for (int i = 0; i < (int)MC; i += C) x[i] += 50.f; /* a large mean, to catch one-pass variance */
    fill(w, C, 0.5f, 1.5f);
    fill(bias, C, -0.2f, 0.2f);
    float *dx = dev(b, x, MC * sizeof(float)), *dy = dev(b, NULL, 4 * MC * sizeof(float) + (size_t)M * F * sizeof(float));
    float *dw = dev(b, w, sizeof w), *db = dev(b, bias, sizeof bias);

    /* layernorm */
    b->iface.layernorm(b, dx, dw, db, M, C, 1e-5f, dy);
    get(b, got, dy, MC * sizeof(float));
    for (int m = 0; m < M; m++) {
        double mu = 0, var = 0;
        for (int i = 0; i < C; i++) mu += x[m * C + i];
        mu /= C;
        for (int i = 0; i < C; i++) var += (x[m * C + i] - mu) * (x[m * C + i] - mu);
        var /= C;
        for (int i = 0; i < C; i++) want[m * C + i] = (x[m * C + i] - mu) / sqrt(var + 1e-5) * w[i] + bias[i];
    }
    check(got, want, MC, tol, "layernorm");

    /* matmul, then matmul accumulate */
    float *W = malloc((size_t)F * C * sizeof(float));
    fill(W, (size_t)F * C, -0.1f, 0.1f);
    recur_weight_t wt;
    b->iface.weight_upload(b, W, F, C, &wt);
    b->iface.matmul(b, dx, &wt, M, dy, 0);
    b->iface.matmul(b, dx, &wt, M, dy, 1);
    get(b, got, dy, (size_t)M * F * sizeof(float));
    for (int m = 0; m < M; m++)
        for (int n = 0; n < F; n++) {
            double s = 0;
            for (int k = 0; k < C; k++) s += (double)x[m * C + k] * W[(size_t)n * C + k];
            want[(size_t)m * F + n] = 2 * s;
        }
    check(got, want, (size_t)M * F, 1e-4f, "matmul (x2 via accumulate)");

    /* activations */
    static const char *act_names[] = {"act tanh", "act sigmoid", "act relu^2"};
    for (int k = 0; k < 3; k++) {
        b->iface.act(b, (recur_act_t)k, dx, (int64_t)MC, dy);
        get(b, got, dy, MC * sizeof(float));
        for (size_t i = 0; i < MC; i++) {
            double v = x[i] - (i % C == 0 ? 50.0 : 0.0) * 0; /* same input as given */
            want[i] = k == 0 ? tanh(v) : k == 1 ? sig(v) : (v > 0 ? v * v : 0);
        }
        check(got, want, MC, tol, act_names[k]);
    }

    /* embed and gather_rows */
    int32_t idx[5] = {3, 0, 10, 3, 7};
    int32_t *didx = dev(b, idx, sizeof idx);
    b->iface.embed(b, &wt, didx, 5, dy);
    get(b, got, dy, 5 * (size_t)C * sizeof(float));
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < C; k++) want[i * C + k] = W[(size_t)idx[i] * C + k];
    check(got, want, 5 * (size_t)C, 0.f, "embed");
    b->iface.gather_rows(b, dx, didx, 5, C, dy);
    get(b, got, dy, 5 * (size_t)C * sizeof(float));
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < C; k++) want[i * C + k] = x[idx[i] * C + k];
    check(got, want, 5 * (size_t)C, 0.f, "gather_rows");

    /* token shift with mixes, over a varlen batch; and the stored vectors afterwards */
    size_t stride = 3 * (size_t)C + 7; /* an odd stride and offset catch indexing slips */
    size_t off = 5;
    float *pool = malloc(NSLOT * stride * sizeof(float)), *mix = malloc(3 * (size_t)C * sizeof(float));
    fill(pool, NSLOT * stride, -1.f, 1.f);
    fill(mix, 3 * (size_t)C, 0.f, 1.f);
    float *dpool = dev(b, pool, NSLOT * stride * sizeof(float)), *dmix = dev(b, mix, 3 * (size_t)C * sizeof(float));
    int32_t *doff = dev(b, seq_off, sizeof seq_off), *dslot = dev(b, slots, sizeof slots);
    recur_rows_t rows = {.n_rows = M, .n_seq = NSEQ, .seq_off = doff, .slot = dslot};
    b->iface.token_shift_mix(b, dx, C, &rows, (recur_state_ref_t){dpool, stride, off}, 3, dmix, dy);
    get(b, got, dy, 3 * MC * sizeof(float));
    for (int s = 0; s < NSEQ; s++)
        for (int t = seq_off[s]; t < seq_off[s + 1]; t++) {
            const float *prev = t == seq_off[s] ? pool + slots[s] * stride + off : x + (t - 1) * C;
            for (int j = 0; j < 3; j++)
                for (int i = 0; i < C; i++)
                    want[j * MC + t * C + i] = x[t * C + i] + ((double)prev[i] - x[t * C + i]) * mix[j * C + i];
        }
    check(got, want, 3 * MC, tol, "token_shift_mix");
    float *pool2 = malloc(NSLOT * stride * sizeof(float));
    get(b, pool2, dpool, NSLOT * stride * sizeof(float));
    double *wp = malloc(NSLOT * stride * sizeof(double));
    for (size_t i = 0; i < NSLOT * stride; i++) wp[i] = pool[i];
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < C; i++) wp[slots[s] * stride + off + i] = x[(seq_off[s + 1] - 1) * C + i];
    check(pool2, wp, NSLOT * stride, 0.f, "token_shift_mix stored vectors");

    /* rwkv7_prep (layer > 0 and layer 0) */
    for (int layer0 = 0; layer0 <= 1; layer0++) {
        float *in = malloc(7 * MC * sizeof(float)), p5[5 * C];
        fill(in, 7 * MC, -2.f, 2.f);
        fill(p5, 5 * C, -1.f, 1.f);
        float *d_in = dev(b, in, 7 * MC * sizeof(float)), *dp = dev(b, p5, sizeof p5);
        float *dw_ = d_in, *da = d_in + MC, *dk = d_in + 2 * MC, *dv = d_in + 3 * MC, *dkk = d_in + 4 * MC;
        float *dvf = d_in + 5 * MC, *dvm = d_in + 6 * MC;
        recur_rwkv7_prep_args_t pa = {.M = M, .C = C, .head_size = N, .w = dw_, .a = da, .k = dk, .v = dv, .kk = dkk,
                                      .v_first = dvf, .v_mix = layer0 ? NULL : dvm, .w0 = dp, .a0 = dp + C,
                                      .v0 = dp + 2 * C, .k_k = dp + 3 * C, .k_a = dp + 4 * C};
        b->iface.rwkv7_prep(b, &pa);
        float *out = malloc(7 * MC * sizeof(float));
        get(b, out, d_in, 7 * MC * sizeof(float));
        double *e = malloc(7 * MC * sizeof(double));
        for (int m = 0; m < M; m++) {
            for (int hh = 0; hh < H; hh++) {
                double ss = 0;
                for (int j = 0; j < N; j++) {
                    double kk = (double)in[2 * MC + m * C + hh * N + j] * p5[3 * C + hh * N + j];
                    ss += kk * kk;
                }
                double nrm = fmax(sqrt(ss), 1e-12);
                for (int j = 0; j < N; j++) {
                    int i = hh * N + j;
                    size_t o = (size_t)m * C + i;
                    double a = sig(p5[C + i] + (double)in[MC + o]);
                    e[o] = exp(-exp(-0.5) * sig(p5[i] + (double)in[o]));
                    e[MC + o] = a;
                    e[4 * MC + o] = (double)in[2 * MC + o] * p5[3 * C + i] / nrm;
                    e[2 * MC + o] = in[2 * MC + o] * (1 + (a - 1) * p5[4 * C + i]);
                    double v = in[3 * MC + o], vf = in[5 * MC + o];
                    if (layer0) {
                        e[5 * MC + o] = v;
                        e[3 * MC + o] = v;
                    } else {
                        e[5 * MC + o] = vf;
                        e[3 * MC + o] = v + (vf - v) * sig(p5[2 * C + i] + (double)in[6 * MC + o]);
                    }
                    e[6 * MC + o] = in[6 * MC + o];
                }
            }
        }
        check(out, e, 6 * MC, tol, layer0 ? "rwkv7_prep (layer 0)" : "rwkv7_prep (layer > 0)");
        b->iface.buf_free(b, d_in);
        b->iface.buf_free(b, dp);
        free(in);
        free(out);
        free(e);
    }

    /* rwkv7_wkv over the varlen batch, against the textbook recurrence in float64 */
    {
        size_t sstride = (size_t)H * N * N + 3, soff = 3;
        float *st = malloc(NSLOT * sstride * sizeof(float)), *in = malloc(6 * MC * sizeof(float));
        fill(st, NSLOT * sstride, -0.5f, 0.5f);
        fill(in, 6 * MC, -1.f, 1.f);
        for (size_t i = 0; i < MC; i++) in[MC + i] = frand(0.55f, 1.f); /* decay range */
        for (int m = 0; m < M; m++) /* kk: unit vectors per head */
            for (int hh = 0; hh < H; hh++) {
                double ss = 0;
                for (int j = 0; j < N; j++) ss += (double)in[4 * MC + m * C + hh * N + j] * in[4 * MC + m * C + hh * N + j];
                for (int j = 0; j < N; j++) in[4 * MC + m * C + hh * N + j] /= (float)sqrt(ss);
            }
        for (size_t i = 0; i < MC; i++) in[5 * MC + i] = frand(0.f, 1.f); /* a in (0,1) */
        float *dst = dev(b, st, NSLOT * sstride * sizeof(float)), *d_in = dev(b, in, 6 * MC * sizeof(float));
        recur_rwkv7_wkv_args_t wa = {.C = C, .head_size = N, .rows = rows, .r = d_in, .w = d_in + MC,
                                     .k = d_in + 2 * MC, .v = d_in + 3 * MC, .kk = d_in + 4 * MC, .a = d_in + 5 * MC,
                                     .state = {dst, sstride, soff}, .y = dy};
        b->iface.rwkv7_wkv(b, &wa);
        get(b, got, dy, MC * sizeof(float));
        float *st_got = malloc(NSLOT * sstride * sizeof(float));
        get(b, st_got, dst, NSLOT * sstride * sizeof(float));
        double *S = malloc(NSLOT * sstride * sizeof(double));
        for (size_t i = 0; i < NSLOT * sstride; i++) S[i] = st[i];
        for (int s = 0; s < NSEQ; s++)
            for (int t = seq_off[s]; t < seq_off[s + 1]; t++)
                for (int hh = 0; hh < H; hh++) {
                    double *Sh = S + slots[s] * sstride + soff + (size_t)hh * N * N;
                    const float *r = in + t * C + hh * N, *wd = in + MC + t * C + hh * N, *k = in + 2 * MC + t * C + hh * N;
                    const float *v = in + 3 * MC + t * C + hh * N, *kk = in + 4 * MC + t * C + hh * N;
                    const float *a = in + 5 * MC + t * C + hh * N;
                    double sa[N];
                    for (int i = 0; i < N; i++) {
                        sa[i] = 0;
                        for (int j = 0; j < N; j++) sa[i] += Sh[i * N + j] * -(double)kk[j];
                    }
                    for (int i = 0; i < N; i++) {
                        double y = 0;
                        for (int j = 0; j < N; j++) {
                            Sh[i * N + j] = Sh[i * N + j] * wd[j] + sa[i] * kk[j] * a[j] + (double)v[i] * k[j];
                            y += Sh[i * N + j] * r[j];
                        }
                        want[t * C + hh * N + i] = y;
                    }
                }
        check(got, want, MC, 1e-4f, "rwkv7_wkv y");
        check(st_got, S, NSLOT * sstride, 1e-5f, "rwkv7_wkv state (untouched slots exact)");
        free(st);
        free(in);
        free(st_got);
        free(S);
        b->iface.buf_free(b, dst);
        b->iface.buf_free(b, d_in);
    }

    /* rwkv7_out */
    {
        float *in = malloc(5 * MC * sizeof(float)), p3[3 * C];
        fill(in, 5 * MC, -2.f, 2.f);
        fill(p3, 3 * C, -1.f, 1.f);
        float *d_in = dev(b, in, 5 * MC * sizeof(float)), *dp = dev(b, p3, sizeof p3);
        recur_rwkv7_out_args_t oa = {.M = M, .C = C, .head_size = N, .eps = 64e-5f, .y = d_in, .r = d_in + MC,
                                     .k = d_in + 2 * MC, .v = d_in + 3 * MC, .g = d_in + 4 * MC, .r_k = dp,
                                     .ln_w = dp + C, .ln_b = dp + 2 * C, .out = dy};
        b->iface.rwkv7_out(b, &oa);
        get(b, got, dy, MC * sizeof(float));
        for (int m = 0; m < M; m++)
            for (int hh = 0; hh < H; hh++) {
                const float *y = in + m * C + hh * N;
                double mu = 0, var = 0, bonus = 0;
                for (int j = 0; j < N; j++) mu += y[j];
                mu /= N;
                for (int j = 0; j < N; j++) var += (y[j] - mu) * (y[j] - mu);
                var /= N;
                for (int j = 0; j < N; j++)
                    bonus += (double)in[MC + m * C + hh * N + j] * in[2 * MC + m * C + hh * N + j] * p3[hh * N + j];
                for (int j = 0; j < N; j++) {
                    int i = hh * N + j;
                    want[m * C + i] = ((y[j] - mu) / sqrt(var + 64e-5) * p3[C + i] + p3[2 * C + i] +
                                       bonus * in[3 * MC + m * C + i]) * in[4 * MC + m * C + i];
                }
            }
        check(got, want, MC, tol, "rwkv7_out");
        free(in);
        b->iface.buf_free(b, d_in);
        b->iface.buf_free(b, dp);
    }

    /* rmsnorm, silu_mul, softcap */
    b->iface.rmsnorm(b, dx, dw, M, C, 1e-6f, dy);
    get(b, got, dy, MC * sizeof(float));
    for (int m = 0; m < M; m++) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[m * C + i] * x[m * C + i];
        for (int i = 0; i < C; i++) want[m * C + i] = x[m * C + i] / sqrt(ss / C + 1e-6) * w[i];
    }
    check(got, want, MC, tol, "rmsnorm");
    b->iface.silu_mul(b, dx, dx + C, MC - C, dy);
    get(b, got, dy, (MC - C) * sizeof(float));
    for (size_t i = 0; i < MC - C; i++) want[i] = x[i] / (1 + exp(-(double)x[i])) * x[i + C];
    check(got, want, MC - C, tol, "silu_mul");
    b->iface.softcap(b, dx, (int64_t)MC, 15.f, dy);
    get(b, got, dy, MC * sizeof(float));
    for (size_t i = 0; i < MC; i++) want[i] = 15.0 * tanh(x[i] / 15.0);
    check(got, want, MC, tol, "softcap 15");

    /* mLSTM over the varlen batch at several chunk sizes, against the float64 step
     * recurrence of models/XLSTM.md §4, from a non-zero state (as after earlier tokens). */
    {
        enum { NHX = 2, DK = 16, DV = 24 };
        const size_t qk = (size_t)M * NHX * DK, vv = (size_t)M * NHX * DV, per = (size_t)NHX * (DK * DV + DK + 1);
        size_t sstride = per + 5, soff = 2;
        float *q = malloc(qk * sizeof(float)), *kx = malloc(qk * sizeof(float)), *v = malloc(vv * sizeof(float));
        float *ip = malloc((size_t)M * NHX * sizeof(float)), *fp = malloc((size_t)M * NHX * sizeof(float));
        float ib[NHX] = {0.5f, -1.f}, fb[NHX] = {2.f, 0.5f};
        float *st = malloc(NSLOT * sstride * sizeof(float));
        fill(q, qk, -1.f, 1.f);
        fill(kx, qk, -1.f, 1.f);
        fill(v, vv, -1.f, 1.f);
        fill(ip, (size_t)M * NHX, -30.f, 30.f);  /* beyond the soft cap both ways */
        fill(fp, (size_t)M * NHX, -6.f, 8.f);
        fill(st, NSLOT * sstride, -0.3f, 0.3f);
        for (int sl = 0; sl < NSLOT; sl++)     /* m: a few units, n: small positive */
            for (int hh = 0; hh < NHX; hh++) st[sl * sstride + soff + (size_t)NHX * (DK * DV + DK) + hh] = frand(-2.f, 3.f);
        double *S = malloc(NSLOT * sstride * sizeof(double)), *hw = malloc(vv * sizeof(double));
        for (size_t i = 0; i < NSLOT * sstride; i++) S[i] = st[i];
        for (int sq = 0; sq < NSEQ; sq++)
            for (int t = seq_off[sq]; t < seq_off[sq + 1]; t++)
                for (int hh = 0; hh < NHX; hh++) {
                    double *Cm = S + slots[sq] * sstride + soff + (size_t)hh * DK * DV;
                    double *nv = S + slots[sq] * sstride + soff + (size_t)NHX * DK * DV + (size_t)hh * DK;
                    double *mm = S + slots[sq] * sstride + soff + (size_t)NHX * (DK * DV + DK) + hh;
                    double ig = 15 * tanh((ip[t * NHX + hh] + ib[hh]) / 15), fg = 15 * tanh((fp[t * NHX + hh] + fb[hh]) / 15);
                    double lf = -log1p(exp(-fg)), mn = fmax(lf + *mm, ig);
                    double fa = exp(lf + *mm - mn), ia = exp(ig - mn), den = 0;
                    const float *qt = q + (size_t)t * NHX * DK + hh * DK, *kt = kx + (size_t)t * NHX * DK + hh * DK;
                    const float *vt = v + (size_t)t * NHX * DV + hh * DV;
                    for (int a = 0; a < DK; a++) {
                        for (int j = 0; j < DV; j++) Cm[a * DV + j] = fa * Cm[a * DV + j] + ia * kt[a] * vt[j];
                        nv[a] = fa * nv[a] + ia * kt[a];
                        den += qt[a] / sqrt((double)DK) * nv[a];
                    }
                    *mm = mn;
                    double dv = fmax(fabs(den), exp(-mn)) + 1e-6;
                    for (int j = 0; j < DV; j++) {
                        double num = 0;
                        for (int a = 0; a < DK; a++) num += qt[a] / sqrt((double)DK) * Cm[a * DV + j];
                        hw[(size_t)t * NHX * DV + hh * DV + j] = num / dv;
                    }
                }
        float *dq = dev(b, q, qk * 4), *dk = dev(b, kx, qk * 4), *dv = dev(b, v, vv * 4);
        float *dip = dev(b, ip, (size_t)M * NHX * 4), *dfp = dev(b, fp, (size_t)M * NHX * 4);
        float *dib = dev(b, ib, sizeof ib), *dfb = dev(b, fb, sizeof fb), *dh = dev(b, NULL, vv * 4);
        float *dst = dev(b, NULL, NSLOT * sstride * 4), *hgot = malloc(vv * 4), *sgot = malloc(NSLOT * sstride * 4);
        static const int chunks[] = {1, 2, 3, 16};
        for (int c = 0; c < 4; c++) {
            b->iface.upload(b, dst, st, NSLOT * sstride * 4);
            recur_mlstm_args_t ma = {.n_head = NHX, .dqk = DK, .dv = DV, .chunk = chunks[c], .gate_cap = 15.f,
                                     .eps = 1e-6f, .rows = rows, .q = dq, .k = dk, .v = dv, .i_pre = dip,
                                     .f_pre = dfp, .i_bias = dib, .f_bias = dfb, .state = {dst, sstride, soff}, .h = dh};
            b->iface.mlstm(b, &ma);
            get(b, hgot, dh, vv * 4);
            get(b, sgot, dst, NSLOT * sstride * 4);
            char what[64];
            snprintf(what, sizeof what, "mlstm h, chunk %d", chunks[c]);
            check(hgot, hw, vv, 1e-4f, what);
            snprintf(what, sizeof what, "mlstm state, chunk %d", chunks[c]);
            check(sgot, S, NSLOT * sstride, 1e-4f, what);
        }
        void *mb[] = {dq, dk, dv, dip, dfp, dib, dfb, dh, dst};
        for (size_t i = 0; i < sizeof mb / sizeof mb[0]; i++) b->iface.buf_free(b, mb[i]);
        free(q); free(kx); free(v); free(ip); free(fp); free(st); free(S); free(hw); free(hgot); free(sgot);
    }

    /* xlstm_head_out: per-head LayerNorm (no bias) * w * sigmoid(o) */
    {
        enum { NHX = 2, DV = 64 };
        float *hx = malloc(MC * 4), *o = malloc(MC * 4), wv[NHX * DV];
        fill(hx, MC, -2.f, 2.f);
        fill(o, MC, -3.f, 3.f);
        fill(wv, NHX * DV, 0.5f, 1.5f);
        float *dh = dev(b, hx, MC * 4), *dox = dev(b, o, MC * 4), *dwv = dev(b, wv, sizeof wv);
        b->iface.xlstm_head_out(b, dh, dox, dwv, M, NHX, DV, 1e-6f, dy);
        get(b, got, dy, MC * 4);
        for (int m = 0; m < M; m++)
            for (int hh = 0; hh < NHX; hh++) {
                const float *xx = hx + m * C + hh * DV;
                double mu = 0, var = 0;
                for (int j = 0; j < DV; j++) mu += xx[j];
                mu /= DV;
                for (int j = 0; j < DV; j++) var += (xx[j] - mu) * (xx[j] - mu);
                var /= DV;
                for (int j = 0; j < DV; j++)
                    want[m * C + hh * DV + j] = (xx[j] - mu) / sqrt(var + 1e-6) * wv[hh * DV + j] * sig(o[m * C + hh * DV + j]);
            }
        check(got, want, MC, tol, "xlstm_head_out");
        b->iface.buf_free(b, dh);
        b->iface.buf_free(b, dox);
        b->iface.buf_free(b, dwv);
        free(hx);
        free(o);
    }

    b->iface.weight_free(b, &wt);
    void *bufs[] = {dx, dy, dw, db, didx, dpool, dmix, doff, dslot};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) b->iface.buf_free(b, bufs[i]);
    recur_backend_free(b);
    free(x);
    free(got);
    free(want);
    free(W);
    free(pool);
    free(pool2);
    free(wp);
    free(mix);
    fprintf(stderr, "%s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
