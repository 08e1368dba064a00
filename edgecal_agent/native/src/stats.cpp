#include "stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace edgecal {

namespace {
constexpr int WIDE = NUM_BINS + 1;
constexpr int LANES = 4;
constexpr size_t CHUNK = 1024;

// 32-bit ARM keeps the scalar loops: its NEON flushes subnormals to zero.
#if !(defined(__arm__) && !defined(__aarch64__))
#define EDGECAL_VECTOR 1
#endif
#if defined(EDGECAL_VECTOR) && (defined(__x86_64__) || defined(__i386__))
// x86 builds are generic x86-64 (SSE2): AVX2 copies of the loops below are chosen at run time.
// AVX2 rounds each float32 division and multiplication exactly as SSE does (IEEE, the same
// MXCSR), so both give every element the same bin.
#define EDGECAL_X86_AVX2 1
bool have_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}
#endif

#ifdef EDGECAL_VECTOR
// The largest |x| bit pattern of p[0..n) (0 when n == 0): for non-negative floats the integer
// order is the float order, subnormals included (integer operations flush nothing); any bit
// pattern >= 0x7f800000 means an inf or a NaN was there.  VI: a GCC vector of int32.
template <typename VI>
inline __attribute__((always_inline)) int32_t absbits_max_t(const float* p, size_t n) {
    constexpr size_t L = sizeof(VI) / sizeof(int32_t);
    VI m0 = {}, m1 = {}, m2 = {}, m3 = {};
    size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        VI x0, x1, x2, x3;
        std::memcpy(&x0, p + i, sizeof(VI));
        std::memcpy(&x1, p + i + L, sizeof(VI));
        std::memcpy(&x2, p + i + 2 * L, sizeof(VI));
        std::memcpy(&x3, p + i + 3 * L, sizeof(VI));
        x0 &= 0x7fffffff;
        x1 &= 0x7fffffff;
        x2 &= 0x7fffffff;
        x3 &= 0x7fffffff;
        m0 = x0 > m0 ? x0 : m0;
        m1 = x1 > m1 ? x1 : m1;
        m2 = x2 > m2 ? x2 : m2;
        m3 = x3 > m3 ? x3 : m3;
    }
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    m0 = m2 > m0 ? m2 : m0;
    int32_t m = 0;
    for (size_t k = 0; k < L; ++k) m = m0[k] > m ? m0[k] : m;
    for (; i < n; ++i) {
        int32_t x;
        std::memcpy(&x, p + i, 4);
        x &= 0x7fffffff;
        m = x > m ? x : m;
    }
    return m;
}

// The bin of each of p[0..m) into idx (NUM_BINS: skipped), L at a time; returns how many were
// done (a multiple of L); the scalar loop in HistogramAccumulator::add does the rest.  The same
// float32 operations as that loop, element for element.  VF/VI: GCC vectors of float/int32.
template <typename VF, typename VI>
inline __attribute__((always_inline)) size_t bin_indices_t(const float* p, size_t m, float amax,
                                                           int32_t* idx) {
    constexpr size_t L = sizeof(VF) / sizeof(float);
    VF vmax, bins, last, zero;
    VI skip;
    for (size_t k = 0; k < L; ++k) {
        vmax[k] = amax;
        bins[k] = 2048.0f;
        last[k] = 2047.0f;
        zero[k] = 0.0f;
        skip[k] = NUM_BINS;
    }
    size_t i0 = 0;
    for (; i0 + L <= m; i0 += L) {
        VF x;
        std::memcpy(&x, p + i0, sizeof(VF));
        const VF a = (VF)((VI)x & 0x7fffffff);
        VF q = a / vmax;
        q = q * bins;
        const VI below = q < last;  // false for a NaN quotient
        const VF qc = (VF)((below & (VI)q) | (~below & (VI)last));
        const VI k = __builtin_convertvector(qc, VI);
        const VI pos = a > zero;  // false for +-0.0 and NaN
        const VI r = (pos & k) | (~pos & skip);
        std::memcpy(idx + i0, &r, sizeof(VI));
    }
    return i0;
}

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

#ifdef EDGECAL_X86_AVX2
typedef int32_t v8i __attribute__((vector_size(32)));

__attribute__((target("avx2"))) int32_t absbits_max_avx2(const float* p, size_t n) {
    return absbits_max_t<v8i>(p, n);
}

// Per 8-bit lane mask: the lanes whose bit is set, first (a left-pack permutation).
struct PackTable {
    int32_t perm[256][8];
    PackTable() {
        for (int mask = 0; mask < 256; ++mask) {
            int w = 0;
            for (int k = 0; k < 8; ++k) {
                if (mask & (1 << k)) perm[mask][w++] = k;
            }
            for (; w < 8; ++w) perm[mask][w] = 0;
        }
    }
};
const PackTable pack_table;

// bin_indices_t's operations 8 at a time, with the skipped elements (+-0.0, NaN) left out of
// idx: the counting loop then only touches the counters that count (zeros are common after a
// ReLU).  idx needs room for m + 8 entries.
__attribute__((target("avx2"))) size_t bin_indices_avx2(const float* p, size_t m, float amax,
                                                        int32_t* idx, size_t* done) {
    const __m256 vmax = _mm256_set1_ps(amax), bins = _mm256_set1_ps(2048.0f),
                 last = _mm256_set1_ps(2047.0f), zero = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    size_t i0 = 0, w = 0;
    for (; i0 + 8 <= m; i0 += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(p + i0), absmask);
        __m256 q = _mm256_div_ps(a, vmax);
        q = _mm256_mul_ps(q, bins);
        const __m256 qc = _mm256_blendv_ps(last, q, _mm256_cmp_ps(q, last, _CMP_LT_OQ));
        const __m256i k = _mm256_cvttps_epi32(qc);
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(a, zero, _CMP_GT_OQ));
        const __m256i perm =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pack_table.perm[mask]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + w),
                            _mm256_permutevar8x32_epi32(k, perm));
        w += size_t(__builtin_popcount(unsigned(mask)));
    }
    *done = i0;
    return w;
}
#endif

int32_t absbits_max(const float* p, size_t n) {
#ifdef EDGECAL_X86_AVX2
    if (have_avx2()) return absbits_max_avx2(p, n);
#endif
    return absbits_max_t<v4i>(p, n);
}

// The bins of the first *done elements of p[0..m) into idx: how many indices were written
// (skipped elements may be left out); the scalar loop does the rest.
size_t bin_indices(const float* p, size_t m, float amax, int32_t* idx, size_t* done) {
#ifdef EDGECAL_X86_AVX2
    if (have_avx2()) return bin_indices_avx2(p, m, amax, idx, done);
#endif
    return *done = bin_indices_t<v4f, v4i>(p, m, amax, idx);
}
#endif  // EDGECAL_VECTOR
}  // namespace

std::pair<int64_t, int64_t> count_nonfinite(const float* p, size_t n) {
    int64_t nan = 0, inf = 0;
    for (size_t i = 0; i < n; ++i) {
        nan += std::isnan(p[i]) ? 1 : 0;
        inf += std::isinf(p[i]) ? 1 : 0;
    }
    return {nan, inf};
}

void AbsMaxAccumulator::add(const float* p, size_t n) {
#ifdef EDGECAL_VECTOR
    // all finite (the usual case): the float of the largest |x| bit pattern is max |x|
    const int32_t bits = absbits_max(p, n);
    if (bits < 0x7f800000) {
        float m;
        std::memcpy(&m, &bits, 4);
        value = m > value ? m : value;
        return;
    }
#endif
    // m keeps max |x| (a NaN never wins the > test, as in std::max(absmax, fabs(x))); z stays 0
    // unless some |x| is NaN or inf (inf - inf and NaN - NaN are NaN).
    float m = 0.0f, z = 0.0f;
    for (size_t i = 0; i < n; ++i) {
        const float a = std::fabs(p[i]);
        m = a > m ? a : m;
        z += a - a;
    }
    value = m > value ? m : value;
    nonfinite = nonfinite || z != 0.0f;
}

void AbsMaxAccumulator::merge(const AbsMaxAccumulator& other) {
    value = other.value > value ? other.value : value;
    nonfinite = nonfinite || other.nonfinite;
}

HistogramAccumulator::HistogramAccumulator(float absmax)
    : absmax_(absmax), lanes_(size_t(LANES) * WIDE, 0), flushed_(size_t(LANES) * WIDE, 0) {}

void HistogramAccumulator::flush() {
    for (size_t i = 0; i < lanes_.size(); ++i) flushed_[i] += lanes_[i];
    std::fill(lanes_.begin(), lanes_.end(), 0u);
    pending_ = 0;
}

void HistogramAccumulator::add(const float* p, size_t n) {
    const float amax = absmax_;
    if (!(amax > 0.0f)) {
        for (size_t i = 0; i < n; ++i) {
            if (std::fabs(p[i]) > 0.0f) {
                throw std::domain_error("absmax must be > 0 when the blob has non-zero elements");
            }
        }
        return;
    }
    int32_t idx[CHUNK + 8];  // + 8: the packed AVX2 stores write whole vectors
    uint32_t* lanes = lanes_.data();
    while (n) {
        const size_t m = n < CHUNK ? n : CHUNK;
        if (pending_ + m > UINT32_MAX) flush();  // no 32-bit counter can wrap
        pending_ += m;
        size_t i0 = 0, w = 0;
#ifdef EDGECAL_VECTOR
        w = bin_indices(p, m, amax, idx, &i0);
#endif
        for (size_t i = i0; i < m; ++i, ++w) {
            const float a = std::fabs(p[i]);
            float q = a / amax;  // float32 / float32
            q = q * 2048.0f;     // float32 * 2048
            // min before the cast; a NaN quotient (inf / inf) lands in the last bin
            const float qc = q < 2047.0f ? q : 2047.0f;
            const int32_t k = static_cast<int32_t>(qc);  // truncation toward zero, 0 <= qc
            idx[w] = a > 0.0f ? k : NUM_BINS;             // +-0.0 and NaN skipped
        }
        size_t i = 0;
        for (; i + 4 <= w; i += 4) {
            ++lanes[idx[i]];
            ++lanes[WIDE + idx[i + 1]];
            ++lanes[2 * WIDE + idx[i + 2]];
            ++lanes[3 * WIDE + idx[i + 3]];
        }
        for (; i < w; ++i) ++lanes[idx[i]];
        p += m;
        n -= m;
    }
}

void HistogramAccumulator::merge(const HistogramAccumulator& other) {
    for (size_t i = 0; i < lanes_.size(); ++i) flushed_[i] += other.flushed_[i] + other.lanes_[i];
}

std::vector<uint64_t> HistogramAccumulator::counts() const {
    std::vector<uint64_t> c(NUM_BINS, 0);
    for (int l = 0; l < LANES; ++l) {
        for (int b = 0; b < NUM_BINS; ++b) {
            const size_t i = size_t(l) * WIDE + size_t(b);
            c[size_t(b)] += flushed_[i] + lanes_[i];
        }
    }
    return c;
}

double pairwise_sum(const double* a, size_t n) {
    if (n < 8) {
        double res = 0.0;
        for (size_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int k = 0; k < 8; ++k) r[k] = a[k];
        size_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int k = 0; k < 8; ++k) r[k] += a[i + size_t(k)];
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

void pair_sums(const float* ref, const float* test, size_t n, double scale, double out[4],
               std::vector<double>& scratch) {
    scratch.resize(3 * n);
    double* r = scratch.data();
    double* t = r + n;
    double* prod = t + n;
    const float s = float(scale);
    for (size_t i = 0; i < n; ++i) {
        r[i] = double(ref[i]);
        t[i] = scale > 0.0 ? double(test[i] / s) : double(test[i]);
    }
    const auto sum_of = [&](const double* a, const double* b) {
        for (size_t i = 0; i < n; ++i) prod[i] = a[i] * b[i];
        return 0.0 + pairwise_sum(prod, n);
    };
    out[0] = sum_of(r, r);
    out[1] = sum_of(t, t);
    out[2] = sum_of(r, t);
    for (size_t i = 0; i < n; ++i) t[i] = r[i] - t[i];  // the difference, in place
    out[3] = sum_of(t, t);
}

}  // namespace edgecal
