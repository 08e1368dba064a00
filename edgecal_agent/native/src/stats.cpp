#include "stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace edgecal {

namespace {
constexpr int WIDE = NUM_BINS + 1;
constexpr int LANES = 4;
constexpr size_t CHUNK = 1024;
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
    // m keeps max |x| (a NaN never wins the > test, as in std::max(absmax, fabs(x))); z stays 0
    // unless some |x| is NaN or inf (inf - inf and NaN - NaN are NaN).
    float m = 0.0f, z = 0.0f;
    size_t i = 0;
#if !(defined(__arm__) && !defined(__aarch64__))
    // Two 4-float lanes of GCC/clang vector extensions (SSE on x86, AdvSIMD on aarch64).  Not
    // on 32-bit ARM: NEON flushes subnormals to zero there, a subnormal abs-max would be lost.
    typedef float v4f __attribute__((vector_size(16)));
    typedef int32_t v4i __attribute__((vector_size(16)));
    const v4i abs_mask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    v4f m0 = {0, 0, 0, 0}, m1 = m0, z0 = m0, z1 = m0;
    for (; i + 8 <= n; i += 8) {
        v4f x0, x1;
        std::memcpy(&x0, p + i, 16);
        std::memcpy(&x1, p + i + 4, 16);
        const v4f a0 = (v4f)((v4i)x0 & abs_mask), a1 = (v4f)((v4i)x1 & abs_mask);
        const v4i g0 = a0 > m0, g1 = a1 > m1;
        m0 = (v4f)((g0 & (v4i)a0) | (~g0 & (v4i)m0));
        m1 = (v4f)((g1 & (v4i)a1) | (~g1 & (v4i)m1));
        z0 += a0 - a0;
        z1 += a1 - a1;
    }
    for (int k = 0; k < 4; ++k) {
        m = m0[k] > m ? m0[k] : m;
        m = m1[k] > m ? m1[k] : m;
        z += z0[k] + z1[k];
    }
#endif
    for (; i < n; ++i) {
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
    int32_t idx[CHUNK];
    uint32_t* lanes = lanes_.data();
    while (n) {
        const size_t m = n < CHUNK ? n : CHUNK;
        if (pending_ + m > UINT32_MAX) flush();  // no 32-bit counter can wrap
        pending_ += m;
        size_t i0 = 0;
#if !(defined(__arm__) && !defined(__aarch64__))
        // The same float32 operations four at a time (SSE on x86, AdvSIMD on aarch64): IEEE
        // division and multiplication round per element exactly as the scalar loop does.  Not
        // on 32-bit ARM, whose NEON flushes subnormals to zero.
        typedef float v4f __attribute__((vector_size(16)));
        typedef int32_t v4i __attribute__((vector_size(16)));
        const v4i abs_mask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
        const v4f vmax = {amax, amax, amax, amax};
        const v4f bins = {2048.0f, 2048.0f, 2048.0f, 2048.0f};
        const v4f last = {2047.0f, 2047.0f, 2047.0f, 2047.0f};
        const v4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
        const v4i skip = {NUM_BINS, NUM_BINS, NUM_BINS, NUM_BINS};
        for (; i0 + 4 <= m; i0 += 4) {
            v4f x;
            std::memcpy(&x, p + i0, 16);
            const v4f a = (v4f)((v4i)x & abs_mask);
            v4f q = a / vmax;
            q = q * bins;
            const v4i below = q < last;  // false for a NaN quotient
            const v4f qc = (v4f)((below & (v4i)q) | (~below & (v4i)last));
            const v4i k = __builtin_convertvector(qc, v4i);
            const v4i pos = a > zero;  // false for +-0.0 and NaN
            const v4i r = (pos & k) | (~pos & skip);
            std::memcpy(idx + i0, &r, 16);
        }
#endif
        for (size_t i = i0; i < m; ++i) {
            const float a = std::fabs(p[i]);
            float q = a / amax;  // float32 / float32
            q = q * 2048.0f;     // float32 * 2048
            // min before the cast; a NaN quotient (inf / inf) lands in the last bin
            const float qc = q < 2047.0f ? q : 2047.0f;
            const int32_t k = static_cast<int32_t>(qc);  // truncation toward zero, 0 <= qc
            idx[i] = a > 0.0f ? k : NUM_BINS;             // +-0.0 and NaN skipped
        }
        size_t i = 0;
        for (; i + 4 <= m; i += 4) {
            ++lanes[idx[i]];
            ++lanes[WIDE + idx[i + 1]];
            ++lanes[2 * WIDE + idx[i + 2]];
            ++lanes[3 * WIDE + idx[i + 3]];
        }
        for (; i < m; ++i) ++lanes[idx[i]];
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

}  // namespace edgecal
