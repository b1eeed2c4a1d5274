/* recur_cuda_sample.cu: the sample op (recur_backend.h) on the GPU, one block per row.
 *
 * The op is defined in recur_sample_op.h; the CPU backend is its plain reference (sort
 * the row, walk it). Here nothing is sorted whole. Each row costs a few passes over its
 * logits (the row is re-read from L2, not kept: 64K floats exceed shared memory):
 *   P1  the largest finite logit (s_max is its scaled value); greedy rows instead take
 *       the argmax of the raw logits and stop.
 *   P2  a histogram over 2048 buckets of d = s - s_max in [-28, 0] (linear in d, so a
 *       real distribution spreads over many buckets) with, per bucket, the exact integer
 *       mass (min-p applied) and, when top-k is on, the element count. The bucket never
 *       increases along O (the order s descending, id ascending), so each bucket is a
 *       contiguous run of O.
 *   select: top-k (by count), top-p and the draw (by mass) each pick a bucket from a
 *       prefix scan of the histogram, then collect that bucket's rank keys into shared
 *       memory, sort them (bitonic) and walk them in O. The logits of one bucket form one
 *       interval of floats (recur_sample_bucket_range, found by bisection), so a collect
 *       pass only compares each logit with two bounds. A bucket with more than kCap
 *       elements (e.g. thousands of equal logits) is narrowed first by 256-bin histograms
 *       over ranges of the rank key, which is unique, so this always ends.
 * Elements with d < -28 have mass 0 (recur_sample_op.h) and are skipped; they rank after
 * every other element, so top-k only needs to know whether k reaches past them.
 * Masses are exact uint64 sums and the per-element arithmetic is the header's, so the
 * token equals the CPU backend's bit for bit, whatever the summation order here.
 * Scratch is static shared memory (about 43 KiB per block), plus, for small batches, one
 * fixed buffer of histograms (below).
 *
 * Small batches (up to kFrontMaxRows rows of at least 2 * kFrontSlice logits): one block
 * per row leaves the device nearly idle through P1 and P2, the passes that touch every
 * logit with real arithmetic (a step of a 7B model at batch 1 spent ~110 us here, ncu).
 * There P1 and P2 run first over many blocks per row (front_max_kernel, then
 * front_hist_kernel, each block a slice of the row), summing their histograms into the
 * row's FrontRow in global memory, and sample_kernel starts from that. The sums are exact
 * integers, the maximum and the top element's key are order-free, so the token is the same
 * bit for bit. */
#include <stdint.h>

#include "recur_cuda_internal.h"
#include "recur_sample_op.h"

typedef unsigned long long u64;

static constexpr int kThreads = 1024;  /* one block per row: enough loads in flight for batch 1 */
static constexpr int kWarps = kThreads / 32;
static constexpr int kBuckets = RECUR_SAMPLE_NBUCKETS; /* P2 histogram over d in [-28, 0] */
static constexpr int kCap = 2048;      /* rank keys a bucket may have to be sorted directly */
static constexpr int kBins = 256;      /* refinement histogram over a key range */
static_assert(kWarps == 32 && kBins <= kThreads && kCap <= 2 * kThreads, "the block helpers assume these");

struct SampleSmem {
    unsigned cnt[kBuckets];
    u64 mass[kBuckets];
    u64 list[kCap];      /* collected rank keys, sorted ascending (= along O) */
    unsigned bcnt[kBins];
    u64 bmass[kBins];
    u64 red[kWarps];
    float redf[kWarps];
    u64 res[2];
    unsigned list_n;
    int list_bucket;     /* the bucket whose whole content is sorted in list, or -1 */
};

/* What every thread of the block knows about the row being sampled. */
struct RowP {
    float inv_t, min_p;
    float lmax, smax;    /* the largest finite logit and its scaled value */
    int min_p_on;
    u64 cut;             /* top-k: the rank key of the k-th element (~0: no cut) */
};

/* ------------------------------------------------------------------ block helpers */

static __device__ __forceinline__ u64 warp_min_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 y = __shfl_xor_sync(0xffffffffu, v, o);
        v = y < v ? y : v;
    }
    return v;
}

static __device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The leading barrier lets callers reuse `red` at once (as recur_block_sum). */
static __device__ u64 block_min_u64(u64 v, u64 *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_min_u64(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    return warp_min_u64(lane < kWarps ? red[lane] : ~0ull);
}

static __device__ float block_max_f32(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < kWarps ? red[lane] : -INFINITY;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ u64 block_sum_u64(u64 v, u64 *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_u64(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    return warp_sum_u64(lane < kWarps ? red[lane] : 0ull);
}

/* Exclusive prefix sum over the block in thread order; *total gets the sum of all. */
static __device__ u64 block_excl_scan_u64(u64 v, u64 *red, u64 *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) red[warp] = x;
    __syncthreads();
    if (warp == 0) {
        u64 w = red[lane]; /* kWarps == 32 */
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const u64 y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        red[lane] = w;
    }
    __syncthreads();
    *total = red[kWarps - 1];
    return (warp ? red[warp - 1] : 0ull) + x - v;
}

/* The first index b of h[0..nb) whose inclusive prefix sum reaches X (1 <= X <= sum);
 * *before gets the prefix sum before b. */
template <typename T>
static __device__ int block_find_reach(const T *h, int nb, u64 X, u64 *before, SampleSmem &sm) {
    const int per = (nb + kThreads - 1) / kThreads, b0 = threadIdx.x * per;
    u64 loc = 0;
    for (int j = 0; j < per; j++)
        if (b0 + j < nb) loc += h[b0 + j];
    if (threadIdx.x == 0) { sm.res[0] = (u64)(nb - 1); sm.res[1] = 0; } /* only if X > sum: a bug */
    u64 total;
    const u64 ex = block_excl_scan_u64(loc, sm.red, &total);
    if (ex < X && X <= ex + loc) { /* exactly one thread */
        u64 acc = ex;
        for (int j = 0; j < per; j++) {
            const u64 v = h[b0 + j];
            if (acc + v >= X) { sm.res[0] = (u64)(b0 + j); sm.res[1] = acc; break; }
            acc += v;
        }
    }
    __syncthreads();
    const int b = (int)sm.res[0];
    *before = sm.res[1];
    __syncthreads(); /* res is reused by the next call */
    return b;
}

/* Calls f(i, logit) for every i < nv of the row, with 16-byte loads U deep (batch 1 is
 * one block per row: it needs many loads in flight to pull the row from memory fast).
 * U = 4 for the light passes and 8 for collect (a selection's full pass, on the critical
 * path of a batch-1 step: 7-8 us at U = 4 on an H200); the heavy P2 uses 2, which keeps it
 * within 64 registers. */
template <int U = 4, int NT = kThreads, class F>
static __device__ __forceinline__ void for_each_logit(const float *__restrict__ row, int nv, F &f) {
    int head = (int)(((16u - ((unsigned)(uintptr_t)row & 15u)) & 15u) >> 2);
    head = head < nv ? head : nv;
    for (int i = threadIdx.x; i < head; i += NT) f(i, __ldg(row + i));
    const float4 *v = reinterpret_cast<const float4 *>(row + head);
    const int nvec = (nv - head) >> 2;
    int j = threadIdx.x;
    for (; j + (U - 1) * NT < nvec; j += U * NT) {
        float4 a[U];
#pragma unroll
        for (int u = 0; u < U; u++) a[u] = __ldg(v + j + u * NT);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = head + 4 * (j + u * NT);
            f(i, a[u].x); f(i + 1, a[u].y); f(i + 2, a[u].z); f(i + 3, a[u].w);
        }
    }
    for (; j < nvec; j += NT) {
        const float4 a = __ldg(v + j);
        const int i = head + 4 * j;
        f(i, a.x); f(i + 1, a.y); f(i + 2, a.z); f(i + 3, a.w);
    }
    for (int i = head + 4 * nvec + threadIdx.x; i < nv; i += NT) f(i, __ldg(row + i));
}

/* A histogram add that merges runs of the same bin in registers first: each thread's
 * elements are mostly in different bins, but a row of equal logits would otherwise send
 * every element to one shared-memory address. cnt may be null (counts not wanted). */
struct RunAdd {
    unsigned *cnt;
    u64 *mass;
    int bin = -1;
    unsigned c = 0;
    u64 m = 0;
    __device__ void flush() {
        if (c && cnt) atomicAdd(&cnt[bin], c);
        if (m) atomicAdd(&mass[bin], m);
    }
    __device__ __forceinline__ void add(int b, u64 mv) {
        if (b != bin) {
            flush();
            bin = b;
            c = 0;
            m = 0;
        }
        c++;
        m += mv;
    }
};

/* ------------------------------------------------------------------ per element */

/* A participant: a finite logit with d = s - s_max >= -28 (others have mass 0). */
static __device__ __forceinline__ bool participant(const RowP &rp, float l, float &s, float &d) {
    if (!isfinite(l)) return false;
    s = recur_sample_scale(l, rp.inv_t);
    d = recur_sample_sub(s, rp.smax);
    return d >= -RECUR_SAMPLE_CUT;
}

/* The kept mass of a weight after min-p (top-k aside). min_p > 1 never gets here: such a
 * row keeps its top element alone and is answered before any selection. */
static __device__ __forceinline__ u64 mass_w(const RowP &rp, float d) {
    const float w = recur_sample_exp(d);
    return rp.min_p_on && !(w >= rp.min_p) ? 0ull : recur_sample_q(w);
}

/* ... and after top-k (rp.cut). */
static __device__ __forceinline__ u64 mass_of(const RowP &rp, u64 key, float d) {
    return key > rp.cut ? 0ull : mass_w(rp, d);
}

/* P2 for one logit x at id i: counts it if it participates, keeps the smallest rank key
 * among those at s_max (the top element) and adds its kept mass to its bucket. */
static __device__ __forceinline__ void p2_add(const RowP &rp, float x, int i, u64 &n_part, u64 &first, RunAdd &acc) {
    float s, d;
    if (participant(rp, x, s, d)) {
        n_part++;
        if (d == 0.0f) { /* s == s_max: a candidate for the top element */
            const u64 k = recur_sample_rank_key(s, i);
            first = k < first ? k : first;
        }
        acc.add(recur_sample_bucket_of_d(d), mass_w(rp, d));
    }
}

static __device__ __forceinline__ float key_d(const RowP &rp, u64 key) {
    return recur_sample_sub(recur_sample_key_s(key), rp.smax);
}

/* ------------------------------------------------------------------ selection */

struct Sel {
    u64 key;        /* the selected element */
    u64 mass_incl;  /* kept mass of its bucket's elements up to and including it */
};

/* Small lists (n <= kRankSortMax): each element's place is the number of smaller keys
 * (keys are unique), one barrier instead of a bitonic network's ~45 (which took 4-9 us at
 * 50-350 keys, H200). tmp: n more keys of scratch. */
static constexpr int kRankSortMax = 512;
static __device__ void rank_sort(u64 *a, u64 *tmp, int n) {
    for (int i = threadIdx.x; i < n; i += kThreads) {
        const u64 k = a[i];
        int r = 0;
        for (int j = 0; j < n; j++) r += a[j] < k;
        tmp[r] = k;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kThreads) a[i] = tmp[i];
    __syncthreads();
}

static __device__ void bitonic_sort(u64 *a, int n) {
    int P = 1;
    while (P < n) P <<= 1;
    for (int i = n + threadIdx.x; i < P; i += kThreads) a[i] = ~0ull; /* P <= kCap */
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < P; i += kThreads) {
                const int ixj = i ^ j;
                if (ixj > i) {
                    const u64 x = a[i], y = a[ixj];
                    if ((x > y) == ((i & k) == 0)) { a[i] = y; a[ixj] = x; }
                }
            }
            __syncthreads();
        }
}

/* In ordered-float space [a, z] with P(a) true and P(z) false for a predicate P that is
 * true up to some point and false after it: that last true point. Each warp searches on
 * its own (the whole block calls this, every warp gets the same answer): its 32 lanes test
 * 32 points spread over the interval, which shrinks it ~33x per round, 7 rounds for 32
 * bits where a bisection takes 32 dependent steps (8.5 us a call on an H200; this search
 * runs once or twice per selection). The boundary is unique, so the answer is the
 * bisection's (recur_sample_bucket_range on the host). */
template <class P>
static __device__ __forceinline__ uint32_t warp_last_true(uint32_t a, uint32_t z, P pred) {
    const int lane = threadIdx.x & 31;
    while (z - a > 1) {
        const uint64_t span = (uint64_t)(z - a);
        /* lane i: the (i+1)-th of 32 points strictly inside (a, z), ascending */
        uint32_t m = span > 33 ? a + (uint32_t)(span * (uint64_t)(lane + 1) / 33u) : a + (uint32_t)lane + 1u;
        const bool inside = m < z;
        const bool t = inside && pred(m);
        const unsigned yes = __ballot_sync(0xffffffffu, t), no = __ballot_sync(0xffffffffu, inside && !t);
        /* points are ascending in lane order and P is monotone: the trues are a prefix */
        const int last_yes = yes ? 31 - __clz(yes) : -1, first_no = no ? __ffs(no) - 1 : -1;
        const uint32_t na = last_yes >= 0 ? __shfl_sync(0xffffffffu, m, last_yes) : a;
        const uint32_t nz = first_no >= 0 ? __shfl_sync(0xffffffffu, m, first_no) : z;
        a = na;
        z = nz;
    }
    return a;
}

/* recur_sample_bucket_range (recur_sample_op.h) with both searches by warp_last_true: the
 * same [lo, hi], the logits l <= lmax whose bucket is b. */
static __device__ __noinline__ void bucket_range(int b, const RowP &rp, float *lo, float *hi) {
    const float inv_t = rp.inv_t, smax = rp.smax;
    auto bucket = [&](uint32_t u) { return recur_sample_bucket(recur_sample_funord_(u), inv_t, smax); };
    const uint32_t A = recur_sample_ford_(-FLT_MAX), Z = recur_sample_ford_(rp.lmax);
    /* hi: the last u in [A, Z] with bucket >= b */
    uint32_t h;
    if (bucket(Z) >= b) {
        h = Z;
    } else if (bucket(A) < b) {
        *lo = 1.0f; /* no float reaches bucket b */
        *hi = 0.0f;
        return;
    } else {
        h = warp_last_true(A, Z, [&](uint32_t u) { return bucket(u) >= b; });
    }
    *hi = recur_sample_funord_(h);
    /* lo: the first u in [A, Z] with bucket <= b, i.e. one past the last with bucket > b */
    *lo = bucket(A) <= b ? recur_sample_funord_(A)
                         : recur_sample_funord_(warp_last_true(A, Z, [&](uint32_t u) { return bucket(u) > b; }) + 1u);
}

/* Gathers into sm.list the rank keys in [lo, hi] of the logits in [Llo, Lhi] (one bucket);
 * returns how many there are (only the first kCap are stored). */
static __device__ unsigned collect(SampleSmem &sm, const float *row, int nv, const RowP &rp, float Llo, float Lhi,
                                   u64 lo, u64 hi) {
    if (threadIdx.x == 0) sm.list_n = 0;
    __syncthreads();
    auto f = [&](int i, float x) {
        if (x >= Llo && x <= Lhi) {
            const u64 key = recur_sample_rank_key(recur_sample_scale(x, rp.inv_t), i);
            if (key >= lo && key <= hi) {
                const unsigned pos = atomicAdd(&sm.list_n, 1u);
                if (pos < (unsigned)kCap) sm.list[pos] = key;
            }
        }
    };
    for_each_logit<8>(row, nv, f);
    __syncthreads();
    return sm.list_n;
}

/* In bucket b, the element at count rank `target` (1-based; by_count) or the first whose
 * running kept mass reaches `target` (>= 1), along O. */
static __device__ Sel select_in_bucket(SampleSmem &sm, const float *row, int nv, const RowP &rp, int b, bool by_count,
                                       u64 target) {
    u64 mass_before = 0;
    __syncthreads();
    unsigned n_in;
    if (sm.list_bucket == b) {
        n_in = sm.list_n; /* this bucket is already sorted in list (an earlier selection) */
    } else {
        float Llo, Lhi;
        bucket_range(b, rp, &Llo, &Lhi);
        u64 lo = 0, hi = ~0ull;
        n_in = collect(sm, row, nv, rp, Llo, Lhi, lo, hi);
        if (n_in > (unsigned)kCap) {
            /* Too many to sort: narrow [lo, hi] by 256 bins of the key until few remain. */
            while (n_in > (unsigned)kCap) {
                const u64 span = hi - lo;
                const int bits = 64 - __clzll((long long)span), sh = bits > 8 ? bits - 8 : 0;
                for (int i = threadIdx.x; i < kBins; i += kThreads) { sm.bcnt[i] = 0; sm.bmass[i] = 0; }
                __syncthreads();
                RunAdd acc{sm.bcnt, sm.bmass};
                auto f = [&](int i, float x) {
                    if (x >= Llo && x <= Lhi) {
                        const float s = recur_sample_scale(x, rp.inv_t);
                        const u64 key = recur_sample_rank_key(s, i);
                        if (key >= lo && key <= hi)
                            acc.add((int)((key - lo) >> sh), mass_of(rp, key, recur_sample_sub(s, rp.smax)));
                    }
                };
                for_each_logit(row, nv, f);
                acc.flush();
                __syncthreads();
                u64 before;
                const int bin = by_count ? block_find_reach(sm.bcnt, kBins, target, &before, sm)
                                         : block_find_reach(sm.bmass, kBins, target, &before, sm);
                const u64 mb = block_sum_u64(threadIdx.x < bin ? sm.bmass[threadIdx.x] : 0ull, sm.red);
                target -= before;
                mass_before += mb;
                lo += (u64)bin << sh;
                const u64 w = (1ull << sh) - 1, top = lo > ~0ull - w ? ~0ull : lo + w; /* saturating */
                hi = top < hi ? top : hi;
                n_in = sm.bcnt[bin];
                __syncthreads(); /* everyone has read bcnt before the next pass clears it */
            }
            n_in = collect(sm, row, nv, rp, Llo, Lhi, lo, hi);
        }
        n_in = n_in < (unsigned)kCap ? n_in : (unsigned)kCap; /* only short of a bug */
        if ((int)n_in <= kRankSortMax) rank_sort(sm.list, sm.list + kRankSortMax, (int)n_in);
        else bitonic_sort(sm.list, (int)n_in);
        if (threadIdx.x == 0) sm.list_bucket = (lo == 0 && hi == ~0ull) ? b : -1;
    }
    /* Walk the sorted keys: each thread two consecutive ones, masses by a block scan. */
    const int n = (int)n_in, per = (n + kThreads - 1) / kThreads, j0 = threadIdx.x * per;
    u64 loc = 0;
    for (int j = j0; j < j0 + per && j < n; j++) loc += mass_of(rp, sm.list[j], key_d(rp, sm.list[j]));
    if (threadIdx.x == 0) { sm.res[0] = sm.list[n > 0 ? n - 1 : 0]; sm.res[1] = 0; } /* only on a bug */
    u64 total;
    const u64 ex = block_excl_scan_u64(loc, sm.red, &total);
    if (by_count) {
        const u64 r = target - 1; /* index of the wanted key */
        if (r >= (u64)j0 && r < (u64)(j0 + per) && r < (u64)n) {
            u64 a = ex;
            for (int j = j0; j <= (int)r; j++) a += mass_of(rp, sm.list[j], key_d(rp, sm.list[j]));
            sm.res[0] = sm.list[r];
            sm.res[1] = a;
        }
    } else if (ex < target && target <= ex + loc) {
        u64 a = ex;
        for (int j = j0; j < j0 + per && j < n; j++) {
            a += mass_of(rp, sm.list[j], key_d(rp, sm.list[j]));
            if (a >= target) { sm.res[0] = sm.list[j]; sm.res[1] = a; break; }
        }
    }
    __syncthreads();
    Sel s{sm.res[0], mass_before + sm.res[1]};
    __syncthreads();
    return s;
}

/* ------------------------------------------------------------------ multi-block front */

static constexpr int kFrontThreads = 256;
static constexpr int kFrontSlice = 2048;   /* logits per front block (more when kFrontMaxG caps) */
static constexpr int kFrontMaxG = 64;      /* front blocks per row at most */
static constexpr int kFrontMaxRows = 8;    /* batches up to this many rows use the front */

/* What the front leaves for sample_kernel, per row (global memory; the recur_cuda_ctx_t's
 * sample_front buffer holds kFrontMaxRows of them). */
struct FrontRow {
    unsigned cnt[kBuckets];
    u64 mass[kBuckets];
    u64 first;            /* the top element's rank key (min over blocks) */
    u64 n_part;           /* participants */
    float pmax[kFrontMaxG];  /* each block's largest finite logit (sampling rows) */
    u64 pkey[kFrontMaxG];    /* each block's best rank key (greedy rows) */
};

static __device__ __forceinline__ bool row_greedy(const recur_sample_row_t &p) {
    return !(p.temperature > 0.0f) || p.top_k == 1;
}

/* Greedy's rank key of logit x at id i (the argmax of the raw logits: -0 as +0). */
static __device__ __forceinline__ u64 greedy_key(float x, int i) {
    return recur_sample_rank_key(x == 0.0f ? 0.0f : x, i);
}

/* Slice g of G of a row of nv logits: [*s0, *s0 + *len). */
static __device__ __forceinline__ void front_slice(int nv, int G, int g, int *s0, int *len) {
    const int per = ((nv + G - 1) / G + 3) & ~3; /* whole float4s, so the slices stay aligned as the row */
    const int a = g * per < nv ? g * per : nv, e = a + per < nv ? a + per : nv;
    *s0 = a;
    *len = e - a;
}

/* grid (G, rows): P1 on the block's slice (greedy rows: the argmax key instead), and the
 * row's histogram zeroed for front_hist_kernel (each block a share of it). */
static __global__ void __launch_bounds__(kFrontThreads) front_max_kernel(const float *__restrict__ logits, int V, int nv,
                                                                         const recur_sample_row_t *__restrict__ params,
                                                                         FrontRow *__restrict__ front) {
    __shared__ u64 redk[kFrontThreads / 32];
    __shared__ float redf[kFrontThreads / 32];
    const int g = blockIdx.x, G = gridDim.x, row = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    FrontRow &fr = front[row];
    int s0, len;
    front_slice(nv, G, g, &s0, &len);
    const float *l = logits + (size_t)row * (size_t)V + s0;
    if (row_greedy(params[row])) {
        u64 best = ~0ull;
        auto f = [&](int i, float x) {
            if (isfinite(x)) {
                const u64 k = greedy_key(x, s0 + i);
                best = k < best ? k : best;
            }
        };
        for_each_logit<4, kFrontThreads>(l, len, f);
        best = warp_min_u64(best);
        if (lane == 0) redk[warp] = best;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < kFrontThreads / 32; w++) best = redk[w] < best ? redk[w] : best;
            fr.pkey[g] = best;
        }
        return;
    }
    for (int i = g * kFrontThreads + threadIdx.x; i < kBuckets; i += G * kFrontThreads) {
        fr.cnt[i] = 0;
        fr.mass[i] = 0;
    }
    if (g == 0 && threadIdx.x == 0) {
        fr.first = ~0ull;
        fr.n_part = 0;
    }
    float mx = -INFINITY;
    auto f = [&](int, float x) {
        if (isfinite(x)) mx = fmaxf(mx, x);
    };
    for_each_logit<4, kFrontThreads>(l, len, f);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) redf[warp] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kFrontThreads / 32; w++) mx = fmaxf(mx, redf[w]);
        fr.pmax[g] = mx;
    }
}

/* The row's parameters as sample_kernel's P1 leaves them, from its largest finite logit. */
static __device__ __forceinline__ RowP row_params(const recur_sample_row_t &p, float lmax) {
    RowP rp;
    rp.inv_t = recur_sample_inv_t(p.temperature);
    rp.min_p = p.min_p;
    rp.min_p_on = p.min_p > 0.0f;
    rp.cut = ~0ull;
    rp.lmax = lmax;
    rp.smax = recur_sample_scale(lmax, rp.inv_t);
    return rp;
}

/* The row's largest finite logit from the front blocks' maxima. */
static __device__ __forceinline__ float front_lmax(const FrontRow &fr, int G) {
    float m = -INFINITY;
    for (int i = 0; i < G; i++) m = fmaxf(m, fr.pmax[i]);
    return m;
}

/* grid (G, rows), sampling rows only: P2 on the block's slice into a shared-memory
 * histogram, then added into the row's (integer sums: any order gives the same). */
static __global__ void __launch_bounds__(kFrontThreads) front_hist_kernel(const float *__restrict__ logits, int V, int nv,
                                                                          const recur_sample_row_t *__restrict__ params,
                                                                          FrontRow *__restrict__ front) {
    __shared__ unsigned cnt[kBuckets];
    __shared__ u64 mass[kBuckets];
    __shared__ u64 redk[kFrontThreads / 32], redn[kFrontThreads / 32];
    const int g = blockIdx.x, G = gridDim.x, row = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const recur_sample_row_t p = params[row];
    const bool greedy = row_greedy(p);
    if (!greedy)
        for (int i = threadIdx.x; i < kBuckets; i += kFrontThreads) { cnt[i] = 0; mass[i] = 0; }
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    if (greedy) return;
    FrontRow &fr = front[row];
    const float lmax = front_lmax(fr, G);
    if (!(lmax > -INFINITY)) return; /* no finite logit: sample_kernel answers 0 */
    const RowP rp = row_params(p, lmax);
    int s0, len;
    front_slice(nv, G, g, &s0, &len);
    const float *l = logits + (size_t)row * (size_t)V + s0;
    __syncthreads(); /* the zeroed histogram */
    u64 first = ~0ull, n_part = 0;
    {
        RunAdd acc{cnt, mass};
        auto f = [&](int i, float x) { p2_add(rp, x, s0 + i, n_part, first, acc); };
        for_each_logit<2, kFrontThreads>(l, len, f);
        acc.flush();
    }
    first = warp_min_u64(first);
    n_part = warp_sum_u64(n_part);
    if (lane == 0) { redk[warp] = first; redn[warp] = n_part; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kFrontThreads / 32; w++) {
            first = redk[w] < first ? redk[w] : first;
            n_part += redn[w];
        }
        if (first != ~0ull) atomicMin(&fr.first, first);
        if (n_part) atomicAdd(&fr.n_part, n_part);
    }
    for (int i = threadIdx.x; i < kBuckets; i += kFrontThreads) {
        if (cnt[i]) atomicAdd(&fr.cnt[i], cnt[i]);
        if (mass[i]) atomicAdd(&fr.mass[i], mass[i]);
    }
}

/* ------------------------------------------------------------------ the kernel */

/* One block per row. front: the rows' FrontRow from the multi-block front (G blocks a
 * row), or null (P1 and P2 here). */
static __global__ void __launch_bounds__(kThreads) sample_kernel(const float *__restrict__ logits, int V, int nv,
                                                                 const recur_sample_row_t *__restrict__ params,
                                                                 int32_t *__restrict__ tokens,
                                                                 const FrontRow *__restrict__ front, int G) {
    __shared__ SampleSmem sm;
    const int row = blockIdx.x;
    const float *l = logits + (size_t)row * (size_t)V;
    const recur_sample_row_t p = params[row];
    recur_pdl_wait();
    recur_pdl_launch_dependents();
    const FrontRow *fr = front ? front + row : nullptr;
    if (nv <= 0) {
        if (threadIdx.x == 0) tokens[row] = 0;
        return;
    }
    if (row_greedy(p)) { /* greedy: the argmax of the raw logits */
        u64 best = ~0ull;
        if (fr) {
            if ((int)threadIdx.x < G) best = fr->pkey[threadIdx.x];
        } else {
            auto f = [&](int i, float x) {
                if (isfinite(x)) {
                    const u64 k = greedy_key(x, i);
                    best = k < best ? k : best;
                }
            };
            for_each_logit(l, nv, f);
        }
        best = block_min_u64(best, sm.red);
        if (threadIdx.x == 0) tokens[row] = best == ~0ull ? 0 : recur_sample_key_id(best);
        return;
    }

    /* P1: the largest finite logit; s_max = its scaled value (scaling is monotone) */
    float lmax;
    if (fr) {
        lmax = front_lmax(*fr, G);
    } else {
        float mx = -INFINITY;
        auto f = [&](int, float x) {
            if (isfinite(x)) mx = fmaxf(mx, x);
        };
        for_each_logit(l, nv, f);
        lmax = block_max_f32(mx, sm.redf);
    }
    if (!(lmax > -INFINITY)) { /* no finite logit */
        if (threadIdx.x == 0) tokens[row] = 0;
        return;
    }
    RowP rp = row_params(p, lmax);

    /* P2: kept mass (and count, for top-k) per bucket of d; the top element of O on the side */
    const bool top_k_on = p.top_k > 0;
    if (threadIdx.x == 0) sm.list_bucket = -1;
    u64 first = ~0ull, n_part = 0;
    if (fr) {
        for (int i = threadIdx.x; i < kBuckets; i += kThreads) { sm.cnt[i] = fr->cnt[i]; sm.mass[i] = fr->mass[i]; }
        if (threadIdx.x == 0) { first = fr->first; n_part = fr->n_part; }
    } else {
        for (int i = threadIdx.x; i < kBuckets; i += kThreads) { sm.cnt[i] = 0; sm.mass[i] = 0; }
        __syncthreads();
        RunAdd acc{top_k_on ? sm.cnt : nullptr, sm.mass};
        auto f = [&](int i, float x) { p2_add(rp, x, i, n_part, first, acc); };
        for_each_logit<2>(l, nv, f);
        acc.flush();
    }
    first = block_min_u64(first, sm.red);
    n_part = block_sum_u64(n_part, sm.red); /* its barriers also publish the histogram */
    if (rp.min_p_on && p.min_p > 1.0f) { /* no weight reaches min_p: the top element alone */
        if (threadIdx.x == 0) tokens[row] = recur_sample_key_id(first);
        return;
    }

    /* top-k: find the k-th element along O; the buckets past it lose their mass, its own
     * bucket keeps the mass up to it. */
    if (top_k_on && (u64)p.top_k < n_part) {
        u64 before;
        const int bk = block_find_reach(sm.cnt, kBuckets, (u64)p.top_k, &before, sm);
        const Sel s = select_in_bucket(sm, l, nv, rp, bk, true, (u64)p.top_k - before);
        rp.cut = s.key;
        for (int i = threadIdx.x; i < kBuckets; i += kThreads)
            if (i > bk) sm.mass[i] = 0;
            else if (i == bk) sm.mass[i] = s.mass_incl;
        __syncthreads();
    }
    u64 M = 0;
    for (int i = threadIdx.x; i < kBuckets; i += kThreads) M += sm.mass[i];
    M = block_sum_u64(M, sm.red); /* M1: after top-k and min-p */

    /* top-p: the shortest prefix reaching X; M becomes its mass (M2) */
    if (p.top_p < 1.0f) {
        const u64 X = recur_sample_top_p_target(p.top_p, M);
        if (X == 0) {
            M = RECUR_SAMPLE_ONE; /* top_p <= 0: the top element alone */
        } else {
            u64 before;
            const int bp = block_find_reach(sm.mass, kBuckets, X, &before, sm);
            M = before + select_in_bucket(sm, l, nv, rp, bp, false, X - before).mass_incl;
        }
    }

    /* the draw: the first element whose running mass exceeds t */
    const u64 t = recur_sample_draw_target(M, recur_sample_u24(p.seed, p.step));
    u64 before;
    const int bd = block_find_reach(sm.mass, kBuckets, t + 1, &before, sm);
    const Sel s = select_in_bucket(sm, l, nv, rp, bd, false, t + 1 - before);
    if (threadIdx.x == 0) tokens[row] = recur_sample_key_id(s.key);
}

/* ------------------------------------------------------------------ bias and penalties */

static constexpr int kAdjThreads = 256;

/* Steps 1 and 2 of the op (recur_backend.h) in place, one block per row: the bias list,
 * then (after a barrier, since an id may be in both lists) the history list. The ids of
 * one list are distinct, so no two threads write one logit. */
static __global__ void __launch_bounds__(kAdjThreads) adjust_kernel(float *__restrict__ logits, int V, int nv,
                                                                    const recur_sample_row_t *__restrict__ params,
                                                                    const int32_t *__restrict__ bias_off,
                                                                    const recur_sample_bias_t *__restrict__ bias,
                                                                    const int32_t *__restrict__ hist_off,
                                                                    const recur_sample_hist_t *__restrict__ hist) {
    const int row = blockIdx.x;
    float *l = logits + (size_t)row * (size_t)V;
    if (bias_off)
        for (int j = bias_off[row] + threadIdx.x; j < bias_off[row + 1]; j += kAdjThreads) {
            const recur_sample_bias_t e = bias[j];
            if (e.token >= 0 && e.token < nv) l[e.token] = recur_sample_add_bias(l[e.token], e.bias);
        }
    if (!hist_off) return;
    __syncthreads(); /* the block's global writes above are visible to all its threads */
    const recur_sample_row_t p = params[row];
    for (int j = hist_off[row] + threadIdx.x; j < hist_off[row + 1]; j += kAdjThreads) {
        const recur_sample_hist_t e = hist[j];
        if (e.token >= 0 && e.token < nv)
            l[e.token] = recur_sample_penalize(l[e.token], e.n_all, e.n_out, p.repetition_penalty, p.presence_penalty,
                                               p.frequency_penalty);
    }
}

/* ------------------------------------------------------------------ logprobs */

/* Step 4, one block per row of 1024 threads, after the sample kernel (it reads the
 * sampled token). One pass over the row, in warp tiles of 32 consecutive logits (a warp
 * loads U tiles at a time, so a batch-1 row has enough loads in flight):
 *  - each lane keeps an online log-sum-exp: its running max m and the sum of e^(l - m) in
 *    double, rescaled when m grows;
 *  - when top ids are wanted, each warp keeps the 32 smallest rank keys it has seen, one
 *    per lane, sorted across the lanes; a tile's logits are tested against the warp's
 *    k-th key (one compare and one ballot per 32 logits) and the few that pass are
 *    inserted one at a time by a shuffle (after the first tiles, rarely: a per-thread
 *    list instead was ten times slower, every lane diverging into its insertions).
 * Then the block combines the sums, and a bitonic sort of the warps' k best gives the
 * row's k best. Rows that asked for nothing only write the padding. */
static constexpr int kLpThreads = 1024;
static constexpr int kLpWarps = kLpThreads / 32;
static constexpr int kLpTiles = 8; /* tiles a warp loads before it processes them */
static_assert(RECUR_SAMPLE_MAX_TOP <= 32, "a warp's list is one key per lane");

/* The pass over one row; TOP: also each warp's list (k >= 1). */
template <bool TOP>
static __device__ __forceinline__ void logprobs_pass(const float *__restrict__ l, int nv, int k, float &m, double &s,
                                                     u64 &mine) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_tiles = (nv + 31) >> 5;
    u64 thr = ~0ull; /* the warp's k-th smallest key so far */
    for (int t0 = warp; t0 < n_tiles; t0 += kLpWarps * kLpTiles) {
        float x[kLpTiles];
#pragma unroll
        for (int u = 0; u < kLpTiles; u++) {
            const int i = (t0 + u * kLpWarps) * 32 + lane;
            x[u] = i < nv ? __ldg(l + i) : NAN;
        }
#pragma unroll
        for (int u = 0; u < kLpTiles; u++) {
            const int t = t0 + u * kLpWarps;
            if (t >= n_tiles) break; /* warp-uniform */
            const float v = x[u];
            const bool fin = isfinite(v);
            if (fin) {
                if (v > m) {
                    s = s * (double)expf(m - v) + 1.0;
                    m = v;
                } else {
                    s += (double)expf(v - m);
                }
            }
            if (TOP) {
                const u64 key = recur_sample_rank_key(v == 0.0f ? 0.0f : v, t * 32 + lane);
                unsigned ball = __ballot_sync(0xffffffffu, fin && key < thr);
                while (ball) { /* warp-uniform */
                    const u64 kk = __shfl_sync(0xffffffffu, key, __ffs(ball) - 1);
                    const int pos = __popc(__ballot_sync(0xffffffffu, mine < kk));
                    const u64 up = __shfl_up_sync(0xffffffffu, mine, 1);
                    if (lane > pos) mine = up;
                    else if (lane == pos) mine = kk;
                    thr = __shfl_sync(0xffffffffu, mine, k - 1);
                    ball &= ball - 1;
                    ball &= __ballot_sync(0xffffffffu, key < thr);
                }
            }
        }
    }
}

static __global__ void __launch_bounds__(kLpThreads) logprobs_kernel(const float *__restrict__ logits, int V, int nv,
                                                                     const recur_sample_row_t *__restrict__ params,
                                                                     const int32_t *__restrict__ tokens, int cols,
                                                                     float *__restrict__ logprob,
                                                                     int32_t *__restrict__ top_token,
                                                                     float *__restrict__ top_logprob) {
    __shared__ u64 cand[kLpThreads];
    __shared__ float red_m[kLpWarps];
    __shared__ double red_s[kLpWarps];
    const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *l = logits + (size_t)row * (size_t)V;
    const int want = params[row].logprobs;
    const int k = want < 0 ? 0 : want < cols ? want : cols;
    if (want < 0) {
        if (threadIdx.x == 0) logprob[row] = 0.0f;
        for (int j = threadIdx.x; j < cols; j += kLpThreads) {
            top_token[(size_t)row * cols + j] = -1;
            top_logprob[(size_t)row * cols + j] = 0.0f;
        }
        return;
    }
    float m = -INFINITY;
    double s = 0.0;
    u64 mine = ~0ull; /* lane j: the warp's (j+1)-th smallest key */
    if (k > 0) logprobs_pass<true>(l, nv, k, m, s, mine);
    else logprobs_pass<false>(l, nv, 0, m, s, mine);
    /* the row's max and sum */
    float M = m;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    if (lane == 0) red_m[warp] = M;
    cand[threadIdx.x] = lane < k ? mine : ~0ull;
    __syncthreads();
    M = red_m[0];
    for (int w = 1; w < kLpWarps; w++) M = fmaxf(M, red_m[w]);
    double S = m > -INFINITY ? s * exp((double)m - (double)M) : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) S += __shfl_xor_sync(0xffffffffu, S, o);
    if (lane == 0) red_s[warp] = S;
    __syncthreads();
    S = 0.0;
    for (int w = 0; w < kLpWarps; w++) S += red_s[w];
    const double lsum = log(S);
    if (threadIdx.x == 0) {
        const int t = tokens[row];
        const float x = t >= 0 && t < nv ? l[t] : -INFINITY;
        logprob[row] = isfinite(x) ? (float)(((double)x - (double)M) - lsum) : -INFINITY;
    }
    if (cols == 0) return;
    if (k > 0) /* the block's k best: sort every warp's k best (the rest ~0) */
        for (int size = 2; size <= kLpThreads; size <<= 1)
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                const int i = threadIdx.x, ixj = i ^ stride;
                if (ixj > i) {
                    const u64 x = cand[i], y = cand[ixj];
                    if ((x > y) == ((i & size) == 0)) { cand[i] = y; cand[ixj] = x; }
                }
                __syncthreads();
            }
    for (int j = threadIdx.x; j < cols; j += kLpThreads) {
        const u64 key = j < k ? cand[j] : ~0ull;
        int32_t id = -1;
        float lp = 0.0f;
        if (key != ~0ull) {
            id = recur_sample_key_id(key);
            lp = (float)(((double)l[id] - (double)M) - lsum);
        }
        top_token[(size_t)row * cols + j] = id;
        top_logprob[(size_t)row * cols + j] = lp;
    }
}

recur_status_t recur_cuda_sample(recur_backend_t *b, float *logits, int32_t n, int32_t V, int32_t n_valid,
                                 const recur_sample_row_t *params, const recur_sample_extras_t *ex, int32_t *tokens) {
    recur_cuda_ctx_t *c = recur_cuda_ctx(b);
    RECUR_ASSERT(n >= 0 && V >= 0);
    const int32_t nv = n_valid < 0 ? 0 : n_valid < V ? n_valid : V;
    RECUR_ASSERT(nv <= RECUR_SAMPLE_MAX_VOCAB);
    RECUR_ASSERT(!ex || !ex->logprob || (ex->top_n >= 0 && ex->top_n <= RECUR_SAMPLE_MAX_TOP));
    if (n == 0) return RECUR_OK;
    if (ex && (ex->n_bias > 0 || ex->n_hist > 0)) {
        adjust_kernel<<<(unsigned)n, kAdjThreads, 0, c->stream>>>(
            logits, V, nv, params, ex->n_bias > 0 ? ex->bias_off : nullptr, ex->bias,
            ex->n_hist > 0 ? ex->hist_off : nullptr, ex->hist);
        RCU_LAUNCHED("adjust_kernel");
    }
    /* The multi-block front for small batches of large rows. Its buffer is sized once for
     * kFrontMaxRows rows; while a graph is being recorded nothing may allocate, so a first
     * call there (not seen eagerly before) takes the one-block path, which gives the same
     * tokens. */
    FrontRow *front = nullptr;
    int G = 0;
    if (n <= kFrontMaxRows && nv >= 2 * kFrontSlice) {
        if (!c->sample_front && !c->capturing)
            RECUR_TRY(recur_cuda_scratch_reserve(c, &c->sample_front, &c->sample_front_bytes,
                                                 kFrontMaxRows * sizeof(FrontRow), "sampling histograms"));
        if (c->sample_front) {
            front = (FrontRow *)c->sample_front;
            G = (int)recur_cuda_cdiv(nv, kFrontSlice);
            G = G < kFrontMaxG ? G : kFrontMaxG;
            const dim3 grid((unsigned)G, (unsigned)n);
            RCU_LAUNCH("front_max_kernel", recur_cuda_launch(c, front_max_kernel, grid, dim3(kFrontThreads), 0,
                                                             (const float *)logits, (int)V, (int)nv, params, front));
            RCU_LAUNCH("front_hist_kernel", recur_cuda_launch(c, front_hist_kernel, grid, dim3(kFrontThreads), 0,
                                                              (const float *)logits, (int)V, (int)nv, params, front));
        }
    }
    RCU_LAUNCH("sample_kernel", recur_cuda_launch(c, sample_kernel, dim3((unsigned)n), dim3(kThreads), 0,
                                                  (const float *)logits, (int)V, (int)nv, params, tokens,
                                                  (const FrontRow *)front, G));
    if (ex && ex->logprob) {
        logprobs_kernel<<<(unsigned)n, kLpThreads, 0, c->stream>>>(logits, V, nv, params, tokens, ex->top_n,
                                                                   ex->logprob, ex->top_token, ex->top_logprob);
        RCU_LAUNCHED("logprobs_kernel");
    }
    return RECUR_OK;
}
