/* The LSTM recurrence for one instruction set: included by lstm.c once per variant, with
 *   RK_NAME(f)  the variant's name for f (f_plain, f_avx2, f_avx512)
 *   RK_TARGET   the function attribute that enables its instructions (empty for plain C)
 *   RK_WIDTH    its widest vector: 1 (plain C), 8 (AVX2 + FMA), 16 (AVX-512F, with AVX2 + FMA
 *               for what is left of a row after the 16-wide blocks)
 * Every variant computes the same arithmetic; see lstm.c for the layout. */

/* C[r, :N] += A[r, :K] @ B[:K, :N] for r < R; row strides lda, ldc; B is dense (K, N). */
static RK_TARGET void RK_NAME(gemm_acc)(int R, int K, int N, const float *A, long lda,
                                        const float *B, float *C, long ldc) {
    int r = 0;
#if RK_WIDTH >= 8
    for (; r + 4 <= R; r += 4) {
        const float *a0 = A + r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        float *c0 = C + r * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        int j = 0;
#if RK_WIDTH >= 16
        for (; j + 32 <= N; j += 32) {
            __m512 s00 = _mm512_loadu_ps(c0 + j), s01 = _mm512_loadu_ps(c0 + j + 16);
            __m512 s10 = _mm512_loadu_ps(c1 + j), s11 = _mm512_loadu_ps(c1 + j + 16);
            __m512 s20 = _mm512_loadu_ps(c2 + j), s21 = _mm512_loadu_ps(c2 + j + 16);
            __m512 s30 = _mm512_loadu_ps(c3 + j), s31 = _mm512_loadu_ps(c3 + j + 16);
            const float *b = B + j;
            for (int k = 0; k < K; k++, b += N) {
                __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), a;
                a = _mm512_set1_ps(a0[k]);
                s00 = _mm512_fmadd_ps(a, b0, s00); s01 = _mm512_fmadd_ps(a, b1, s01);
                a = _mm512_set1_ps(a1[k]);
                s10 = _mm512_fmadd_ps(a, b0, s10); s11 = _mm512_fmadd_ps(a, b1, s11);
                a = _mm512_set1_ps(a2[k]);
                s20 = _mm512_fmadd_ps(a, b0, s20); s21 = _mm512_fmadd_ps(a, b1, s21);
                a = _mm512_set1_ps(a3[k]);
                s30 = _mm512_fmadd_ps(a, b0, s30); s31 = _mm512_fmadd_ps(a, b1, s31);
            }
            _mm512_storeu_ps(c0 + j, s00); _mm512_storeu_ps(c0 + j + 16, s01);
            _mm512_storeu_ps(c1 + j, s10); _mm512_storeu_ps(c1 + j + 16, s11);
            _mm512_storeu_ps(c2 + j, s20); _mm512_storeu_ps(c2 + j + 16, s21);
            _mm512_storeu_ps(c3 + j, s30); _mm512_storeu_ps(c3 + j + 16, s31);
        }
#endif
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

/* One step's gate nonlinearities and state update for one row. a: the row's G gate inputs,
 * replaced by the activated gates; writes c and h. */
static RK_TARGET void RK_NAME(cell_forward)(int H, float *a, const float *c_prev, float *c,
                                            float *h) {
    int j = 0;
#if RK_WIDTH >= 16
    for (; j + 16 <= H; j += 16) {
        __m512 i = sigmoid16(_mm512_loadu_ps(a + j));
        __m512 f = sigmoid16(_mm512_loadu_ps(a + H + j));
        __m512 g = tanh16(_mm512_loadu_ps(a + 2 * H + j));
        __m512 o = sigmoid16(_mm512_loadu_ps(a + 3 * H + j));
        __m512 cv = _mm512_fmadd_ps(f, _mm512_loadu_ps(c_prev + j), _mm512_mul_ps(i, g));
        _mm512_storeu_ps(a + j, i); _mm512_storeu_ps(a + H + j, f);
        _mm512_storeu_ps(a + 2 * H + j, g); _mm512_storeu_ps(a + 3 * H + j, o);
        _mm512_storeu_ps(c + j, cv);
        _mm512_storeu_ps(h + j, _mm512_mul_ps(o, tanh16(cv)));
    }
#endif
#if RK_WIDTH >= 8
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
static RK_TARGET void RK_NAME(cell_backward)(int H, const float *act, const float *c,
                                             const float *c_prev, const float *dh, float *dc,
                                             float *dg) {
    int j = 0;
#if RK_WIDTH >= 16
    {
        __m512 one = _mm512_set1_ps(1.0f);
        for (; j + 16 <= H; j += 16) {
            __m512 i = _mm512_loadu_ps(act + j), f = _mm512_loadu_ps(act + H + j);
            __m512 g = _mm512_loadu_ps(act + 2 * H + j), o = _mm512_loadu_ps(act + 3 * H + j);
            __m512 tc = tanh16(_mm512_loadu_ps(c + j)), d = _mm512_loadu_ps(dh + j);
            __m512 dcv = _mm512_fmadd_ps(_mm512_mul_ps(d, o), _mm512_fnmadd_ps(tc, tc, one),
                                         _mm512_loadu_ps(dc + j));
            __m512 d_o = _mm512_mul_ps(d, tc);
            __m512 d_i = _mm512_mul_ps(dcv, g), d_g = _mm512_mul_ps(dcv, i);
            __m512 d_f = _mm512_mul_ps(dcv, _mm512_loadu_ps(c_prev + j));
            _mm512_storeu_ps(dc + j, _mm512_mul_ps(dcv, f));
            _mm512_storeu_ps(dg + j,
                             _mm512_mul_ps(d_i, _mm512_mul_ps(i, _mm512_sub_ps(one, i))));
            _mm512_storeu_ps(dg + H + j,
                             _mm512_mul_ps(d_f, _mm512_mul_ps(f, _mm512_sub_ps(one, f))));
            _mm512_storeu_ps(dg + 2 * H + j, _mm512_mul_ps(d_g, _mm512_fnmadd_ps(g, g, one)));
            _mm512_storeu_ps(dg + 3 * H + j,
                             _mm512_mul_ps(d_o, _mm512_mul_ps(o, _mm512_sub_ps(one, o))));
        }
    }
#endif
#if RK_WIDTH >= 8
    {
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
            _mm256_storeu_ps(dg + j,
                             _mm256_mul_ps(d_i, _mm256_mul_ps(i, _mm256_sub_ps(one, i))));
            _mm256_storeu_ps(dg + H + j,
                             _mm256_mul_ps(d_f, _mm256_mul_ps(f, _mm256_sub_ps(one, f))));
            _mm256_storeu_ps(dg + 2 * H + j, _mm256_mul_ps(d_g, _mm256_fnmadd_ps(g, g, one)));
            _mm256_storeu_ps(dg + 3 * H + j,
                             _mm256_mul_ps(d_o, _mm256_mul_ps(o, _mm256_sub_ps(one, o))));
        }
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

/* The forward recurrence for the rows [b0, b1) of a Job, in blocks of 4 rows. */
static RK_TARGET void *RK_NAME(forward_rows)(void *arg) {
    Job *p = (Job *)arg;
    const int T = p->T, H = p->H, G = 4 * H;
    const long sg = (long)T * G, sh = (long)T * H;
    for (int b = p->b0; b < p->b1; b += 4) {
        const int R = p->b1 - b < 4 ? p->b1 - b : 4;
        for (int t = 0; t < T; t++) {
            float *a = p->gates + b * sg + (long)t * G;
            if (t == 0)
                RK_NAME(gemm_acc)(R, H, G, p->h0 + (long)b * H, H, p->w, a, sg);
            else
                RK_NAME(gemm_acc)(R, H, G, p->out + b * sh + (long)(t - 1) * H, sh, p->w, a,
                                  sg);
            for (int r = 0; r < R; r++) {
                const long row = (long)(b + r);
                const float *c_prev = t == 0 ? p->c0 + row * H
                                             : p->cs + row * sh + (long)(t - 1) * H;
                RK_NAME(cell_forward)(H, a + r * sg, c_prev, p->cs + row * sh + (long)t * H,
                                      p->out + row * sh + (long)t * H);
            }
        }
    }
    return NULL;
}

/* The backward recurrence for the rows [b0, b1) of a Job, in blocks of 4 rows. */
static RK_TARGET void *RK_NAME(backward_rows)(void *arg) {
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
                const float *c_prev = t == 0 ? p->c0 + row * H
                                             : p->cs + row * sh + (long)(t - 1) * H;
                RK_NAME(cell_backward)(H, p->gates + row * sg + (long)t * G,
                                       p->cs + row * sh + (long)t * H, c_prev, x,
                                       p->dc + row * H, p->dgates + row * sg + (long)t * G);
            }
            memset(carry, 0, sizeof(float) * R * H);
            RK_NAME(gemm_acc)(R, G, H, p->dgates + b * sg + (long)t * G, sg, p->w, carry, H);
        }
    }
    return NULL;
}
