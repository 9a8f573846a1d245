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
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

int rk_vector_width(void) {
#if defined(__AVX2__) && defined(__FMA__)
    return 8;
#else
    return 1;
#endif
}

/* C[r, :N] += A[r, :K] @ B[:K, :N] for r < R; row strides lda, ldc; B is dense (K, N). */
static void gemm_acc(int R, int K, int N, const float *A, long lda, const float *B,
                     float *C, long ldc) {
    int r = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; r + 4 <= R; r += 4) {
        const float *a0 = A + r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        float *c0 = C + r * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        int j = 0;
        for (; j + 16 <= N; j += 16) {
            __m256 s00 = _mm256_loadu_ps(c0 + j), s01 = _mm256_loadu_ps(c0 + j + 8);
            __m256 s10 = _mm256_loadu_ps(c1 + j), s11 = _mm256_loadu_ps(c1 + j + 8);
            __m256 s20 = _mm256_loadu_ps(c2 + j), s21 = _mm256_loadu_ps(c2 + j + 8);
            __m256 s30 = _mm256_loadu_ps(c3 + j), s31 = _mm256_loadu_ps(c3 + j + 8);
            const float *b = B + j;
            for (int k = 0; k < K; k++, b += N) {
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), a;
                a = _mm256_broadcast_ss(a0 + k);
                s00 = _mm256_fmadd_ps(a, b0, s00); s01 = _mm256_fmadd_ps(a, b1, s01);
                a = _mm256_broadcast_ss(a1 + k);
                s10 = _mm256_fmadd_ps(a, b0, s10); s11 = _mm256_fmadd_ps(a, b1, s11);
                a = _mm256_broadcast_ss(a2 + k);
                s20 = _mm256_fmadd_ps(a, b0, s20); s21 = _mm256_fmadd_ps(a, b1, s21);
                a = _mm256_broadcast_ss(a3 + k);
                s30 = _mm256_fmadd_ps(a, b0, s30); s31 = _mm256_fmadd_ps(a, b1, s31);
            }
            _mm256_storeu_ps(c0 + j, s00); _mm256_storeu_ps(c0 + j + 8, s01);
            _mm256_storeu_ps(c1 + j, s10); _mm256_storeu_ps(c1 + j + 8, s11);
            _mm256_storeu_ps(c2 + j, s20); _mm256_storeu_ps(c2 + j + 8, s21);
            _mm256_storeu_ps(c3 + j, s30); _mm256_storeu_ps(c3 + j + 8, s31);
        }
        for (; j < N; j++) {
            float t0 = c0[j], t1 = c1[j], t2 = c2[j], t3 = c3[j];
            for (int k = 0; k < K; k++) {
                float b = B[(long)k * N + j];
                t0 += a0[k] * b; t1 += a1[k] * b; t2 += a2[k] * b; t3 += a3[k] * b;
            }
            c0[j] = t0; c1[j] = t1; c2[j] = t2; c3[j] = t3;
        }
    }
#endif
    for (; r < R; r++) {
        const float *a = A + r * lda;
        float *c = C + r * ldc;
        for (int k = 0; k < K; k++) {
            const float av = a[k], *b = B + (long)k * N;
            for (int j = 0; j < N; j++) c[j] += av * b[j];
        }
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* exp, Cephes' polynomial on x clamped to [-87, 88]: about 2 ulp. A NaN stays NaN (max/min
 * return their second operand when one is NaN), so a diverged model shows as one. */
static inline __m256 exp8(__m256 x) {
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
static inline __m256 sigmoid8(__m256 x) {
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
static inline __m256 tanh8(__m256 x) { /* 2 sigmoid(2x) - 1 */
    __m256 two = _mm256_set1_ps(2.0f);
    return _mm256_fmsub_ps(two, sigmoid8(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}
#endif

static inline float sigmoid1(float x) { return 1.0f / (1.0f + expf(-x)); }

/* One step's gate nonlinearities and state update for one row. a: the row's G gate inputs,
 * replaced by the activated gates; writes c and h. */
static void cell_forward(int H, float *a, const float *c_prev, float *c, float *h) {
    int j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; j + 8 <= H; j += 8) {
        __m256 i = sigmoid8(_mm256_loadu_ps(a + j));
        __m256 f = sigmoid8(_mm256_loadu_ps(a + H + j));
        __m256 g = tanh8(_mm256_loadu_ps(a + 2 * H + j));
        __m256 o = sigmoid8(_mm256_loadu_ps(a + 3 * H + j));
        __m256 cv = _mm256_fmadd_ps(f, _mm256_loadu_ps(c_prev + j), _mm256_mul_ps(i, g));
        _mm256_storeu_ps(a + j, i); _mm256_storeu_ps(a + H + j, f);
        _mm256_storeu_ps(a + 2 * H + j, g); _mm256_storeu_ps(a + 3 * H + j, o);
        _mm256_storeu_ps(c + j, cv);
        _mm256_storeu_ps(h + j, _mm256_mul_ps(o, tanh8(cv)));
    }
#endif
    for (; j < H; j++) {
        float i = sigmoid1(a[j]), f = sigmoid1(a[H + j]), g = tanhf(a[2 * H + j]),
              o = sigmoid1(a[3 * H + j]);
        float cv = f * c_prev[j] + i * g;
        a[j] = i; a[H + j] = f; a[2 * H + j] = g; a[3 * H + j] = o;
        c[j] = cv;
        h[j] = o * tanhf(cv);
    }
}

/* One step backward for one row. act: activated gates; c, c_prev: cell states; dh: gradient
 * of h (output + carried); dc: carried gradient of c, replaced by that of c_prev; dg: the
 * gradient of the gate inputs. */
static void cell_backward(int H, const float *act, const float *c, const float *c_prev,
                          const float *dh, float *dc, float *dg) {
    int j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 one = _mm256_set1_ps(1.0f);
    for (; j + 8 <= H; j += 8) {
        __m256 i = _mm256_loadu_ps(act + j), f = _mm256_loadu_ps(act + H + j);
        __m256 g = _mm256_loadu_ps(act + 2 * H + j), o = _mm256_loadu_ps(act + 3 * H + j);
        __m256 tc = tanh8(_mm256_loadu_ps(c + j)), d = _mm256_loadu_ps(dh + j);
        __m256 dcv = _mm256_fmadd_ps(_mm256_mul_ps(d, o), _mm256_fnmadd_ps(tc, tc, one),
                                     _mm256_loadu_ps(dc + j));
        __m256 d_o = _mm256_mul_ps(d, tc);
        __m256 d_i = _mm256_mul_ps(dcv, g), d_g = _mm256_mul_ps(dcv, i);
        __m256 d_f = _mm256_mul_ps(dcv, _mm256_loadu_ps(c_prev + j));
        _mm256_storeu_ps(dc + j, _mm256_mul_ps(dcv, f));
        _mm256_storeu_ps(dg + j, _mm256_mul_ps(d_i, _mm256_mul_ps(i, _mm256_sub_ps(one, i))));
        _mm256_storeu_ps(dg + H + j,
                         _mm256_mul_ps(d_f, _mm256_mul_ps(f, _mm256_sub_ps(one, f))));
        _mm256_storeu_ps(dg + 2 * H + j, _mm256_mul_ps(d_g, _mm256_fnmadd_ps(g, g, one)));
        _mm256_storeu_ps(dg + 3 * H + j,
                         _mm256_mul_ps(d_o, _mm256_mul_ps(o, _mm256_sub_ps(one, o))));
    }
#endif
    for (; j < H; j++) {
        float i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
        float tc = tanhf(c[j]);
        float dcv = dc[j] + dh[j] * o * (1.0f - tc * tc);
        dc[j] = dcv * f;
        dg[j] = dcv * g * i * (1.0f - i);
        dg[H + j] = dcv * c_prev[j] * f * (1.0f - f);
        dg[2 * H + j] = dcv * i * (1.0f - g * g);
        dg[3 * H + j] = dh[j] * tc * o * (1.0f - o);
    }
}

typedef struct {
    int b0, b1, T, H;
    float *gates;
    const float *w, *h0, *c0;
    float *out, *cs;
    const float *dout;
    float *dgates, *dh, *dc, *work;
} Job;

static void *forward_rows(void *arg) {
    Job *p = (Job *)arg;
    const int T = p->T, H = p->H, G = 4 * H;
    const long sg = (long)T * G, sh = (long)T * H;
    for (int b = p->b0; b < p->b1; b += 4) {
        const int R = p->b1 - b < 4 ? p->b1 - b : 4;
        for (int t = 0; t < T; t++) {
            float *a = p->gates + b * sg + (long)t * G;
            if (t == 0)
                gemm_acc(R, H, G, p->h0 + (long)b * H, H, p->w, a, sg);
            else
                gemm_acc(R, H, G, p->out + b * sh + (long)(t - 1) * H, sh, p->w, a, sg);
            for (int r = 0; r < R; r++) {
                const long row = (long)(b + r);
                const float *c_prev = t == 0 ? p->c0 + row * H : p->cs + row * sh + (long)(t - 1) * H;
                cell_forward(H, a + r * sg, c_prev, p->cs + row * sh + (long)t * H,
                             p->out + row * sh + (long)t * H);
            }
        }
    }
    return NULL;
}

static void *backward_rows(void *arg) {
    Job *p = (Job *)arg;
    const int T = p->T, H = p->H, G = 4 * H;
    const long sg = (long)T * G, sh = (long)T * H;
    float *dh = p->work + (long)p->b0 * H; /* this block's gradient of h at the current step */
    for (int b = p->b0; b < p->b1; b += 4) {
        const int R = p->b1 - b < 4 ? p->b1 - b : 4;
        float *carry = p->dh + (long)b * H; /* gradient flowing into h from the step after */
        for (int t = T - 1; t >= 0; t--) {
            for (int r = 0; r < R; r++) {
                const long row = (long)(b + r);
                const float *d = p->dout + row * sh + (long)t * H;
                float *x = dh + (long)(b - p->b0 + r) * H;
                for (int j = 0; j < H; j++) x[j] = d[j] + carry[r * H + j];
                const float *c_prev = t == 0 ? p->c0 + row * H : p->cs + row * sh + (long)(t - 1) * H;
                cell_backward(H, p->gates + row * sg + (long)t * G, p->cs + row * sh + (long)t * H,
                              c_prev, x, p->dc + row * H, p->dgates + row * sg + (long)t * G);
            }
            memset(carry, 0, sizeof(float) * R * H);
            gemm_acc(R, G, H, p->dgates + b * sg + (long)t * G, sg, p->w, carry, H);
        }
    }
    return NULL;
}

/* Split the batch into blocks of 4 rows over `threads` threads of the OpenMP pool. Linked
 * against the OpenMP runtime torch has loaded, this reuses torch's own worker threads. */
static int run(void *(*fn)(void *), Job *base, int B, int threads) {
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

/* Forward over the whole sequence; see the layout above. w_t: W_hh transposed (H, G). */
int rk_lstm_forward(int B, int T, int H, float *gates, const float *w_t, const float *h0,
                    const float *c0, float *out, float *cs, int threads) {
    Job job = {0, B, T, H, gates, w_t, h0, c0, out, cs, NULL, NULL, NULL, NULL, NULL};
    return run(forward_rows, &job, B, threads);
}

/* Backward over the whole sequence. gates: the activated gates from the forward pass;
 * w: W_hh (G, H); dh, dc: the final state's gradients in, h0's and c0's out; work (B, H). */
int rk_lstm_backward(int B, int T, int H, const float *gates, const float *w, const float *c0,
                     const float *cs, const float *dout, float *dgates, float *dh, float *dc,
                     float *work, int threads) {
    Job job = {0, B, T, H, (float *)gates, w, NULL, c0, NULL, (float *)cs, dout, dgates, dh, dc,
               work};
    return run(backward_rows, &job, B, threads);
}
