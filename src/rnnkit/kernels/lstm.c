/* The LSTM recurrence, forward and backward, for small hidden sizes on CPU.
 *
 * Only the step-by-step part lives here: the products with the inputs and the weight
 * gradients are whole-sequence matrix products, left to torch. Rows of the batch are
 * independent through the recurrence, so each thread takes a block of rows for the whole
 * sequence and never waits on the others.
 *
 * Layout, all float32, row-major, batch first (B rows, T steps, H units, G = 4H gates in
 * PyTorch's order i, f, g, o):
 *   gates (B, T, G)  in: x W_ih^T + b_ih + b_hh; out: the activated gates, kept for backward
 *   w_t   (H, G)     W_hh transposed          w (G, H)  W_hh as stored
 *   h0, c0 (B, H)    out, cs (B, T, H)        hidden outputs and cell states
 *   dout (B, T, H)   gradient of the outputs; dgates (B, T, G) gradient of the gate inputs
 *   dh, dc (B, H)    in: gradient of the final state; out: gradient of h0, c0
 *
 * The library is compiled for the baseline CPU and carries three variants of the loops
 * (lstm_impl.h, included once per variant): plain C, AVX2 + FMA (8 floats a vector) and
 * AVX-512F (16). The caller picks one per call among those `rk_variants` reports for the CPU
 * it runs on; a variant the CPU lacks is refused, never run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#define RK_X86 1
#include <immintrin.h>
#else
#define RK_X86 0
#endif

enum { RK_PLAIN = 0, RK_AVX2 = 1, RK_AVX512 = 2, RK_NVARIANTS = 3 };

typedef struct {
    int b0, b1, T, H;
    float *gates;
    const float *w, *h0, *c0;
    float *out, *cs;
    const float *dout;
    float *dgates, *dh, *dc, *work;
} Job;

static inline float sigmoid1(float x) { return 1.0f / (1.0f + expf(-x)); }

#if RK_X86
#define RK_AVX2_TARGET __attribute__((target("avx2,fma")))
#define RK_AVX512_TARGET __attribute__((target("avx512f,avx2,fma")))

/* exp, Cephes' polynomial on x clamped to [-87, 88]: about 2 ulp. A NaN stays NaN (max/min
 * return their second operand when one is NaN), so a diverged model shows as one. */
static inline RK_AVX2_TARGET __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                               _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
static inline RK_AVX2_TARGET __m256 sigmoid8(__m256 x) {
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
static inline RK_AVX2_TARGET __m256 tanh8(__m256 x) { /* 2 sigmoid(2x) - 1 */
    __m256 two = _mm256_set1_ps(2.0f);
    return _mm256_fmsub_ps(two, sigmoid8(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}

/* The same three functions, 16 floats at a time: the same operations in the same order. */
static inline RK_AVX512_TARGET __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
    __m512 n = _mm512_floor_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f),
                                               _mm512_set1_ps(0.5f)));
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n),
                                                   _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}
static inline RK_AVX512_TARGET __m512 sigmoid16(__m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
static inline RK_AVX512_TARGET __m512 tanh16(__m512 x) {
    __m512 two = _mm512_set1_ps(2.0f);
    return _mm512_fmsub_ps(two, sigmoid16(_mm512_mul_ps(two, x)), _mm512_set1_ps(1.0f));
}
#endif

#define RK_CAT_(a, b) a##b
#define RK_CAT(a, b) RK_CAT_(a, b)
#define RK_NAME(f) RK_CAT(f, RK_SUFFIX)

#define RK_SUFFIX _plain
#define RK_TARGET
#define RK_WIDTH 1
#include "lstm_impl.h"
#undef RK_SUFFIX
#undef RK_TARGET
#undef RK_WIDTH

#if RK_X86
#define RK_SUFFIX _avx2
#define RK_TARGET RK_AVX2_TARGET
#define RK_WIDTH 8
#include "lstm_impl.h"
#undef RK_SUFFIX
#undef RK_TARGET
#undef RK_WIDTH

#define RK_SUFFIX _avx512
#define RK_TARGET RK_AVX512_TARGET
#define RK_WIDTH 16
#include "lstm_impl.h"
#undef RK_SUFFIX
#undef RK_TARGET
#undef RK_WIDTH
#endif

typedef void *(*rows_fn)(void *);

/* The variants this CPU can run: bit v set for variant v (RK_PLAIN, RK_AVX2, RK_AVX512). */
int rk_variants(void) {
    int mask = 1 << RK_PLAIN;
#if RK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        mask |= 1 << RK_AVX2;
        if (__builtin_cpu_supports("avx512f")) mask |= 1 << RK_AVX512;
    }
#endif
    return mask;
}

/* Floats a vector of variant v holds (1 for plain C), or 0 for a variant not compiled here. */
int rk_vector_width(int variant) {
    switch (variant) {
    case RK_PLAIN: return 1;
#if RK_X86
    case RK_AVX2: return 8;
    case RK_AVX512: return 16;
#endif
    default: return 0;
    }
}

static rows_fn pick(int variant, int backward) {
    if (variant < 0 || variant >= RK_NVARIANTS || !(rk_variants() & (1 << variant))) return NULL;
    switch (variant) {
#if RK_X86
    case RK_AVX2: return backward ? backward_rows_avx2 : forward_rows_avx2;
    case RK_AVX512: return backward ? backward_rows_avx512 : forward_rows_avx512;
#endif
    default: return backward ? backward_rows_plain : forward_rows_plain;
    }
}

/* Split the batch into blocks of 4 rows over `threads` threads of the OpenMP pool. Linked
 * against the OpenMP runtime torch has loaded, this reuses torch's own worker threads. */
static int run(rows_fn fn, Job *base, int B, int threads) {
    int blocks = (B + 3) / 4;
    if (threads > blocks) threads = blocks;
    if (threads > 64) threads = 64;
    if (threads < 1) threads = 1;
    Job jobs[64];
    for (int k = 0; k < threads; k++) {
        jobs[k] = *base;
        jobs[k].b0 = 4 * (blocks * k / threads);
        jobs[k].b1 = 4 * (blocks * (k + 1) / threads);
        if (jobs[k].b1 > B) jobs[k].b1 = B;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) fn(&jobs[k]);
    return threads;
}

/* Forward over the whole sequence with variant `variant`; see the layout above. w_t: W_hh
 * transposed (H, G). Returns the threads used, or -1 for a variant this CPU cannot run. */
int rk_lstm_forward(int variant, int B, int T, int H, float *gates, const float *w_t,
                    const float *h0, const float *c0, float *out, float *cs, int threads) {
    rows_fn fn = pick(variant, 0);
    if (fn == NULL) return -1;
    Job job = {0, B, T, H, gates, w_t, h0, c0, out, cs, NULL, NULL, NULL, NULL, NULL};
    return run(fn, &job, B, threads);
}

/* Backward over the whole sequence. gates: the activated gates from the forward pass;
 * w: W_hh (G, H); dh, dc: the final state's gradients in, h0's and c0's out; work (B, H).
 * Returns the threads used, or -1 for a variant this CPU cannot run. */
int rk_lstm_backward(int variant, int B, int T, int H, const float *gates, const float *w,
                     const float *c0, const float *cs, const float *dout, float *dgates,
                     float *dh, float *dc, float *work, int threads) {
    rows_fn fn = pick(variant, 1);
    if (fn == NULL) return -1;
    Job job = {0, B, T, H, (float *)gates, w, NULL, c0, NULL, (float *)cs, dout, dgates, dh, dc,
               work};
    return run(fn, &job, B, threads);
}
