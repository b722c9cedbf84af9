/* Fused window attention on the CPU, for inference: O = Softmax(scale * Q K^T + B) V for every
 * (window, head) of a batch in one pass, written straight into the (token, head, channel) layout that
 * the output projection reads.
 *
 * Swin's attention is many tiny problems: Swin-T at 224^2 has 49-token windows, 32 channels per head
 * and 1,536 (window, head) pairs in stage 1 of a batch of 8. Library kernels made for long sequences
 * spend most of their time on per-problem set-up there. This kernel keeps one problem in the L1 cache.
 *
 * Two paths, chosen per call:
 *
 * - AMX (bfloat16 inputs, compiled where the compiler targets AMX-BF16 and used where the OS grants
 *   the tile state): Q K^T and P V are tile products (tdpbf16ps, float32 accumulation); K is
 *   transposed into the tiles' pair layout with 16 x 16 dword transposes, V interleaved into it; the
 *   softmax runs on 16-float vectors. P is rounded to bfloat16 for the second product, as PyTorch's
 *   own bf16 CPU attention rounds it. The problems of a thread run as a software pipeline (amx_run),
 *   so that no tile load reads memory just written. With 32 channels per head, Q is tile-loaded in
 *   place, and a 49th key (7 x 7 windows: 3 blocks of 16 and one) is a one-column tile of its own.
 * - portable (float32, and bfloat16 where AMX is absent): GCC vector extensions of 16 floats, which
 *   the compiler maps to what the host has (-march=native: one AVX-512 register, two AVX2 ones, ...);
 *   every product in float32 (bf16 inputs widened exactly), register blocks of query rows.
 *
 * Both use their own exp, in base 2 (2^n by scalef or the exponent bits, 2^f on [-1/2, 1/2] by a
 * polynomial: 2.3e-7 relative for float32, 2.7e-6 where the result is rounded to bfloat16), not libm's,
 * so no -ffast-math is needed (and none is used: linked with -ffast-math, gcc adds crtfastmath.o, which
 * would switch the whole process to flush-to-zero when the library loads). The softmax takes 16 rows at
 * a time (maxima and sums reduced together), a row's last key(s) past its whole vectors as a column
 * across the rows (TAIL_MAX), and normalizes after the product: O = (2^(T - max) V) / sum.
 *
 * Layouts (all contiguous):
 *   qkv  (BW, N, 3, H, D)  BW = batch * windows, [q | k | v] of each token, float32 or bfloat16
 *   bias (NB, H, N, NP)    float32, times log2(e) (the softmax runs in base 2), NP = N rounded up to 16,
 *                          columns N.. NP-1 = -1e30 (padding keys);
 *                          NB = 1 (one bias for every window) or the windows of one image (bias and
 *                          region mask of window w = w % NB); NULL for none
 *   out  (BW, N, H, D)     the dtype of qkv
 * The (window, head) problems are split among the threads (OpenMP, `nthreads`, the OpenMP runtime
 * PyTorch has loaded), ordered so that those sharing a bias follow each other: one bias block is read
 * from memory once per call, not once per image.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && defined(__AVX512F__) && \
    defined(__linux__)
#define SWL_AMX 1
#else
#define SWL_AMX 0
#endif

/* -DSWL_PROFILE: TSC cycles of the AMX pipeline's steps (prep, out, QK, PV, softmax), summed in
 * swl_profile[0..4] (one thread; development). */
#if defined(SWL_PROFILE) && defined(__x86_64__)
unsigned long long swl_profile[8];
#define PROF_START unsigned long long prof_t0 = __rdtsc()
#define PROF(i)                                  \
    do {                                         \
        const unsigned long long t_ = __rdtsc(); \
        swl_profile[i] += t_ - prof_t0;          \
        prof_t0 = t_;                            \
    } while (0)
#else
#define PROF_START
#define PROF(i)
#endif

#define MAXN 256 /* tokens per window (16 x 16) */
#define MAXD 128 /* channels per head */
#define NEG -1e30f
#define ALIGN 64

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16w __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));   /* unaligned access */
typedef v16h v16hu __attribute__((aligned(2), may_alias));

/* ------------------------------------------------------------------------------------------------ */
/* Vector helpers                                                                                     */

static inline v16 vsplat(float x) { return (v16){0} + x; }

static inline v16 vmax(v16 a, v16 b) {
#if defined(__AVX512F__)
    return (v16)_mm512_max_ps((__m512)a, (__m512)b);
#else
    v16i m = a > b;
    return (v16)((m & (v16i)a) | (~m & (v16i)b));
#endif
}

/* 2^x for x <= 0 (the softmax's arguments after the max is subtracted, in base 2: the logits come
 * multiplied by log2(e)). Inputs below -64 give 2^-64: no denormal is ever produced, here or in P V's
 * products (a denormal result costs ~140 cycles: the shifted windows' -100 mask made float32 P V 2.3x
 * slower with 2^-125), and 49 such weights are 3e-18 of a row's sum. Polynomial of degree DEG (4 or 5)
 * for 2^f on [-1/2, 1/2], fitted for relative error: 2.7e-6 (degree 4, for bfloat16 outputs) and 2.3e-7
 * (degree 5) in float32 arithmetic. */
static inline __attribute__((always_inline)) v16 vexp2(v16 x, const int DEG) {
    x = vmax(x, vsplat(-64.0f));
#if defined(__AVX512F__)
    const v16 n = (v16)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const v16 shifter = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v16 n = x + shifter;
    n -= shifter;
#endif
    const v16 f = x - n;
    v16 p;
    if (DEG <= 4) {
        p = vsplat(0.009569728747010231f);
        p = p * f + 0.05591680854558945f;
        p = p * f + 0.240247443318367f;
        p = p * f + 0.6931219696998596f;
        p = p * f + 0.9999992847442627f;
    } else {
        p = vsplat(0.0013276144163683057f);
        p = p * f + 0.009675435721874237f;
        p = p * f + 0.05550713464617729f;
        p = p * f + 0.24022121727466583f;
        p = p * f + 0.6931469440460205f;
        p = p * f + 1.0000001192092896f;
    }
#if defined(__AVX512F__)
    return (v16)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    const v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16)e;
#endif
}

/* bf16 <-> f32 (round to nearest even, as torch rounds; NaN stays NaN) */
static inline v16 bf16x16_to_f32(v16h h) { return (v16)(__builtin_convertvector(h, v16w) << 16); }

static inline v16h f32_to_bf16x16(v16 f) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    return (v16h)_mm512_cvtneps_pbh((__m512)f);
#else
    v16w u = (v16w)f;
    v16w nan = (v16w)((u & 0x7fffffffu) > 0x7f800000u);
    v16w r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    r = (nan & ((u >> 16) | 0x40u)) | (~nan & r);
    return __builtin_convertvector(r, v16h);
#endif
}

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = ((uint32_t)b) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The 16 x 16 transpose of rows r[0..15] (any 32-bit elements), in four rounds of two-source shuffles
 * (each one vpermt2ps on AVX-512): swap the off-diagonal blocks of 8, then of 4, 2 and 1. */
#if defined(__clang__) || __GNUC__ >= 12
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else /* gcc before 12 has only its own two-source shuffle, with the indices as a vector */
#define SHUF(a, b, ...) __builtin_shuffle(a, b, (v16i){__VA_ARGS__})
#endif
static inline void transpose16(v16 *r) {
    v16 t[16];
    for (int i = 0; i < 8; i++) {
        t[i] = SHUF(r[i], r[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        t[i + 8] = SHUF(r[i], r[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    for (int g = 0; g < 16; g += 8)
        for (int i = g; i < g + 4; i++) {
            r[i] = SHUF(t[i], t[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
            r[i + 4] = SHUF(t[i], t[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        }
    for (int g = 0; g < 16; g += 4)
        for (int i = g; i < g + 2; i++) {
            t[i] = SHUF(r[i], r[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
            t[i + 2] = SHUF(r[i], r[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        }
    for (int i = 0; i < 16; i += 2) {
        r[i] = SHUF(t[i], t[i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        r[i + 1] = SHUF(t[i], t[i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    }
}

/* Reductions of 16 vectors x[0..15] at once: lane r of the result is the max (sum) of x[r]'s lanes.
 * Four rounds of halving (30 shuffles, 15 operations), where one vector at a time takes 4 + 4 each. */
#define TREE16(NAME, OP)                                                                                    \
    static inline v16 NAME(v16 *x) {                                                                        \
        for (int i = 0; i < 8; i++)                                                                         \
            x[i] = OP(SHUF(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),   \
                      SHUF(x[2 * i], x[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)); \
        for (int i = 0; i < 4; i++)                                                                         \
            x[i] = OP(SHUF(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),   \
                      SHUF(x[2 * i], x[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)); \
        for (int i = 0; i < 2; i++)                                                                         \
            x[i] = OP(SHUF(x[2 * i], x[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29),   \
                      SHUF(x[2 * i], x[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)); \
        return OP(SHUF(x[0], x[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),                \
                  SHUF(x[0], x[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));               \
    }
#define VADD(a, b) ((a) + (b))
TREE16(tree_max, vmax)
TREE16(tree_sum, VADD)

/* Keys past the last whole vector of a row handled as columns (a vector across 16 rows, by gathers)
 * where there are at most this many: Swin's 49 tokens are 3 vectors and 1 key, and the fourth vector
 * of every row would be 15/16 padding (AVX-512 builds; elsewhere every row takes whole vectors). */
#if defined(__AVX512F__)
#define TAIL_MAX 3
#else
#define TAIL_MAX 0
#endif

/* The softmax of `rows` (<= 16) rows of n logits s (row stride lds), in base 2: t = s * scale2 + b
 * (scale2 = scale log2 e; b: the bias times log2 e, row stride ldb), e = 2^(t - max t). e goes back
 * into s (pb NULL) or, rounded, to pb as bfloat16 (row stride ldp); inv[r] = 1 / sum e. The maxima and
 * sums of the 16 rows are reduced together (tree_max, tree_sum). nv whole vectors per row, then `tail`
 * keys as columns (see TAIL_MAX); without a tail, the padding of the last vector (bias -1e30) is taken
 * along, and its e written too (2^-64, see vexp2). */
static inline __attribute__((always_inline)) void
softmax_block(float *s, int lds, const float *b, int64_t ldb, int rows, int nv, int tail, float scale2,
              uint16_t *pb, int ldp, float *inv, const int DEG) {
    v16 m[16], mx;
    for (int r = 0; r < 16; r++) {
        if (r >= rows) {
            m[r] = (v16){0};
            continue;
        }
        float *sr = s + r * lds;
        const float *br = b + r * ldb;
        v16 mr = vsplat(NEG);
        for (int v = 0; v < nv; v++) {
            const v16 t = *(const v16 *)(sr + 16 * v) * scale2 + *(const v16u *)(br + 16 * v);
            *(v16 *)(sr + 16 * v) = t;
            mr = vmax(mr, t);
        }
        m[r] = mr;
    }
    mx = tree_max(m);
#if TAIL_MAX
    v16 tv[TAIL_MAX];
    const __mmask16 valid = (__mmask16)((1u << rows) - 1);
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i is = _mm512_mullo_epi32(iota, _mm512_set1_epi32(lds));
    const __m512i ib = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)ldb));
    for (int c = 0; c < tail && c < TAIL_MAX; c++) {
        const int col = 16 * nv + c;
        const v16 sv = (v16)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, is, s + col, 4);
        const v16 bv = (v16)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, ib, b + col, 4);
        tv[c] = sv * scale2 + bv;
        mx = vmax(mx, tv[c]);
    }
#endif
    const float *mxs = (const float *)&mx;
    for (int r = 0; r < 16; r++) {
        if (r >= rows) {
            m[r] = (v16){0};
            continue;
        }
        float *sr = s + r * lds;
        const v16 top = vsplat(mxs[r]);
        v16 sum = (v16){0}, e[16];
        for (int v = 0; v < nv; v++) {
            e[v] = vexp2(*(const v16 *)(sr + 16 * v) - top, DEG);
            sum += e[v];
        }
        m[r] = sum;
        if (!pb) {
            for (int v = 0; v < nv; v++) *(v16 *)(sr + 16 * v) = e[v];
            continue;
        }
        uint16_t *pr = pb + r * ldp;
        int v = 0;
#if defined(__AVX512BF16__)
        for (; v + 2 <= nv; v += 2) /* two vectors rounded by one instruction */
            _mm512_store_si512(pr + 16 * v, (__m512i)_mm512_cvtne2ps_pbh((__m512)e[v + 1], (__m512)e[v]));
#endif
        for (; v < nv; v++) *(v16h *)(pr + 16 * v) = f32_to_bf16x16(e[v]);
    }
    v16 total = tree_sum(m);
#if TAIL_MAX
    for (int c = 0; c < tail && c < TAIL_MAX; c++) {
        const int col = 16 * nv + c;
        const v16 e = vexp2(tv[c] - mx, DEG);
        total += e;
        if (pb) {
            const v16h h = f32_to_bf16x16(e);
            for (int r = 0; r < rows; r++) pb[r * ldp + col] = h[r];
        } else {
            _mm512_mask_i32scatter_ps(s + col, valid, is, (__m512)e, 4);
        }
    }
#endif
    const v16 inv16 = 1.0f / total;
    for (int r = 0; r < rows; r++) inv[r] = inv16[r];
}

/* ------------------------------------------------------------------------------------------------ */
/* Per-call geometry and per-thread scratch                                                          */

typedef struct {
    int n, d, heads, nv, np; /* tokens, channels per head, heads, key vectors (np = 16 nv) */
    int tail;                /* keys of the last vector the softmax takes as columns (TAIL_MAX), or 0 */
    int64_t ld, ldo;         /* token strides of qkv and out (elements) */
    int64_t nb, images;      /* bias blocks (windows of an image, or 1) and images: bw = nb images */
    float scale;             /* scale log2(e) */
    const float *bias;       /* (NB, H, N, np) or the padding row */
    int64_t bias_problem;    /* stride between (window, head) bias blocks; 0: one shared row */
    int64_t bias_row;        /* stride between bias rows (np, or 0 for the padding row) */
} geom;

/* Problem t: offsets of its q (k, v follow at heads d, 2 heads d) in qkv and of its output rows, and its
 * bias. Order (window of the image, head, image): problems that share a bias are neighbours. */
static inline void locate(const geom *g, int64_t t, int64_t *base, int64_t *obase, const float **bias) {
    const int64_t wb = t / (g->heads * g->images), rem = t % (g->heads * g->images);
    const int h = (int)(rem / g->images);
    const int64_t w = (rem % g->images) * g->nb + wb;
    *base = w * g->n * g->ld + (int64_t)h * g->d;
    *obase = w * g->n * g->ldo + (int64_t)h * g->d;
    *bias = g->bias + (wb * g->heads + h) * g->bias_problem;
}

static void *scratch(size_t bytes) {
    void *p = aligned_alloc(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
    if (p) memset(p, 0, bytes);
    return p;
}

/* Per-thread scratch, kept between calls: carved into a call's buffers in the same order every time, and
 * zeroed only when taken for a new shape (key), since a call of the same shape writes the same parts of
 * it and leaves its padding zero (measured: allocating and zeroing it per call was ~3 us of a stage-4
 * call of 200 us). It grows to the largest shape a thread has run (about 1.2 MB at N = 256, d = 128)
 * and lives as long as the thread (OpenMP's pool). */
static __thread char *arena_mem;
static __thread size_t arena_cap;
static __thread uint64_t arena_key;

static char *arena(size_t bytes, uint64_t key) {
    if (arena_mem && arena_key == key && arena_cap >= bytes) return arena_mem;
    if (!arena_mem || arena_cap < bytes) {
        free(arena_mem);
        arena_mem = aligned_alloc(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
        arena_cap = arena_mem ? bytes : 0;
        arena_key = 0;
    }
    if (!arena_mem) return NULL;
    memset(arena_mem, 0, bytes);
    arena_key = key;
    return arena_mem;
}

/* Buffers carved out of a block, 64-byte aligned; with base NULL it only counts the bytes. */
typedef struct {
    char *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return p;
}

/* ------------------------------------------------------------------------------------------------ */
/* Portable path: float32 operands (q, k, v: rows of the problem with token stride ld)                */

typedef struct {
    v16 *kt;   /* K^T: d rows of nv vectors */
    float *p;  /* exp'd logits: n rows of np */
    float *inv;
    float *vp; /* V with channels padded to 16 (d % 16 != 0), n rows of dp */
    float *qc, *kc, *vc; /* bf16 inputs widened (n rows of dp) */
    float *o;  /* output rows before storing (d % 16 != 0 or bf16): rows of dp */
} f32_scratch;

/* Load up to 16 floats (cnt) of a row, zeros after. */
static inline v16 load_part(const float *src, int cnt) {
    if (cnt >= 16) return *(const v16u *)src;
    v16 x = (v16){0};
    for (int i = 0; i < cnt; i++) x[i] = src[i];
    return x;
}

/* Lay the portable path's buffers out in c (sizes only while c->base is NULL). */
static void f32_carve(f32_scratch *fs, const geom *g, int dtype, carver *c) {
    const int n = g->n, dp = 16 * ((g->d + 15) / 16);
    const size_t rowsz = (size_t)n * dp * 4 + 64;
    memset(fs, 0, sizeof *fs);
    fs->kt = carve(c, (size_t)dp * g->nv * sizeof(v16));
    fs->p = carve(c, (size_t)n * g->np * 4 + 64);
    fs->inv = carve(c, (size_t)g->np * 4);
    fs->o = carve(c, rowsz);
    if (dtype == 1) {
        fs->qc = carve(c, rowsz);
        fs->kc = carve(c, rowsz);
    }
    if (dtype == 1 || g->d % 16) fs->vc = carve(c, rowsz);
}

/* One problem, float32. NV (key vectors), DV (channel vectors, d <= 16 DV) constant where the caller
 * passes constants. Output rows of dp = 16 DV floats to o (stride ldo_f), normalized. */
static inline __attribute__((always_inline)) void
problem_f32(const geom *g, const f32_scratch *sc, const float *q, const float *k, const float *v, int64_t ld,
            int64_t vld, const float *bias, float *o, int64_t ldo_f, const int NV, const int DV) {
    const int n = g->n, d = g->d, np = 16 * NV;
    v16 *kt = sc->kt;
    /* K^T: blocks of 16 keys x 16 channels, transposed */
    for (int kb = 0; kb < NV; kb++)
        for (int cb = 0; cb < DV; cb++) {
            v16 r[16];
            const int cnt = d - 16 * cb;
            for (int i = 0; i < 16; i++) {
                const int j = 16 * kb + i;
                r[i] = j < n ? load_part(k + j * ld + 16 * cb, cnt) : (v16){0};
            }
            transpose16(r);
            for (int i = 0; i < 16 && 16 * cb + i < d; i++) kt[(16 * cb + i) * NV + kb] = r[i];
        }
    /* S = Q K^T and the softmax, 4 query rows at a time */
    const float scale = g->scale;
    for (int i0 = 0; i0 < n; i0 += 4) {
        const int rows = n - i0 < 4 ? n - i0 : 4;
        v16 s[4][16];
        for (int r = 0; r < 4; r++)
            for (int u = 0; u < NV; u++) s[r][u] = (v16){0};
        const float *q0 = q + i0 * ld, *q1 = q0 + (rows > 1 ? ld : 0), *q2 = q0 + (rows > 2 ? 2 * ld : 0),
                    *q3 = q0 + (rows > 3 ? 3 * ld : 0);
        for (int c = 0; c < d; c++) {
            const v16 *kr = kt + c * NV;
            const float a0 = q0[c], a1 = q1[c], a2 = q2[c], a3 = q3[c];
            for (int u = 0; u < NV; u++) {
                const v16 kv = kr[u];
                s[0][u] += a0 * kv;
                s[1][u] += a1 * kv;
                s[2][u] += a2 * kv;
                s[3][u] += a3 * kv;
            }
        }
        for (int r = 0; r < rows; r++)
            for (int u = 0; u < NV; u++) *(v16 *)(sc->p + (int64_t)(i0 + r) * np + 16 * u) = s[r][u];
    }
    for (int i0 = 0; i0 < n; i0 += 16)
        softmax_block(sc->p + (int64_t)i0 * np, np, bias + i0 * g->bias_row, g->bias_row, n - i0 < 16 ? n - i0 : 16,
                      NV - (g->tail > 0), g->tail, scale, NULL, 0, sc->inv + i0, 5);
    /* O = P V, RB rows at a time, normalized */
#define RB 8
    for (int i0 = 0; i0 < n; i0 += RB) {
        const int rows = n - i0 < RB ? n - i0 : RB;
        v16 acc[RB][8];
        for (int r = 0; r < RB; r++)
            for (int c = 0; c < DV; c++) acc[r][c] = (v16){0};
        const float *p0 = sc->p + (int64_t)i0 * np;
        if (rows == RB) {
            for (int j = 0; j < n; j++) {
                const float *vr = v + j * vld;
                v16 vv[8];
                for (int c = 0; c < DV; c++) vv[c] = *(const v16u *)(vr + 16 * c);
                for (int r = 0; r < RB; r++) {
                    const float pj = p0[r * np + j];
                    for (int c = 0; c < DV; c++) acc[r][c] += pj * vv[c];
                }
            }
        } else {
            for (int j = 0; j < n; j++) {
                const float *vr = v + j * vld;
                v16 vv[8];
                for (int c = 0; c < DV; c++) vv[c] = *(const v16u *)(vr + 16 * c);
                for (int r = 0; r < rows; r++) {
                    const float pj = p0[r * np + j];
                    for (int c = 0; c < DV; c++) acc[r][c] += pj * vv[c];
                }
            }
        }
        for (int r = 0; r < rows; r++) {
            const float inv = sc->inv[i0 + r];
            float *orow = o + (i0 + r) * ldo_f;
            for (int c = 0; c < DV; c++) *(v16u *)(orow + 16 * c) = acc[r][c] * inv;
        }
    }
#undef RB
}

/* ------------------------------------------------------------------------------------------------ */
/* AMX path (bfloat16)                                                                               */

#if SWL_AMX
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette_id, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static int amx_permitted = -1;

static int amx_request(void) {
    if (amx_permitted < 0) amx_permitted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return amx_permitted;
}

/* Tiles: 0-3 accumulators (16 x 16 float32), 4 the A operand, 5-7 B operands; all 16 rows x 64 bytes,
 * except, where the keys end in a block of one (49 = 3 x 16 + 1) and Q, K are read in place, tile 7:
 * that key's row as a one-column B operand (16 channel pairs x 4 bytes) and tile 3: its logits (16 x 1).
 * Constants in memory: gcc 12 does not know that ldtilecfg reads its operand and drops the stores that
 * fill a configuration on the stack. */
static const tilecfg amx_cfg = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
static const tilecfg amx_cfg_tail = {1, 0, {0}, {64, 64, 64, 4, 64, 64, 64, 4}, {16, 16, 16, 16, 16, 16, 16, 16}};

static void amx_config(int ktail) { _tile_loadconfig(ktail ? &amx_cfg_tail : &amx_cfg); }

/* A tile product whose result nobody reads (tile 2, free between amx_qk's store of it and the next
 * amx_qk's zeroing), issued every few hundred cycles of vector work: the tile unit powers down when idle,
 * and waking it cost ~700 cycles at each problem's first product (measured: one product per problem made
 * a softmax-only loop 1.39x slower; with one of these per 16 softmax rows, 1.03x). */
#define AMX_KEEP_AWAKE() _tile_dpbf16ps(2, 4, 6)

/* Per-thread buffers, several of each where the software pipeline (amx_run) keeps several problems
 * in flight. Sizes: nq = n rounded up to 16 (query rows), nk = n rounded up to 32 (keys), dp = d rounded
 * up to 32 (channels). */
typedef struct {
    uint16_t *qb[2]; /* Q: nq rows x dp (zero padded) */
    uint32_t *kt[2]; /* K^T tiles: [key block][k-step][16 channel pairs][16 keys] */
    uint16_t *vb[3]; /* V tiles: [key step of 32][channel block of 16][16 key pairs][16 x 2] */
    float *s;        /* logits: nq rows x nk */
    uint16_t *p[2];  /* exp'd logits, bf16: nq rows x nk (padding columns zero) */
    float *o[2];     /* P V: nq rows x dp */
    float *inv[3];   /* 1 / row sums */
    int nq, nk, dp;
    int direct;      /* d a multiple of 32: whole blocks of 16 query rows tile-loaded from qkv in place */
    int ktail;       /* direct, and one key past the last whole block of 16: its row is a B tile itself */
} amx_scratch;

/* Lay the buffers out in c (sizes only while c->base is NULL). */
static void amx_carve(amx_scratch *sc, const geom *g, carver *c) {
    memset(sc, 0, sizeof *sc);
    sc->nq = 16 * ((g->n + 15) / 16);
    sc->nk = 32 * ((g->n + 31) / 32);
    sc->dp = 32 * ((g->d + 31) / 32);
    sc->direct = g->d % 32 == 0;
    sc->ktail = g->d % 32 == 0 && g->n % 16 == 1;
    sc->s = carve(c, (size_t)sc->nq * sc->nk * 4);
    for (int i = 0; i < 2; i++) {
        sc->qb[i] = carve(c, (size_t)sc->nq * sc->dp * 2);
        sc->kt[i] = carve(c, (size_t)g->nv * (sc->dp / 32) * 1024);
        sc->p[i] = carve(c, (size_t)sc->nq * sc->nk * 2);
        sc->o[i] = carve(c, (size_t)sc->nq * sc->dp * 4);
    }
    for (int i = 0; i < 3; i++) {
        sc->vb[i] = carve(c, (size_t)(sc->nk / 32) * (sc->dp / 16) * 1024);
        sc->inv[i] = carve(c, (size_t)sc->nq * 4);
    }
}

static inline __m512i load_bf16_row(const uint16_t *src, int cnt) { /* up to 32 bf16, zeros after */
    if (cnt >= 32) return _mm512_loadu_si512(src);
    return _mm512_maskz_loadu_epi16(cnt <= 0 ? 0 : (__mmask32)((1ull << cnt) - 1), src);
}

/* Q copied (zero padded; in direct mode only the rows past the last whole block of 16), K transposed into
 * the tiles' pair layout (tile (kb, ks) row r: channels 2r, 2r+1 of step ks of keys 16 kb..; the tail key
 * is left to amx_qk), V interleaved into it (tile (key step, channel block) row r: keys 2r, 2r+1
 * interleaved, channel by channel). */
static void amx_prep(const geom *g, const amx_scratch *sc, const uint16_t *q, uint16_t *qb, uint32_t *kt,
                     uint16_t *vb) {
    const int n = g->n, d = g->d, nv = g->nv, dp = sc->dp, ksteps = dp / 32, ncb = dp / 16;
    const int64_t ld = g->ld;
    const uint16_t *k = q + (int64_t)g->heads * d, *v = k + (int64_t)g->heads * d;
    for (int i = sc->direct ? n - n % 16 : 0, r = 0; i < n; i++, r++)
        for (int ks = 0; ks < ksteps; ks++)
            _mm512_store_si512(qb + r * dp + 32 * ks, load_bf16_row(q + i * ld + 32 * ks, d - 32 * ks));
    AMX_KEEP_AWAKE();
    for (int kb = 0; kb < nv - sc->ktail; kb++)
        for (int ks = 0; ks < ksteps; ks++) {
            v16 r[16];
            for (int i = 0; i < 16; i++) {
                const int j = 16 * kb + i;
                r[i] = j < n ? (v16)load_bf16_row(k + j * ld + 32 * ks, d - 32 * ks) : (v16){0};
            }
            transpose16(r);
            uint32_t *tile = kt + (kb * ksteps + ks) * 256;
            for (int i = 0; i < 16; i++) *(v16 *)(tile + 16 * i) = r[i];
        }
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7,
                                        38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    AMX_KEEP_AWAKE();
    for (int pr = 0; pr < (n + 1) / 2; pr++) {
        const int j = 2 * pr;
        for (int ks = 0; ks < ksteps; ks++) {
            const __m512i a = load_bf16_row(v + j * ld + 32 * ks, d - 32 * ks);
            const __m512i b = j + 1 < n ? load_bf16_row(v + (j + 1) * ld + 32 * ks, d - 32 * ks)
                                        : _mm512_setzero_si512();
            uint16_t *t0 = vb + (((pr / 16) * ncb + 2 * ks) * 16 + pr % 16) * 32;
            _mm512_store_si512(t0, _mm512_permutex2var_epi16(a, lo, b));
            _mm512_store_si512(t0 + 512, _mm512_permutex2var_epi16(a, hi, b));
        }
    }
}

/* S = Q K^T: tiles 0-3 accumulate four key blocks at a time (three, and the tail key in tile 3, where
 * there is one); A is a block of 16 query rows, in place in qkv in direct mode. */
static void amx_qk(const geom *g, const amx_scratch *sc, const uint16_t *q, const uint16_t *qb,
                   const uint32_t *kt) {
    const int n = g->n, dp = sc->dp, nk = sc->nk, ksteps = dp / 32, nfull = g->nv - sc->ktail;
    const int64_t ld = g->ld;
    const uint16_t *ktail = q + (int64_t)g->heads * g->d + 16 * nfull * ld; /* the tail key's row */
    for (int qb0 = 0; qb0 < sc->nq; qb0 += 16) {
        const uint16_t *a = qb + qb0 * dp;
        int64_t lda = dp * 2;
        if (sc->direct) {
            a = qb0 + 16 <= n ? q + qb0 * ld : qb;
            lda = qb0 + 16 <= n ? ld * 2 : dp * 2;
        }
        float *srow = sc->s + qb0 * nk;
        int kb = 0;
        if (!sc->ktail)
            for (; kb + 4 <= nfull; kb += 4) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int ks = 0; ks < ksteps; ks++) {
                    _tile_loadd(4, a + 32 * ks, lda);
                    _tile_loadd(5, kt + ((kb + 0) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(0, 4, 5);
                    _tile_loadd(6, kt + ((kb + 1) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(1, 4, 6);
                    _tile_loadd(7, kt + ((kb + 2) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(2, 4, 7);
                    _tile_loadd(5, kt + ((kb + 3) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
                _tile_stored(0, srow + 16 * (kb + 0), nk * 4);
                _tile_stored(1, srow + 16 * (kb + 1), nk * 4);
                _tile_stored(2, srow + 16 * (kb + 2), nk * 4);
                _tile_stored(3, srow + 16 * (kb + 3), nk * 4);
            }
        else
            for (; kb + 3 <= nfull; kb += 3) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                for (int ks = 0; ks < ksteps; ks++) {
                    _tile_loadd(4, a + 32 * ks, lda);
                    _tile_loadd(5, kt + ((kb + 0) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(0, 4, 5);
                    _tile_loadd(6, kt + ((kb + 1) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(1, 4, 6);
                    _tile_loadd(5, kt + ((kb + 2) * ksteps + ks) * 256, 64);
                    _tile_dpbf16ps(2, 4, 5);
                }
                _tile_stored(0, srow + 16 * (kb + 0), nk * 4);
                _tile_stored(1, srow + 16 * (kb + 1), nk * 4);
                _tile_stored(2, srow + 16 * (kb + 2), nk * 4);
            }
        for (; kb < nfull; kb++) {
            _tile_zero(0);
            for (int ks = 0; ks < ksteps; ks++) {
                _tile_loadd(4, a + 32 * ks, lda);
                _tile_loadd(5, kt + (kb * ksteps + ks) * 256, 64);
                _tile_dpbf16ps(0, 4, 5);
            }
            _tile_stored(0, srow + 16 * kb, nk * 4);
        }
        if (sc->ktail) {
            _tile_zero(3);
            for (int ks = 0; ks < ksteps; ks++) {
                _tile_loadd(4, a + 32 * ks, lda);
                _tile_loadd(7, ktail + 32 * ks, 4); /* row r: dword r of the key = channels 2r, 2r+1 */
                _tile_dpbf16ps(3, 4, 7);
            }
            _tile_stored(3, srow + 16 * nfull, nk * 4);
        }
    }
}

/* The softmax of S, 16 rows at a time, into P (bf16) and inv. */
static void amx_softmax(const geom *g, const amx_scratch *sc, const float *bias, uint16_t *p, float *inv) {
    const int n = g->n, nk = sc->nk;
    for (int i0 = 0; i0 < n; i0 += 16) {
        AMX_KEEP_AWAKE();
        softmax_block(sc->s + i0 * nk, nk, bias + i0 * g->bias_row, g->bias_row, n - i0 < 16 ? n - i0 : 16,
                      g->nv - (g->tail > 0), g->tail, g->scale, p + i0 * nk, nk, inv + i0, 4);
    }
}

/* O = P V (tiles 0, 1: two channel blocks at a time). */
static void amx_pv(const amx_scratch *sc, const uint16_t *p, const uint16_t *vb, float *o) {
    const int nk = sc->nk, dp = sc->dp, ncb = dp / 16, vsteps = nk / 32;
    for (int qb0 = 0; qb0 < sc->nq; qb0 += 16) {
        const uint16_t *a = p + qb0 * nk;
        float *orow = o + qb0 * dp;
        for (int cb = 0; cb + 2 <= ncb; cb += 2) {
            _tile_zero(0);
            _tile_zero(1);
            for (int ks = 0; ks < vsteps; ks++) {
                _tile_loadd(4, a + 32 * ks, nk * 2);
                _tile_loadd(5, vb + ((ks * ncb) + cb) * 512, 64);
                _tile_dpbf16ps(0, 4, 5);
                _tile_loadd(6, vb + ((ks * ncb) + cb + 1) * 512, 64);
                _tile_dpbf16ps(1, 4, 6);
            }
            _tile_stored(0, orow + 16 * cb, dp * 4);
            _tile_stored(1, orow + 16 * (cb + 1), dp * 4);
        }
    }
}

/* Normalize the rows of O, round them to bf16, store them (token stride ldo). */
static void amx_out(const geom *g, const amx_scratch *sc, const float *o, const float *inv, uint16_t *out) {
    const int n = g->n, d = g->d, dp = sc->dp;
    for (int i = 0; i < n; i++) {
        if (i % 32 == 0) AMX_KEEP_AWAKE();
        const __m512 scale = _mm512_set1_ps(inv[i]);
        const float *orow = o + i * dp;
        uint16_t *dst = out + i * g->ldo;
        int c = 0;
        for (; c + 32 <= d; c += 32) /* two vectors rounded by one instruction */
            _mm512_storeu_si512(dst + c, (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_load_ps(orow + c + 16), scale),
                                                                      _mm512_mul_ps(_mm512_load_ps(orow + c), scale)));
        for (; c < d; c += 16) {
            const v16h h = f32_to_bf16x16((v16)_mm512_mul_ps(_mm512_load_ps(orow + c), scale));
            if (d - c >= 16)
                *(v16hu *)(dst + c) = h;
            else
                _mm256_mask_storeu_epi16(dst + c, (__mmask16)((1u << (d - c)) - 1), (__m256i)h);
        }
    }
}

/* Problems [lo, hi) on this thread, as a software pipeline: iteration k prepares problem k + 2, stores the
 * output of k - 1, multiplies Q K^T of k + 1 and P V of k, and takes the softmax of k + 1. Every tile load
 * then reads memory written an iteration earlier, and every vector load memory that tiles stored an
 * iteration earlier: straight after the stores, P V took 1000 cycles (TSC, one problem of Swin-T's
 * stage 1), 380 with the stores long done. The two tile products are next to each other (one wake-up
 * of the tile unit per problem instead of two: x1.01-1.09 per call over three A/B runs, ~x1.04), and
 * AMX_KEEP_AWAKE keeps it from powering down during the vector steps (x1.07-1.09 on top).
 * Measured, and not kept: software prefetches of the next problems' rows, bias and output (x0.94-1.0:
 * the hardware's own prefetch does better; also on the portable path: x0.91-1.0), other orders of the
 * five steps (x0.87-0.95). */
static void amx_run(const geom *g, const amx_scratch *sc, const uint16_t *qkv, uint16_t *out, int64_t lo,
                    int64_t hi) {
    const int64_t cnt = hi - lo;
    int64_t base, obase;
    const float *bias;
    for (int64_t k = -2; k <= cnt; k++) {
        PROF_START;
        if (k + 2 < cnt) {
            const int64_t t = k + 2;
            locate(g, lo + t, &base, &obase, &bias);
            amx_prep(g, sc, qkv + base, sc->qb[t % 2], sc->kt[t % 2], sc->vb[t % 3]);
        }
        PROF(0);
        if (k - 1 >= 0) {
            locate(g, lo + k - 1, &base, &obase, &bias);
            amx_out(g, sc, sc->o[(k - 1) % 2], sc->inv[(k - 1) % 3], out + obase);
        }
        PROF(1);
        if (k + 1 >= 0 && k + 1 < cnt) {
            locate(g, lo + k + 1, &base, &obase, &bias);
            amx_qk(g, sc, qkv + base, sc->qb[(k + 1) % 2], sc->kt[(k + 1) % 2]);
        }
        PROF(2);
        if (k >= 0 && k < cnt) amx_pv(sc, sc->p[k % 2], sc->vb[k % 3], sc->o[k % 2]);
        PROF(3);
        if (k + 1 >= 0 && k + 1 < cnt) {
            locate(g, lo + k + 1, &base, &obase, &bias);
            amx_softmax(g, sc, bias, sc->p[(k + 1) % 2], sc->inv[(k + 1) % 3]);
        }
        PROF(4);
    }
}
#endif /* SWL_AMX */

/* ------------------------------------------------------------------------------------------------ */
/* Entry points                                                                                      */

enum { CAP_AVX512 = 1, CAP_AVX512BF16 = 2, CAP_AMX_COMPILED = 4, CAP_AMX = 8 };

/* What this build can do here: AVX-512 vectors, native bf16 conversion, AMX compiled, AMX granted. */
int swinlab_wa_capabilities(void) {
    int caps = 0;
#if defined(__AVX512F__)
    caps |= CAP_AVX512;
#endif
#if defined(__AVX512BF16__)
    caps |= CAP_AVX512BF16;
#endif
#if SWL_AMX
    caps |= CAP_AMX_COMPILED;
    if (amx_request()) caps |= CAP_AMX;
#endif
    return caps;
}

/* The calling thread's SSE control and status register (flush-to-zero: bit 15, denormals-are-zero: bit 6),
 * for the test that loading this library leaves the floating-point mode alone; 0 off x86. */
unsigned swinlab_wa_mxcsr(void) {
#if defined(__x86_64__)
    return _mm_getcsr();
#else
    return 0;
#endif
}

/* Dispatch of the portable problem on its constant shapes: windows up to 8 x 8 (nv <= 4) with 16 or 32
 * channels per head (Swin's heads have 32); anything else through the general instance. */
#define F32_CASES(X) X(1, 1) X(1, 2) X(2, 1) X(2, 2) X(3, 1) X(3, 2) X(4, 1) X(4, 2)

#define F32_INSTANCE(NV, DV)                                                                              \
    static void problem_f32_##NV##_##DV(const geom *g, const f32_scratch *sc, const float *q,              \
                                        const float *k, const float *v, int64_t ld, int64_t vld,           \
                                        const float *bias, float *o, int64_t ldo) {                        \
        problem_f32(g, sc, q, k, v, ld, vld, bias, o, ldo, NV, DV);                                        \
    }
F32_CASES(F32_INSTANCE)

static void problem_f32_any(const geom *g, const f32_scratch *sc, const float *q, const float *k,
                            const float *v, int64_t ld, int64_t vld, const float *bias, float *o, int64_t ldo) {
    problem_f32(g, sc, q, k, v, ld, vld, bias, o, ldo, g->nv, (g->d + 15) / 16);
}

typedef void (*f32_fn)(const geom *, const f32_scratch *, const float *, const float *, const float *,
                       int64_t, int64_t, const float *, float *, int64_t);

static f32_fn pick_f32(int nv, int dv) {
#define F32_PICK(NV, DV) \
    if (nv == NV && dv == DV) return problem_f32_##NV##_##DV;
    F32_CASES(F32_PICK)
#undef F32_PICK
    return problem_f32_any;
}

/* The shapes every entry point takes: 1..MAXN tokens, 1..MAXD channels per head, bw a multiple of the
 * nb bias (or mask) blocks, float32 (0) or bfloat16 (1). */
static int args_ok(int dtype, int64_t bw, int64_t nb, int n, int heads, int d, int nthreads) {
    return n >= 1 && n <= MAXN && d >= 1 && d <= MAXD && heads >= 1 && bw >= 1 && nb >= 1 && bw % nb == 0 &&
           nthreads >= 1 && (dtype == 0 || dtype == 1);
}

/* Run the attention of bw windows (see the layouts at the top). dtype 0: float32, 1: bfloat16.
 * flags bit 0: do not use AMX (the portable path, for tests). Returns 0, or nonzero for arguments out
 * of range (checked by the caller too) or scratch memory that could not be had. */
int swinlab_window_attention(int dtype, const void *qkv, const float *bias, void *out, int64_t bw, int64_t nb,
                             int n, int heads, int d, float scale, int nthreads, int flags) {
    if (!args_ok(dtype, bw, nb, n, heads, d, nthreads)) return 1;
    geom g;
    g.n = n;
    g.d = d;
    g.heads = heads;
    g.nv = (n + 15) / 16;
    g.np = 16 * g.nv;
    g.tail = n - 16 * (g.nv - 1) <= TAIL_MAX ? n - 16 * (g.nv - 1) : 0;
    g.ld = 3 * (int64_t)heads * d;
    g.ldo = (int64_t)heads * d;
    g.scale = scale * 1.44269504088896341f; /* the bias comes times log2(e) too */
    float *padrow = NULL;
    if (bias) {
        g.bias = bias;
        g.bias_problem = (int64_t)n * g.np;
        g.bias_row = g.np;
    } else { /* one row for every query: zeros, then the padding keys */
        padrow = scratch(g.np * sizeof(float));
        if (!padrow) return 2;
        for (int j = n; j < g.np; j++) padrow[j] = NEG;
        g.bias = padrow;
        g.bias_problem = g.bias_row = 0;
    }
    g.nb = nb;
    g.images = bw / nb;
    int use_amx = 0;
#if SWL_AMX
    use_amx = dtype == 1 && !(flags & 1) && amx_request();
#endif
    const int dv = (d + 15) / 16, dp = 16 * dv;
    const f32_fn fn = pick_f32(g.nv, dv);
    const int64_t total = bw * heads;
    int failed = 0;

#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
#if defined(_OPENMP)
        const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
        const int64_t nth = 1, tid = 0;
#endif
        const int64_t lo = total * tid / nth, hi = total * (tid + 1) / nth; /* this thread's problems */
        /* this thread's scratch, keyed by the path and shape it is laid out for */
        const uint64_t key = (1ull << 63) | ((uint64_t)use_amx << 40) | ((uint64_t)dtype << 32) |
                             ((uint64_t)n << 16) | (uint64_t)d;
        if (use_amx) {
#if SWL_AMX
            amx_scratch as;
            carver c = {NULL, 0};
            amx_carve(&as, &g, &c);
            c.base = arena(c.off, key);
            c.off = 0;
            if (c.base) {
                amx_carve(&as, &g, &c);
                amx_config(as.ktail);
                amx_run(&g, &as, (const uint16_t *)qkv, (uint16_t *)out, lo, hi);
                _tile_release();
            } else {
                failed = 1;
            }
#endif
        } else {
            f32_scratch fs;
            carver c = {NULL, 0};
            f32_carve(&fs, &g, dtype, &c);
            c.base = arena(c.off, key);
            c.off = 0;
            failed = c.base == NULL;
            if (!failed) f32_carve(&fs, &g, dtype, &c);
            for (int64_t t = lo; t < hi && !failed; t++) {
                int64_t base, obase;
                const float *bh;
                locate(&g, t, &base, &obase, &bh);
                if (dtype == 0) {
                    const float *src = (const float *)qkv + base;
                    float *dst = (float *)out + obase;
                    if (d % 16 == 0) { /* q, k, v read in place */
                        fn(&g, &fs, src, src + heads * d, src + 2 * heads * d, g.ld, g.ld, bh, dst, g.ldo);
                    } else { /* V with its channels padded, so rows load as whole vectors */
                        for (int j = 0; j < n; j++) memcpy(fs.vc + j * dp, src + 2 * heads * d + j * g.ld, d * 4);
                        fn(&g, &fs, src, src + heads * d, fs.vc, g.ld, dp, bh, fs.o, dp);
                        for (int i = 0; i < n; i++) memcpy(dst + i * g.ldo, fs.o + i * dp, d * 4);
                    }
                } else { /* bf16 on the portable path: widen q, k, v first */
                    const uint16_t *src = (const uint16_t *)qkv + base;
                    for (int j = 0; j < n; j++) {
                        const uint16_t *row = src + j * g.ld;
                        for (int c = 0; c < d; c++) {
                            fs.qc[j * dp + c] = bf16_to_f32(row[c]);
                            fs.kc[j * dp + c] = bf16_to_f32(row[heads * d + c]);
                            fs.vc[j * dp + c] = bf16_to_f32(row[2 * heads * d + c]);
                        }
                    }
                    fn(&g, &fs, fs.qc, fs.kc, fs.vc, dp, dp, bh, fs.o, dp);
                    uint16_t *dst = (uint16_t *)out + obase;
                    for (int i = 0; i < n; i++)
                        for (int c = 0; c < d; c += 16) {
                            const v16h hv = f32_to_bf16x16(*(const v16 *)(fs.o + i * dp + c));
                            if (d - c >= 16)
                                *(v16hu *)(dst + i * g.ldo + c) = hv;
                            else
                                for (int e = 0; e < d - c; e++) dst[i * g.ldo + c + e] = hv[e];
                        }
                }
            }
        }
    }
    free(padrow);
    return failed ? 2 : 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Training: the forward that keeps the attention weights P, and the backward                         */
/*                                                                                                    */
/* The same problems (window, head) and qkv/out layouts as above, and:                                */
/*   bias  (H, N, N)       float32 in natural base (not log2(e)), unpadded: the relative bias of      */
/*                         every window; NULL for none                                                */
/*   mask  (NM, N, N)      float32, the same: the region mask of window w % NM; NULL for none         */
/*   p     (BW, H, N, NP)  float32: Softmax(scale Q K^T + B), rows padded with zeros to NP (N rounded  */
/*                         up to 16); written by the forward, read by the backward                    */
/*   dout, dqkv            the gradients of out and qkv, in their layouts and dtype                   */
/*   dbias (T, H, N, NP)   float32, zeroed by the caller, T >= nthreads: thread t adds the logits'    */
/*                         gradient dS of its problems to slice t (the caller sums the slices and     */
/*                         drops the padding columns); NULL when the bias needs no gradient           */
/* Every product runs in float32 on 16-float vectors (bf16 inputs widened exactly, bf16 outputs       */
/* rounded to nearest even); each row of q, k, v and dO is copied into scratch padded to DP = 16 DV    */
/* channels. Backward: dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q,   */
/* dV = P^T dO, the output rows accumulated in registers a block of rows at a time (ROWS_KEYS,         */
/* ROWS_CHANNELS below), each element summed in the same order as one row at a time would.            */

typedef struct {
    float *q, *k, *v, *g; /* n rows of dp: q, k, v and the output's gradient, widened */
    float *t;             /* d rows of np: K^T (forward) or V^T (backward) */
    float *s;             /* n rows of np: dS (backward) */
} train_scratch;

static void train_carve(train_scratch *ts, int n, int dp, int np, carver *c) {
    const size_t rows = (size_t)n * dp * 4;
    ts->q = carve(c, rows);
    ts->k = carve(c, rows);
    ts->v = carve(c, rows);
    ts->g = carve(c, rows);
    ts->t = carve(c, (size_t)dp * np * 4);
    ts->s = carve(c, (size_t)n * np * 4);
}

/* n rows of d channels (row stride ld) into rows of dp floats, zeros after d */
static inline __attribute__((always_inline)) void
load_rows(int dtype, const void *src, int64_t ld, int n, int d, float *dst, const int DV) {
    for (int i = 0; i < n; i++) {
        v16 *row = (v16 *)(dst + (size_t)i * 16 * DV);
        for (int c = 0; c < DV; c++) {
            const int cnt = d - 16 * c;
            if (dtype == 0) {
                row[c] = load_part((const float *)src + i * ld + 16 * c, cnt);
            } else {
                const uint16_t *h = (const uint16_t *)src + i * ld + 16 * c;
                if (cnt >= 16) {
                    row[c] = bf16x16_to_f32(*(const v16hu *)h);
                } else {
                    v16 x = (v16){0};
                    for (int e = 0; e < cnt; e++) x[e] = bf16_to_f32(h[e]);
                    row[c] = x;
                }
            }
        }
    }
}

/* one row of d channels from vectors */
static inline __attribute__((always_inline)) void
store_row(int dtype, const v16 *x, int d, void *dst, const int DV) {
    for (int c = 0; c < DV; c++) {
        const int cnt = d - 16 * c;
        if (dtype == 0) {
            float *f = (float *)dst + 16 * c;
            if (cnt >= 16)
                *(v16u *)f = x[c];
            else
                for (int e = 0; e < cnt; e++) f[e] = x[c][e];
        } else {
            uint16_t *h = (uint16_t *)dst + 16 * c;
            const v16h b = f32_to_bf16x16(x[c]);
            if (cnt >= 16)
                *(v16hu *)h = b;
            else
                for (int e = 0; e < cnt; e++) h[e] = b[e];
        }
    }
}

/* a row of cnt floats (up to 16 NV), zeros after, as NV vectors */
static inline __attribute__((always_inline)) void load_row_part(const float *src, int cnt, v16 *x,
                                                                const int NV) {
    for (int jv = 0; jv < NV; jv++) x[jv] = load_part(src + 16 * jv, cnt - 16 * jv);
}

static inline float hsum(v16 x) {
    float s = 0.0f;
    for (int e = 0; e < 16; e++) s += x[e];
    return s;
}

typedef struct {
    int dtype, n, d, heads, np;
    int64_t ld, ldo, nb;
    float scale;
} train_geom;

/* A problem's q, k, v widened into rows of 16 DV floats, and the transpose of one of them (k or v) into
 * ts->t: 16 DV rows of 16 NV, zeros past the n tokens and the d channels. */
static inline __attribute__((always_inline)) void
load_problem(const train_geom *g, const train_scratch *ts, const char *src, const float *transpose, const int NV,
             const int DV) {
    const int n = g->n, d = g->d, np = 16 * NV, dp = 16 * DV;
    const size_t third = (size_t)g->heads * d * (g->dtype == 0 ? 4 : 2);
    load_rows(g->dtype, src, g->ld, n, d, ts->q, DV);
    load_rows(g->dtype, src + third, g->ld, n, d, ts->k, DV);
    load_rows(g->dtype, src + 2 * third, g->ld, n, d, ts->v, DV);
    for (int jv = 0; jv < NV; jv++) /* in 16 x 16 blocks: all dp rows of np (zeros past n tokens, d channels) */
        for (int c = 0; c < DV; c++) {
            v16 r[16];
            for (int jj = 0; jj < 16; jj++) {
                const int j = 16 * jv + jj;
                r[jj] = j < n ? ((const v16 *)(transpose + (size_t)j * dp))[c] : (v16){0};
            }
            transpose16(r);
            for (int e = 0; e < 16; e++) ((v16 *)(ts->t + (size_t)(16 * c + e) * np))[jv] = r[e];
        }
}

/* Rows are taken R at a time so that R * NV (R * DV) sums are independent: one row alone leaves the FMA
 * pipes waiting on each sum's latency (Swin-T's stage 1 at batch 8 on a 2-core Xeon: forward 9.7 -> 5.6 ms,
 * forward and backward 24.6 -> 18.1 ms). The row block of the products over keys (QK^T, dO V^T) ... */
#define ROWS_KEYS(NV) ((NV) == 1 ? 8 : (NV) == 2 ? 4 : (NV) <= 4 ? 2 : 1)
/* ... of those over channels (P V, dS K) ... */
#define ROWS_CHANNELS(DV) ((DV) == 1 ? 8 : (DV) == 2 ? 4 : (DV) <= 4 ? 2 : 1)
/* ... and of the rows of dK and dV together (two sums per row and channel vector) */
#define ROWS_TOKENS(DV) ((DV) == 1 ? 4 : (DV) == 2 ? 2 : 1)

/* Rows [i0, i0 + R) of scale Q K^T + B (+ M) and their softmax into p. */
static inline __attribute__((always_inline)) void
forward_logits(const train_geom *g, const train_scratch *ts, const float *b, const float *mk, float *pt,
               const v16 *valid, int i0, const int R, const int NV, const int DV) {
    const int n = g->n, d = g->d, np = 16 * NV, dp = 16 * DV;
    v16 acc[R][NV];
    for (int r = 0; r < R; r++) {
        const int i = i0 + r;
        if (b)
            load_row_part(b + (size_t)i * n, n, acc[r], NV);
        else
            for (int jv = 0; jv < NV; jv++) acc[r][jv] = (v16){0};
        if (mk) {
            v16 mrow[NV];
            load_row_part(mk + (size_t)i * n, n, mrow, NV);
            for (int jv = 0; jv < NV; jv++) acc[r][jv] += mrow[jv];
        }
    }
    for (int e = 0; e < d; e++) {
        const v16 *kt = (const v16 *)(ts->t + (size_t)e * np);
        for (int r = 0; r < R; r++) {
            const v16 a = vsplat(ts->q[(size_t)(i0 + r) * dp + e] * g->scale);
            for (int jv = 0; jv < NV; jv++) acc[r][jv] += a * kt[jv];
        }
    }
    for (int r = 0; r < R; r++) {
        v16 mx = acc[r][0] + valid[0];
        for (int jv = 0; jv < NV; jv++) {
            acc[r][jv] += valid[jv];
            mx = vmax(mx, acc[r][jv]);
        }
        float m = mx[0];
        for (int e = 1; e < 16; e++) m = mx[e] > m ? mx[e] : m;
        v16 sum = (v16){0};
        for (int jv = 0; jv < NV; jv++) {
            v16 x = vexp2((acc[r][jv] - m) * 1.44269504088896341f, 5);
            x = (v16)((v16i)x & (v16i)(valid[jv] == 0.0f)); /* exactly 0 on the padding keys */
            acc[r][jv] = x;
            sum += x;
        }
        const v16 inv = vsplat(1.0f / hsum(sum));
        v16u *prow = (v16u *)(pt + (size_t)(i0 + r) * np); /* p: any 4-byte alignment */
        for (int jv = 0; jv < NV; jv++) prow[jv] = acc[r][jv] * inv;
    }
}

/* Rows [i0, i0 + R) of A M times scale, stored at dst with row stride ld: A n rows of np (P, or dS), M n rows
 * of dp (V, or K); O = P V (scale 1, exact) and dQ = scale dS K. */
static inline __attribute__((always_inline)) void
rows_times(const train_geom *g, const float *a, const float *m, float scale, char *dst, int64_t ld, int i0,
           const int R, const int NV, const int DV) {
    const int n = g->n, np = 16 * NV, dp = 16 * DV;
    const size_t es = g->dtype == 0 ? 4 : 2;
    const v16 sc = vsplat(scale);
    v16 o[R][DV];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < DV; c++) o[r][c] = (v16){0};
    for (int j = 0; j < n; j++) {
        const v16 *mj = (const v16 *)(m + (size_t)j * dp);
        for (int r = 0; r < R; r++) {
            const v16 aj = vsplat(a[(size_t)(i0 + r) * np + j]);
            for (int c = 0; c < DV; c++) o[r][c] += aj * mj[c];
        }
    }
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < DV; c++) o[r][c] *= sc;
        store_row(g->dtype, o[r], g->d, dst + (size_t)(i0 + r) * ld * es, DV);
    }
}

static inline __attribute__((always_inline)) void
train_forward_problem(const train_geom *g, const train_scratch *ts, const char *src, const float *b,
                      const float *mk, float *pt, char *dst, const int NV, const int DV) {
    const int n = g->n;
    const int RK = ROWS_KEYS(NV), RC = ROWS_CHANNELS(DV);
    load_problem(g, ts, src, ts->k, NV, DV); /* q, k, v and K^T */
    v16 valid[NV]; /* 0 on real keys, NEG on the padding ones */
    for (int jv = 0; jv < NV; jv++)
        for (int e = 0; e < 16; e++) valid[jv][e] = 16 * jv + e < n ? 0.0f : NEG;
    int i = 0;
    for (; i + RK <= n; i += RK) forward_logits(g, ts, b, mk, pt, valid, i, RK, NV, DV);
    for (; i < n; i++) forward_logits(g, ts, b, mk, pt, valid, i, 1, NV, DV);
    for (i = 0; i + RC <= n; i += RC) rows_times(g, pt, ts->v, 1.0f, dst, g->ldo, i, RC, NV, DV);
    for (; i < n; i++) rows_times(g, pt, ts->v, 1.0f, dst, g->ldo, i, 1, NV, DV);
}

/* Rows [i0, i0 + R) of dS = P (dP - rowsum(P dP)) with dP = dO V^T, into ts->s (and added to db). */
static inline __attribute__((always_inline)) void
backward_logits(const train_geom *g, const train_scratch *ts, const float *pt, float *db, int i0, const int R,
                const int NV, const int DV) {
    const int d = g->d, np = 16 * NV, dp = 16 * DV;
    v16 acc[R][NV];
    for (int r = 0; r < R; r++)
        for (int jv = 0; jv < NV; jv++) acc[r][jv] = (v16){0};
    for (int e = 0; e < d; e++) {
        const v16 *vt = (const v16 *)(ts->t + (size_t)e * np);
        for (int r = 0; r < R; r++) {
            const v16 a = vsplat(ts->g[(size_t)(i0 + r) * dp + e]);
            for (int jv = 0; jv < NV; jv++) acc[r][jv] += a * vt[jv];
        }
    }
    for (int r = 0; r < R; r++) {
        const size_t i = (size_t)(i0 + r);
        const v16u *pi = (const v16u *)(pt + i * np);
        v16 rsum = (v16){0};
        for (int jv = 0; jv < NV; jv++) rsum += pi[jv] * acc[r][jv];
        const v16 rs = vsplat(hsum(rsum));
        v16 *si = (v16 *)(ts->s + i * np);
        for (int jv = 0; jv < NV; jv++) si[jv] = pi[jv] * (acc[r][jv] - rs); /* dS row i (0 on padding) */
        if (db) {
            v16u *dbi = (v16u *)(db + i * np);
            for (int jv = 0; jv < NV; jv++) dbi[jv] += si[jv];
        }
    }
}

/* Rows [j0, j0 + R) of dK = scale dS^T Q and dV = P^T dO, stored. */
static inline __attribute__((always_inline)) void
backward_keys(const train_geom *g, const train_scratch *ts, const float *pt, char *dst, int j0, const int R,
              const int NV, const int DV) {
    const int n = g->n, np = 16 * NV, dp = 16 * DV, heads = g->heads;
    const size_t es = g->dtype == 0 ? 4 : 2;
    const v16 sc = vsplat(g->scale);
    v16 dk[R][DV], dv[R][DV];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < DV; c++) dk[r][c] = dv[r][c] = (v16){0};
    for (int i = 0; i < n; i++) {
        const v16 *qi = (const v16 *)(ts->q + (size_t)i * dp), *gi = (const v16 *)(ts->g + (size_t)i * dp);
        for (int r = 0; r < R; r++) {
            const v16 sij = vsplat(ts->s[(size_t)i * np + j0 + r]), pij = vsplat(pt[(size_t)i * np + j0 + r]);
            for (int c = 0; c < DV; c++) {
                dk[r][c] += sij * qi[c];
                dv[r][c] += pij * gi[c];
            }
        }
    }
    for (int r = 0; r < R; r++) {
        const size_t j = (size_t)(j0 + r);
        for (int c = 0; c < DV; c++) dk[r][c] *= sc;
        store_row(g->dtype, dk[r], g->d, dst + (j * g->ld + (size_t)heads * g->d) * es, DV);
        store_row(g->dtype, dv[r], g->d, dst + (j * g->ld + (size_t)2 * heads * g->d) * es, DV);
    }
}

static inline __attribute__((always_inline)) void
train_backward_problem(const train_geom *g, const train_scratch *ts, const char *src, const float *pt,
                       const char *gsrc, char *dst, float *db, const int NV, const int DV) {
    const int n = g->n;
    const int RK = ROWS_KEYS(NV), RC = ROWS_CHANNELS(DV), RT = ROWS_TOKENS(DV);
    load_problem(g, ts, src, ts->v, NV, DV); /* q, k, v and V^T */
    load_rows(g->dtype, gsrc, g->ldo, n, g->d, ts->g, DV);
    int i = 0;
    for (; i + RK <= n; i += RK) backward_logits(g, ts, pt, db, i, RK, NV, DV);
    for (; i < n; i++) backward_logits(g, ts, pt, db, i, 1, NV, DV);
    for (i = 0; i + RC <= n; i += RC) rows_times(g, ts->s, ts->k, g->scale, dst, g->ld, i, RC, NV, DV);
    for (; i < n; i++) rows_times(g, ts->s, ts->k, g->scale, dst, g->ld, i, 1, NV, DV);
    for (i = 0; i + RT <= n; i += RT) backward_keys(g, ts, pt, dst, i, RT, NV, DV);
    for (; i < n; i++) backward_keys(g, ts, pt, dst, i, 1, NV, DV);
}

/* Instances on constant shapes: key vectors NV (up to 64 tokens) and channel vectors DV (up to 32
 * channels); anything else (up to 256 tokens and 128 channels) through the largest. */
#define TRAIN_CASES(X) X(1, 1) X(1, 2) X(2, 1) X(2, 2) X(3, 1) X(3, 2) X(4, 1) X(4, 2) X(16, 8)

#define TRAIN_INSTANCE(NV, DV)                                                                             \
    static void train_fwd_##NV##_##DV(const train_geom *g, const train_scratch *ts, const char *src,        \
                                      const float *b, const float *mk, float *pt, char *dst) {              \
        train_forward_problem(g, ts, src, b, mk, pt, dst, NV, DV);                                          \
    }                                                                                                       \
    static void train_bwd_##NV##_##DV(const train_geom *g, const train_scratch *ts, const char *src,        \
                                      const float *pt, const char *gsrc, char *dst, float *db) {            \
        train_backward_problem(g, ts, src, pt, gsrc, dst, db, NV, DV);                                      \
    }
TRAIN_CASES(TRAIN_INSTANCE)

typedef void (*train_fwd_fn)(const train_geom *, const train_scratch *, const char *, const float *,
                             const float *, float *, char *);
typedef void (*train_bwd_fn)(const train_geom *, const train_scratch *, const char *, const float *,
                             const char *, char *, float *);

/* the first instance that fits nv key vectors and dv channel vectors (TRAIN_CASES is ordered so that it is the
 * smallest); np and dp: the row widths it lays its rows out with */
static void pick_train(int nv, int dv, train_fwd_fn *fwd, train_bwd_fn *bwd, int *np, int *dp) {
#define TRAIN_PICK(NV, DV)                   \
    if (nv <= NV && dv <= DV) { /* the first that fits */ \
        *fwd = train_fwd_##NV##_##DV;        \
        *bwd = train_bwd_##NV##_##DV;        \
        *np = 16 * NV;                       \
        *dp = 16 * DV;                       \
        return;                              \
    }
    TRAIN_CASES(TRAIN_PICK)
#undef TRAIN_PICK
    *fwd = train_fwd_16_8;
    *bwd = train_bwd_16_8;
    *np = 256;
    *dp = 128;
}

static int train_setup(train_geom *g, int dtype, int64_t bw, int64_t nb, int n, int heads, int d, float scale,
                       int nthreads, train_fwd_fn *fwd, train_bwd_fn *bwd, int *dp) {
    if (!args_ok(dtype, bw, nb, n, heads, d, nthreads)) return 1;
    g->dtype = dtype;
    g->n = n;
    g->d = d;
    g->heads = heads;
    g->ld = 3 * (int64_t)heads * d;
    g->ldo = (int64_t)heads * d;
    g->nb = nb;
    g->scale = scale;
    pick_train((n + 15) / 16, (d + 15) / 16, fwd, bwd, &g->np, dp);
    return 0;
}

/* NP of the p and dbias rows for n tokens: what the instance of these shapes lays them out with */
int swinlab_wa_train_row(int n, int d) {
    train_fwd_fn f;
    train_bwd_fn b;
    int np, dp;
    if (n < 1 || n > MAXN || d < 1 || d > MAXD) return 0;
    pick_train((n + 15) / 16, (d + 15) / 16, &f, &b, &np, &dp);
    return np;
}

/* The arguments of a training call: the forward reads qkv, bias, mask and writes out and p; the backward
 * reads qkv, p and dout and writes dqkv and dbias. */
typedef struct {
    const void *qkv, *dout;
    const float *bias, *mask;
    void *out, *dqkv;
    float *p, *dbias;
    int64_t bw, nm;
} train_args;

/* Both passes: the problems split among the threads, each with its scratch (kept between calls). */
static int train_run(const train_args *a, int backward, int dtype, int n, int heads, int d, float scale,
                     int nthreads) {
    train_geom g;
    train_fwd_fn fwd;
    train_bwd_fn bwd;
    int dp;
    if (train_setup(&g, dtype, a->bw, a->nm, n, heads, d, scale, nthreads, &fwd, &bwd, &dp)) return 1;
    const int64_t total = a->bw * heads;
    const size_t es = dtype == 0 ? 4 : 2;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
#if defined(_OPENMP)
        const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
        const int64_t nth = 1, tid = 0;
#endif
        train_scratch ts;
        carver c = {NULL, 0};
        train_carve(&ts, n, dp, g.np, &c);
        c.base = arena(c.off, (1ull << 62) | ((uint64_t)n << 16) | (uint64_t)d);
        c.off = 0;
        failed = c.base == NULL;
        if (!failed) train_carve(&ts, n, dp, g.np, &c);
        float *db = a->dbias ? a->dbias + tid * (int64_t)heads * n * g.np : NULL;
        for (int64_t t = total * tid / nth; t < total * (tid + 1) / nth && !failed; t++) {
            const int64_t w = t / heads;
            const int h = (int)(t % heads);
            const size_t off = (size_t)(w * n * g.ld + (int64_t)h * d) * es;       /* of q in qkv */
            const size_t ooff = (size_t)(w * n * g.ldo + (int64_t)h * d) * es;     /* of the output rows */
            float *pt = a->p + t * (int64_t)n * g.np;
            if (backward) {
                bwd(&g, &ts, (const char *)a->qkv + off, pt, (const char *)a->dout + ooff, (char *)a->dqkv + off,
                    db ? db + (int64_t)h * n * g.np : NULL);
            } else {
                const float *b = a->bias ? a->bias + (int64_t)h * n * n : NULL;
                const float *mk = a->mask ? a->mask + (w % a->nm) * (int64_t)n * n : NULL;
                fwd(&g, &ts, (const char *)a->qkv + off, b, mk, pt, (char *)a->out + ooff);
            }
        }
    }
    return failed ? 2 : 0;
}

int swinlab_wa_train_forward(int dtype, const void *qkv, const float *bias, const float *mask, void *out, float *p,
                             int64_t bw, int64_t nm, int n, int heads, int d, float scale, int nthreads) {
    const train_args a = {.qkv = qkv, .bias = bias, .mask = mask, .out = out, .p = p, .bw = bw, .nm = nm};
    return train_run(&a, 0, dtype, n, heads, d, scale, nthreads);
}

int swinlab_wa_train_backward(int dtype, const void *qkv, const float *p, const void *dout, void *dqkv,
                              float *dbias, int64_t bw, int64_t nm, int n, int heads, int d, float scale,
                              int nthreads) {
    const train_args a = {.qkv = qkv, .p = (float *)p, .dout = dout, .dqkv = dqkv, .dbias = dbias, .bw = bw,
                          .nm = nm};
    return train_run(&a, 1, dtype, n, heads, d, scale, nthreads);
}

/* ------------------------------------------------------------------------------------------------ */
/* Residual add + LayerNorm, for inference                                                            */
/*                                                                                                    */
/* s = x + y (rounded to the dtype, as torch's add rounds), out = (s - mean) / sqrt(var + eps) * w + b */
/* per row of c channels, with mean and the biased variance of the rounded s in float32 (two passes   */
/* over the row, held in registers). y == NULL: out = LayerNorm(x), no sum. x, y, s, out (rows, c),   */
/* w, b (c), all contiguous and of one dtype (0 float32, 1 bfloat16). Rows split among the threads.   */
/* torch's CPU LayerNorm is a generic reduction here (~10 GB/s on Swin-T's rows of 96 bf16 channels   */
/* on a 2-core Xeon); a row held in registers and reduced by a tree runs at ~25 GB/s.                 */

#define LN_MAXC 4096

static inline float vsum(v16 x) { /* a tree: 4 shuffles and adds, not 16 dependent scalar adds */
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps((__m512)x);
#else
    x += SHUF(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    x += SHUF(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    x += SHUF(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return x[0] + x[1];
#endif
}

/* cnt (<= 16) elements of a row in either dtype as floats, zeros after */
static inline v16 ln_load(const void *src, int64_t at, int cnt, int dtype) {
    if (dtype == 0) return load_part((const float *)src + at, cnt);
    const uint16_t *h = (const uint16_t *)src + at;
    if (cnt >= 16) return bf16x16_to_f32(*(const v16hu *)h);
    v16 x = (v16){0};
    for (int e = 0; e < cnt; e++) x[e] = bf16_to_f32(h[e]);
    return x;
}

/* store cnt (<= 16) floats into a row of either dtype; returns what was stored, as floats */
static inline v16 ln_store(void *dst, int64_t at, int cnt, int dtype, v16 x) {
    if (dtype == 0) {
        float *f = (float *)dst + at;
        if (cnt >= 16)
            *(v16u *)f = x;
        else
            for (int e = 0; e < cnt; e++) f[e] = x[e];
        return x;
    }
    const v16h b = f32_to_bf16x16(x);
    uint16_t *h = (uint16_t *)dst + at;
    if (cnt >= 16)
        *(v16hu *)h = b;
    else
        for (int e = 0; e < cnt; e++) h[e] = b[e];
    return bf16x16_to_f32(b);
}

/* Centre the row r (nv vectors, c channels, zeros past c) on its mean, given acc = the sum of its vectors, and
 * zero its tail again ((0 - mean) is not 0): returns 1 / sqrt(biased variance + eps), the mean in *mean. */
static inline float center_row(v16 *r, v16 acc, int nv, int c, float eps, float *mean) {
    const float mu = vsum(acc) / (float)c;
    v16 sq = (v16){0};
    for (int v = 0; v < nv; v++) {
        r[v] -= mu;
        if (c - 16 * v < 16)
            for (int e = c - 16 * v; e < 16; e++) r[v][e] = 0.0f;
        sq += r[v] * r[v];
    }
    *mean = mu;
    return 1.0f / sqrtf(vsum(sq) / (float)c + eps);
}

int swinlab_add_layer_norm(int dtype, const void *x, const void *y, void *s, void *out, const void *w,
                           const void *b, int64_t rows, int c, float eps, int nthreads) {
    if (c < 1 || c > LN_MAXC || rows < 0 || (dtype != 0 && dtype != 1) || (y != NULL && s == NULL)) return 1;
    const int nv = (c + 15) / 16;
#pragma omp parallel num_threads(nthreads)
    {
        v16 wv[LN_MAXC / 16], bv[LN_MAXC / 16], r[LN_MAXC / 16];
        for (int v = 0; v < nv; v++) {
            wv[v] = ln_load(w, 16 * v, c - 16 * v, dtype);
            bv[v] = ln_load(b, 16 * v, c - 16 * v, dtype);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            const int64_t at = i * c;
            v16 acc = (v16){0};
            for (int v = 0; v < nv; v++) {
                const int cnt = c - 16 * v;
                r[v] = ln_load(x, at + 16 * v, cnt, dtype);
                if (y != NULL) r[v] = ln_store(s, at + 16 * v, cnt, dtype, r[v] + ln_load(y, at + 16 * v, cnt, dtype));
                acc += r[v]; /* the tail's zeros add nothing */
            }
            float mean;
            const float rstd = center_row(r, acc, nv, c, eps, &mean);
            for (int v = 0; v < nv; v++) ln_store(out, at + 16 * v, c - 16 * v, dtype, r[v] * rstd * wv[v] + bv[v]);
        }
    }
    return 0;
}

/* LayerNorm for training: x, y, dy and dx float32, or bfloat16 (dtype 1) with float32 w, b (torch's mixed-type
 * LayerNorm: CPU autocast leaves LayerNorm in its input's dtype), every sum in float32. The forward keeps
 * each row's mean and 1/std; the backward gives
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w,  xhat = (x - mean) * rstd,
 *   dw = sum over rows of dy * xhat,  db = sum over rows of dy
 * (dw, db summed per thread, then across the threads in a fixed order: the result does not depend on the
 * schedule's timing). x, y, dy, dx (rows, c); w, b, dw, db (c); mean, rstd (rows). */
int swinlab_layer_norm_forward(int dtype, const void *x, const float *w, const float *b, void *y, float *mean,
                               float *rstd, int64_t rows, int c, float eps, int nthreads) {
    if (c < 1 || c > LN_MAXC || rows < 0 || (dtype != 0 && dtype != 1)) return 1;
    const int nv = (c + 15) / 16;
#pragma omp parallel num_threads(nthreads)
    {
        v16 wv[LN_MAXC / 16], bv[LN_MAXC / 16], r[LN_MAXC / 16];
        for (int v = 0; v < nv; v++) {
            wv[v] = load_part(w + 16 * v, c - 16 * v);
            bv[v] = load_part(b + 16 * v, c - 16 * v);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            v16 acc = (v16){0};
            for (int v = 0; v < nv; v++) acc += (r[v] = ln_load(x, i * c + 16 * v, c - 16 * v, dtype));
            const float rs = rstd[i] = center_row(r, acc, nv, c, eps, &mean[i]);
            for (int v = 0; v < nv; v++) ln_store(y, i * c + 16 * v, c - 16 * v, dtype, r[v] * rs * wv[v] + bv[v]);
        }
    }
    return 0;
}

int swinlab_layer_norm_backward(int dtype, const void *x, const float *w, const float *mean, const float *rstd,
                                const void *dy, void *dx, float *dw, float *db, int64_t rows, int c,
                                int nthreads) {
    if (c < 1 || c > LN_MAXC || rows < 0 || nthreads < 1 || (dtype != 0 && dtype != 1)) return 1;
    const int nv = (c + 15) / 16;
    float *part = calloc((size_t)nthreads * 2 * nv * 16, sizeof(float)); /* per thread: dw, db */
    if (part == NULL) return 2;
#pragma omp parallel num_threads(nthreads)
    {
#if defined(_OPENMP)
        const int tid = omp_get_thread_num();
#else
        const int tid = 0;
#endif
        v16 wv[LN_MAXC / 16], xh[LN_MAXC / 16], g[LN_MAXC / 16], dwv[LN_MAXC / 16], dbv[LN_MAXC / 16];
        for (int v = 0; v < nv; v++) {
            wv[v] = load_part(w + 16 * v, c - 16 * v);
            dwv[v] = dbv[v] = (v16){0};
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            const float mu = mean[i], rs = rstd[i];
            v16 sg = (v16){0}, sgx = (v16){0};
            for (int v = 0; v < nv; v++) {
                const int cnt = c - 16 * v;
                const v16 d = ln_load(dy, i * c + 16 * v, cnt, dtype);
                xh[v] = (ln_load(x, i * c + 16 * v, cnt, dtype) - mu) * rs;
                if (cnt < 16)
                    for (int e = cnt; e < 16; e++) xh[v][e] = 0.0f;
                g[v] = d * wv[v]; /* zero past c: d is */
                sg += g[v];
                sgx += g[v] * xh[v];
                dwv[v] += d * xh[v];
                dbv[v] += d;
            }
            const float mg = vsum(sg) / (float)c, mgx = vsum(sgx) / (float)c;
            for (int v = 0; v < nv; v++)
                ln_store(dx, i * c + 16 * v, c - 16 * v, dtype, (g[v] - mg - xh[v] * mgx) * rs);
        }
        float *mine = part + (size_t)tid * 2 * nv * 16;
        for (int v = 0; v < nv; v++) {
            *(v16u *)(mine + 16 * v) = dwv[v];
            *(v16u *)(mine + 16 * (nv + v)) = dbv[v];
        }
    }
    for (int k = 0; k < c; k++) {
        float sw = 0.0f, sb = 0.0f;
        for (int t = 0; t < nthreads; t++) {
            sw += part[(size_t)t * 2 * nv * 16 + k];
            sb += part[(size_t)t * 2 * nv * 16 + 16 * nv + k];
        }
        if (dw != NULL) dw[k] = sw;
        if (db != NULL) db[k] = sb;
    }
    free(part);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* The MLP's bias + GELU for bf16-mixed training                                                     */

/* v ↦ (gelu(v), gelu'(v)) with gelu(v) = v Φ(v) (exact, erf form) and gelu'(v) = Φ(v) + v φ(v). With
 * x = |v| / √2, erfc(x) = poly(t) e^(-x²), t = 1 / (1 + p x) (Abramowitz & Stegun 7.1.26: absolute error
 * ≤ 1.5e-7), so Φ(v) = erfc(x) / 2 for v < 0 and 1 - erfc(x) / 2 otherwise (no cancellation in the lower
 * tail), and φ(v) = e^(-x²) / √(2π) shares the exponential: one exp and one reciprocal for both. Absolute
 * errors in float32 ≤ 3e-7 |v| and 3e-7 (the bf16 results round at 2^-9 relative). */
static inline __attribute__((always_inline)) void gelu_pair(v16 v, v16 *g, v16 *d) {
    const v16 x = (v16)((v16i)v & 0x7fffffff) * 0.70710678118654752f;
    const v16 den = 1.0f + 0.3275911f * x;
#if defined(__AVX512F__)
    v16 t = (v16)_mm512_rcp14_ps((__m512)den);
    t = t * (2.0f - den * t); /* one Newton step: ~2^-28 relative */
#else
    const v16 t = 1.0f / den;
#endif
    v16 poly = vsplat(1.061405429f);
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    poly *= t;
    const v16 e = vexp2(-(x * x) * 1.4426950408889634f, 5);
    const v16 half_erfc = 0.5f * poly * e;
    const v16i neg = v < 0.0f;
    const v16 phi = (v16)((neg & (v16i)half_erfc) | (~neg & (v16i)(1.0f - half_erfc)));
    *g = v * phi;
    *d = phi + v * e * 0.3989422804014327f;
}

/* Training's bias + GELU: h (rows, c) bfloat16 (fc1's product without its bias), b (c) float32 or NULL:
 * g = gelu(h + b) and d = gelu'(h + b), both bfloat16 (rows, c); d is what the backward needs, so h is not
 * kept. */
int swinlab_bias_gelu_forward(const uint16_t *h, const float *b, uint16_t *g, uint16_t *d, int64_t rows, int c,
                              int nthreads) {
    if (c < 1 || rows < 0 || nthreads < 1) return 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const int64_t at = i * c;
        for (int k = 0; k < c; k += 16) {
            const int cnt = c - k;
            v16 v = ln_load(h, at + k, cnt, 1), gv, dv;
            if (b != NULL) v += load_part(b + k, cnt);
            gelu_pair(v, &gv, &dv);
            ln_store(g, at + k, cnt, 1, gv);
            ln_store(d, at + k, cnt, 1, dv);
        }
    }
    return 0;
}

/* Its backward: dh = dg * d rounded to bfloat16 (rows, c), and db (c, float32, or NULL) the sum over rows
 * of that dh, summed in float32 per thread, then across the threads in a fixed order. */
int swinlab_gelu_backward(const uint16_t *dg, const uint16_t *d, uint16_t *dh, float *db, int64_t rows, int c,
                          int nthreads) {
    if (c < 1 || rows < 0 || nthreads < 1) return 1;
    const int cp = (c + 15) / 16 * 16;
    float *part = db == NULL ? NULL : calloc((size_t)nthreads * cp, sizeof(float));
    if (db != NULL && part == NULL) return 2;
#pragma omp parallel num_threads(nthreads)
    {
#if defined(_OPENMP)
        float *mine = part == NULL ? NULL : part + (size_t)omp_get_thread_num() * cp;
#else
        float *mine = part;
#endif
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            const int64_t at = i * c;
            for (int k = 0; k < c; k += 16) {
                const int cnt = c - k;
                const v16 r = ln_store(dh, at + k, cnt, 1, ln_load(dg, at + k, cnt, 1) * ln_load(d, at + k, cnt, 1));
                if (mine != NULL) *(v16u *)(mine + k) += r; /* zeros past c */
            }
        }
    }
    if (db != NULL) {
        for (int k = 0; k < c; k++) {
            float s = 0.0f;
            for (int t = 0; t < nthreads; t++) s += part[(size_t)t * cp + k];
            db[k] = s;
        }
        free(part);
    }
    return 0;
}
