// Kernels of the compiled generator, free of Python: weight packing, the matrix-vector products, the gate, the
// sampling. Included once per instruction-set variant (ENGINE_AVX512, ENGINE_AVX2 or neither: generic); all
// internal linkage.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(ENGINE_AVX512) || defined(ENGINE_AVX2)
#include <immintrin.h>
#endif

namespace {

constexpr int kLanes = 16;  // floats per vector (AVX-512); also the padding unit of every dimension
constexpr int kMaxRows = 8;  // streams stepped together through each weight load

int round_up(int x, int m) { return (x + m - 1) / m * m; }

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

template <typename T>
std::unique_ptr<T[], FreeDeleter> aligned_zeros(size_t n) {
    const size_t bytes = (std::max<size_t>(n * sizeof(T), 64) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return std::unique_ptr<T[], FreeDeleter>(static_cast<T*>(p));
}

uint16_t to_bf16(float f) {  // round to nearest even
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

float from_bf16(uint16_t b) {
    uint32_t bits = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// A matrix-vector product y = W x + b laid out for output-in-lanes kernels: `mp` outputs (padded to 16) and `k`
// inputs (padded to even). fp32: w[k][mp]. bf16 (the SIMD variants): pairs w32[k / 2][mp], each 32-bit word holding
// bf16(W[m][2p]) in its low half and bf16(W[m][2p + 1]) in its high half.
struct Matrix {
    int mp = 0, k = 0;
    bool bf16 = false;
    std::unique_ptr<float[], FreeDeleter> w;
    std::unique_ptr<uint32_t[], FreeDeleter> w32;
    std::unique_ptr<float[], FreeDeleter> bias;
};

// Pack a torch-layout (M, K) weight into a Matrix, row m going to output rowmap[m], column c to input colmap[c].
void pack(Matrix& A, int mp, int k, const float* w, int m_src, int k_src, const std::vector<int>& rowmap,
          const std::vector<int>& colmap, const float* bias, bool bf16, bool native_bf16) {
    A.mp = mp;
    A.k = k;
    A.bf16 = bf16 && native_bf16;
    A.bias = aligned_zeros<float>(mp);
    std::vector<float> dense(static_cast<size_t>(mp) * k, 0.0f);  // [m][k]
    for (int m = 0; m < m_src; ++m) {
        for (int c = 0; c < k_src; ++c) {
            float v = w[static_cast<size_t>(m) * k_src + c];
            if (bf16) v = from_bf16(to_bf16(v));
            dense[static_cast<size_t>(rowmap[m]) * k + colmap[c]] = v;
        }
        if (bias) A.bias[rowmap[m]] = bias[m];
    }
    if (A.bf16) {
        A.w32 = aligned_zeros<uint32_t>(static_cast<size_t>(k / 2) * mp);
        for (int p = 0; p < k / 2; ++p)
            for (int m = 0; m < mp; ++m) {
                uint32_t lo = to_bf16(dense[static_cast<size_t>(m) * k + 2 * p]);
                uint32_t hi = to_bf16(dense[static_cast<size_t>(m) * k + 2 * p + 1]);
                A.w32[static_cast<size_t>(p) * mp + m] = lo | (hi << 16);
            }
    } else {
        A.w = aligned_zeros<float>(static_cast<size_t>(k) * mp);
        for (int c = 0; c < k; ++c)
            for (int m = 0; m < mp; ++m) A.w[static_cast<size_t>(c) * mp + m] = dense[static_cast<size_t>(m) * k + c];
    }
}

// ---- compute primitives, one set per instruction-set variant ----------------------------------------------------

#if defined(ENGINE_AVX512)

constexpr bool kNativeBf16 = true;
constexpr const char* kVariant = "avx512";

// Software prefetch distance into the weight stream, in bytes (measured best on Sapphire Rapids: bf16 weights come
// from L2, fp32 ones from L3; past the end of a matrix it fetches lines nobody reads, which is harmless).
constexpr int kPrefetchBf16 = 1024;
constexpr int kPrefetchFp32 = 2048;

constexpr int kVec = 16;  // floats per register: the outputs of one tile

// Rows NR x tiles TG of 16 outputs, starting at tile `tile0`: every (row, output) is one fma chain over k in order.
template <bool BF16, int NR, int TG>
inline void mv_tiles(const Matrix& A, int tile0, const float* const* x, float* const* y) {
    __m512 acc[NR][TG];
    for (int t = 0; t < TG; ++t) {
        __m512 b = _mm512_loadu_ps(A.bias.get() + (tile0 + t) * kLanes);
        for (int r = 0; r < NR; ++r) acc[r][t] = b;
    }
    const int mp = A.mp, pairs = A.k / 2;
    const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int p = 0; p < pairs; ++p) {
        __m512 we[TG], wo[TG];
        for (int t = 0; t < TG; ++t) {
            if constexpr (BF16) {
                const uint32_t* w = A.w32.get() + static_cast<size_t>(p) * mp + (tile0 + t) * kLanes;
                _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchBf16, _MM_HINT_T0);
                __m512i v = _mm512_loadu_si512(w);
                we[t] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                wo[t] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
            } else {
                const float* w = A.w.get() + static_cast<size_t>(2 * p) * mp + (tile0 + t) * kLanes;
                _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchFp32, _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char*>(w + mp) + kPrefetchFp32, _MM_HINT_T0);
                we[t] = _mm512_loadu_ps(w);
                wo[t] = _mm512_loadu_ps(w + mp);
            }
        }
        for (int r = 0; r < NR; ++r) {
            __m512 xe = _mm512_set1_ps(x[r][2 * p]);
            __m512 xo = _mm512_set1_ps(x[r][2 * p + 1]);
            for (int t = 0; t < TG; ++t) {
                acc[r][t] = _mm512_fmadd_ps(we[t], xe, acc[r][t]);
                acc[r][t] = _mm512_fmadd_ps(wo[t], xo, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < TG; ++t) _mm512_storeu_ps(y[r] + (tile0 + t) * kLanes, acc[r][t]);
}

// Tiles per pass by rows: the NR x TG accumulators and TG weight pairs stay in the 32 registers.
#ifndef ENGINE_TG
#define ENGINE_TG 12, 8, 4, 4, 4, 3, 3, 3
#endif

// exp for float32 lanes: Cephes' range reduction and polynomial (about 1 ulp), scaled by 2^n.
inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// z[j] = tanh(a[j] + cb[j]) * sigmoid(a[gp + j] + cb[g + j]) for j < gp (a multiple of 16; cb has 2g entries).
// tanh(x) = 1 - 2 / (e^2x + 1), sigmoid(x) = 1 / (1 + e^-x); exact divisions (reciprocal estimates measured no
// faster here: the exponentials dominate).
inline void gate(const float* a, const float* cb, int g, int gp, float* z) {
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    for (int j = 0; j < gp; j += kLanes) {
        const __mmask16 m = g - j >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << std::max(0, g - j)) - 1);
        __m512 ta = _mm512_add_ps(_mm512_loadu_ps(a + j), _mm512_maskz_loadu_ps(m, cb + j));
        __m512 sb = _mm512_add_ps(_mm512_loadu_ps(a + gp + j), _mm512_maskz_loadu_ps(m, cb + g + j));
        __m512 e2a = exp512(_mm512_mul_ps(two, ta));
        __m512 th = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e2a, one)));
        __m512 emb = exp512(_mm512_sub_ps(_mm512_setzero_ps(), sb));
        __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, emb));
        _mm512_storeu_ps(z + j, _mm512_mul_ps(th, sg));
    }
}

// dst[j] = src[j] for j < n: short copies inline, without a call to memcpy.
inline void copy_floats(float* dst, const float* src, int n) {
    int j = 0;
    for (; j + kLanes <= n; j += kLanes) _mm512_storeu_ps(dst + j, _mm512_loadu_ps(src + j));
    if (j < n) {
        const __mmask16 m = __mmask16((1u << (n - j)) - 1);
        _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, src + j));
    }
}

// dst[j] += src[j] for j < n (a multiple of 16).
inline void add_into(float* dst, const float* src, int n) {
    for (int j = 0; j < n; j += kLanes)
        _mm512_storeu_ps(dst + j, _mm512_add_ps(_mm512_loadu_ps(dst + j), _mm512_loadu_ps(src + j)));
}

// out[j] = (left[j] + (right[j] - left[j]) * alpha) + c[j], each operation rounded to float32 (no fma).
inline void lerp_row(float* out, const float* left, const float* right, float alpha, const float* c, int n) {
    const __m512 a = _mm512_set1_ps(alpha);
    int j = 0;
    for (; j < n; j += kLanes) {
        const __mmask16 m = n - j >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
        const __m512 l = _mm512_maskz_loadu_ps(m, left + j);
        const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, right + j), l), a);
        _mm512_mask_storeu_ps(out + j, m, _mm512_add_ps(_mm512_add_ps(l, d), _mm512_maskz_loadu_ps(m, c + j)));
    }
}

inline void relu(float* x, int n) {
    for (int j = 0; j < n; j += kLanes)
        _mm512_storeu_ps(x + j, _mm512_max_ps(_mm512_loadu_ps(x + j), _mm512_setzero_ps()));
}

#elif defined(ENGINE_AVX2)

// AVX2 + FMA (x86-64-v3: nearly every x86 server and desktop CPU since 2013-2015). The same kernels as the AVX-512
// variant in 8-lane registers: the same fma chain per output, the same bf16 weights widened by integer shifts (no BF16
// instructions needed), the same exp polynomial, so its results equal the AVX-512 variant's.
constexpr bool kNativeBf16 = true;
constexpr const char* kVariant = "avx2";
constexpr int kVec = 8;  // floats per register: the outputs of one tile

constexpr int kPrefetchBf16 = 1024;  // as the AVX-512 variant: others measured within this machine's noise here
constexpr int kPrefetchFp32 = 2048;

// Rows NR x tiles TG of 8 outputs, starting at tile `tile0`: every (row, output) is one fma chain over k in order.
template <bool BF16, int NR, int TG>
inline void mv_tiles(const Matrix& A, int tile0, const float* const* x, float* const* y) {
    __m256 acc[NR][TG];
    for (int t = 0; t < TG; ++t) {
        __m256 b = _mm256_loadu_ps(A.bias.get() + (tile0 + t) * kVec);
        for (int r = 0; r < NR; ++r) acc[r][t] = b;
    }
    const int mp = A.mp, pairs = A.k / 2;
    const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int p = 0; p < pairs; ++p) {
        __m256 we[TG], wo[TG];
        for (int t = 0; t < TG; ++t) {
            if constexpr (BF16) {
                const uint32_t* w = A.w32.get() + static_cast<size_t>(p) * mp + (tile0 + t) * kVec;
                _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchBf16, _MM_HINT_T0);
                __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
                we[t] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                wo[t] = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
            } else {
                const float* w = A.w.get() + static_cast<size_t>(2 * p) * mp + (tile0 + t) * kVec;
                _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchFp32, _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char*>(w + mp) + kPrefetchFp32, _MM_HINT_T0);
                we[t] = _mm256_loadu_ps(w);
                wo[t] = _mm256_loadu_ps(w + mp);
            }
        }
        for (int r = 0; r < NR; ++r) {
            __m256 xe = _mm256_set1_ps(x[r][2 * p]);
            __m256 xo = _mm256_set1_ps(x[r][2 * p + 1]);
            for (int t = 0; t < TG; ++t) {
                acc[r][t] = _mm256_fmadd_ps(we[t], xe, acc[r][t]);
                acc[r][t] = _mm256_fmadd_ps(wo[t], xo, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int t = 0; t < TG; ++t) _mm256_storeu_ps(y[r] + (tile0 + t) * kVec, acc[r][t]);
}

// Tiles per pass by rows: NR x TG accumulators, 2 TG weights and 2 broadcasts in the 16 registers.
#ifndef ENGINE_TG
#define ENGINE_TG 4, 3, 2, 2, 2, 1, 1, 1
#endif

// exp512's range reduction and polynomial in 8 lanes; p * 2^n by building 2^n from its exponent bits, exact as
// scalef is: n lies in [-126, 127] after the clamp, so 2^n is a normal float.
inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Lanes j + i < n of a vector starting at j (all of them when n - j >= 8), as a maskload/maskstore mask.
inline __m256i lanes_below(int n, int j) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// z[j] = tanh(a[j] + cb[j]) * sigmoid(a[gp + j] + cb[g + j]) for j < gp, as the AVX-512 gate.
inline void gate(const float* a, const float* cb, int g, int gp, float* z) {
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    for (int j = 0; j < gp; j += kVec) {
        const __m256i m = lanes_below(g, j);
        __m256 ta = _mm256_add_ps(_mm256_loadu_ps(a + j), _mm256_maskload_ps(cb + j, m));
        __m256 sb = _mm256_add_ps(_mm256_loadu_ps(a + gp + j), _mm256_maskload_ps(cb + g + j, m));
        __m256 e2a = exp256(_mm256_mul_ps(two, ta));
        __m256 th = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e2a, one)));
        __m256 emb = exp256(_mm256_sub_ps(_mm256_setzero_ps(), sb));
        __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, emb));
        _mm256_storeu_ps(z + j, _mm256_mul_ps(th, sg));
    }
}

inline void copy_floats(float* dst, const float* src, int n) {
    int j = 0;
    for (; j + kVec <= n; j += kVec) _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
    if (j < n) {
        const __m256i m = lanes_below(n, j);
        _mm256_maskstore_ps(dst + j, m, _mm256_maskload_ps(src + j, m));
    }
}

// dst[j] += src[j] for j < n (a multiple of 16).
inline void add_into(float* dst, const float* src, int n) {
    for (int j = 0; j < n; j += kVec)
        _mm256_storeu_ps(dst + j, _mm256_add_ps(_mm256_loadu_ps(dst + j), _mm256_loadu_ps(src + j)));
}

// out[j] = (left[j] + (right[j] - left[j]) * alpha) + c[j], each operation rounded to float32 (no fma).
inline void lerp_row(float* out, const float* left, const float* right, float alpha, const float* c, int n) {
    const __m256 a = _mm256_set1_ps(alpha);
    for (int j = 0; j < n; j += kVec) {
        const __m256i m = lanes_below(n, j);
        const __m256 l = _mm256_maskload_ps(left + j, m);
        const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(right + j, m), l), a);
        _mm256_maskstore_ps(out + j, m, _mm256_add_ps(_mm256_add_ps(l, d), _mm256_maskload_ps(c + j, m)));
    }
}

inline void relu(float* x, int n) {
    for (int j = 0; j < n; j += kVec)
        _mm256_storeu_ps(x + j, _mm256_max_ps(_mm256_loadu_ps(x + j), _mm256_setzero_ps()));
}

#else  // generic: plain loops the compiler vectorises for whatever the baseline is

constexpr bool kNativeBf16 = false;  // bf16 is emulated: fp32 kernels over bf16-rounded weights
constexpr const char* kVariant = "generic";

void matvec(const Matrix& A, int nr, const float* const* x, float* const* y) {
    const int mp = A.mp, k = A.k;
    for (int r = 0; r < nr; ++r) {
        float* __restrict out = y[r];
        const float* __restrict in = x[r];
        for (int m = 0; m < mp; ++m) out[m] = A.bias[m];
        for (int c = 0; c < k; ++c) {
            const float v = in[c];
            const float* __restrict w = A.w.get() + static_cast<size_t>(c) * mp;
            for (int m = 0; m < mp; ++m) out[m] += w[m] * v;
        }
    }
}

inline void gate(const float* a, const float* cb, int g, int gp, float* z) {
    for (int j = 0; j < gp; ++j) {
        const float ta = a[j] + (j < g ? cb[j] : 0.0f), sb = a[gp + j] + (j < g ? cb[g + j] : 0.0f);
        z[j] = std::tanh(ta) * (1.0f / (1.0f + std::exp(-sb)));
    }
}

inline void copy_floats(float* dst, const float* src, int n) { std::memcpy(dst, src, sizeof(float) * n); }

inline void add_into(float* __restrict dst, const float* __restrict src, int n) {
    for (int j = 0; j < n; ++j) dst[j] += src[j];
}

inline void relu(float* x, int n) {
    for (int j = 0; j < n; ++j) x[j] = std::max(x[j], 0.0f);
}

inline void lerp_row(float* __restrict out, const float* left, const float* right, float alpha, const float* c, int n) {
    for (int j = 0; j < n; ++j) out[j] = (left[j] + (right[j] - left[j]) * alpha) + c[j];
}

#endif

#if defined(ENGINE_AVX512) || defined(ENGINE_AVX2)

// ---- the tile driver of the SIMD variants ------------------------------------------------------------------------

constexpr int kMaxTiles[kMaxRows] = {ENGINE_TG};

template <bool BF16, int NR, int TG>
inline void mv_pass(const Matrix& A, int tile0, int tg, const float* const* x, float* const* y) {
    if constexpr (TG > 1) {
        if (tg < TG) return mv_pass<BF16, NR, TG - 1>(A, tile0, tg, x, y);
    }
    mv_tiles<BF16, NR, TG>(A, tile0, x, y);
}

// All tiles in passes of near-equal size (12 tiles at most 8 a pass: 6 + 6, not 8 + 4), so that every pass has as
// many independent chains as the rows allow.
template <bool BF16, int NR>
inline void mv_rows(const Matrix& A, const float* const* x, float* const* y) {
    constexpr int most = kMaxTiles[NR - 1];
    const int tiles = A.mp / kVec;
    const int passes = (tiles + most - 1) / most;
    int tile0 = 0;
    for (int i = 0; i < passes; ++i) {
        const int tg = (tiles - tile0) / (passes - i);
        mv_pass<BF16, NR, most>(A, tile0, tg, x, y);
        tile0 += tg;
    }
}

template <bool BF16>
void matvec_impl(const Matrix& A, int nr, const float* const* x, float* const* y) {
    switch (nr) {
        case 1: return mv_rows<BF16, 1>(A, x, y);
        case 2: return mv_rows<BF16, 2>(A, x, y);
        case 3: return mv_rows<BF16, 3>(A, x, y);
        case 4: return mv_rows<BF16, 4>(A, x, y);
        case 5: return mv_rows<BF16, 5>(A, x, y);
        case 6: return mv_rows<BF16, 6>(A, x, y);
        case 7: return mv_rows<BF16, 7>(A, x, y);
        case 8: return mv_rows<BF16, 8>(A, x, y);
        default: throw std::logic_error("rows per block");
    }
}

void matvec(const Matrix& A, int nr, const float* const* x, float* const* y) {
    if (A.bf16)
        matvec_impl<true>(A, nr, x, y);
    else
        matvec_impl<false>(A, nr, x, y);
}

#endif

// ---- sampling: models/generate/reference.py's uniforms() and sample(), per row ---------------------------------------------

double uniform(uint64_t seed, uint64_t position) {
    uint64_t z = seed + (position + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int64_t argmax_row(const float* logits, int classes) {  // the first of equal maxima, as numpy
    int best = 0;
    for (int c = 1; c < classes; ++c)
        if (logits[c] > logits[best]) best = c;
    return best;
}

// sample() for one row: float64 softmax(logits / T) with the max subtracted, sequential cumsum, count of
// cdf < u * total, clamped; T <= 0 is argmax. scratch: `classes` doubles.
[[maybe_unused]] int64_t sample_row(const float* logits, int classes, double temperature, double u, double* scratch) {
    if (!(temperature > 0)) return argmax_row(logits, classes);
    double mx = -std::numeric_limits<double>::infinity();
    for (int c = 0; c < classes; ++c) {
        scratch[c] = static_cast<double>(logits[c]) / temperature;
        mx = std::max(mx, scratch[c]);
    }
    double total = 0;
    for (int c = 0; c < classes; ++c) {
        total += std::exp(scratch[c] - mx);
        scratch[c] = total;  // the cdf
    }
    const double threshold = u * total;
    int64_t count = 0;
    for (int c = 0; c < classes; ++c) count += scratch[c] < threshold;
    return std::min<int64_t>(count, classes - 1);
}

#if defined(ENGINE_AVX512)

// exp for float64 lanes, x <= 0 (here: a logit minus the maximum): Cody-Waite reduction by ln 2, Taylor to r^13 on
// |r| <= ln2 / 2, scaled by 2^n; within about 1 ulp of the correctly rounded value.
inline __m512d exp512d(__m512d x) {
    x = _mm512_max_pd(x, _mm512_set1_pd(-746.0));
    const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(1.4426950408889634074)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
    static constexpr double inv_fact[14] = {1.0,
                                            1.0,
                                            1.0 / 2,
                                            1.0 / 6,
                                            1.0 / 24,
                                            1.0 / 120,
                                            1.0 / 720,
                                            1.0 / 5040,
                                            1.0 / 40320,
                                            1.0 / 362880,
                                            1.0 / 3628800,
                                            1.0 / 39916800,
                                            1.0 / 479001600,
                                            1.0 / 6227020800};
    __m512d p = _mm512_set1_pd(inv_fact[13]);
    for (int i = 12; i >= 0; --i) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(inv_fact[i]));
    return _mm512_scalef_pd(p, n);
}

// sample() for a block of rows, vectorised over classes; the cumulative sums (sequential, as numpy's) run for all
// rows in lockstep so that their dependency chains overlap. scratch: nr x round_up(classes, 8) doubles.
void sample_block(int nr, const float* const* logits, int classes, const double* temperature, const double* u,
                  int64_t* picks, double* scratch) {
    const int stride = round_up(classes, 8);
    bool soft[kMaxRows];
    double total[kMaxRows];
    for (int r = 0; r < nr; ++r) {
        soft[r] = temperature[r] > 0;
        if (!soft[r]) {
            picks[r] = argmax_row(logits[r], classes);
            continue;
        }
        double* s = scratch + r * stride;
        const __m512d t = _mm512_set1_pd(temperature[r]);
        __m512d mx = _mm512_set1_pd(-std::numeric_limits<double>::infinity());
        for (int c = 0; c < classes; c += 8) {
            const __mmask8 m = classes - c >= 8 ? __mmask8(0xFF) : __mmask8((1u << (classes - c)) - 1);
            __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, logits[r] + c));
            if (temperature[r] != 1.0) v = _mm512_div_pd(v, t);  // x / 1.0 == x exactly
            _mm512_storeu_pd(s + c, v);
            mx = _mm512_mask_max_pd(mx, m, mx, v);
        }
        const __m512d top = _mm512_set1_pd(_mm512_reduce_max_pd(mx));
        for (int c = 0; c < classes; c += 8) {
            const __mmask8 m = classes - c >= 8 ? __mmask8(0xFF) : __mmask8((1u << (classes - c)) - 1);
            _mm512_storeu_pd(s + c, _mm512_maskz_mov_pd(m, exp512d(_mm512_sub_pd(_mm512_loadu_pd(s + c), top))));
        }
        total[r] = 0;
    }
    for (int c = 0; c < classes; ++c)
        for (int r = 0; r < nr; ++r)
            if (soft[r]) {
                total[r] += scratch[r * stride + c];
                scratch[r * stride + c] = total[r];
            }
    for (int r = 0; r < nr; ++r) {
        if (!soft[r]) continue;
        const double* s = scratch + r * stride;
        const __m512d threshold = _mm512_set1_pd(u[r] * total[r]);
        int64_t count = 0;
        for (int c = 0; c < classes; c += 8) {
            const __mmask8 m = classes - c >= 8 ? __mmask8(0xFF) : __mmask8((1u << (classes - c)) - 1);
            count += __builtin_popcount(_mm512_mask_cmp_pd_mask(m, _mm512_loadu_pd(s + c), threshold, _CMP_LT_OQ));
        }
        picks[r] = std::min<int64_t>(count, classes - 1);
    }
}

#else

void sample_block(int nr, const float* const* logits, int classes, const double* temperature, const double* u,
                  int64_t* picks, double* scratch) {
    for (int r = 0; r < nr; ++r) picks[r] = sample_row(logits[r], classes, temperature[r], u[r], scratch);
}

#endif

}  // namespace
