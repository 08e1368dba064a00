#include "stats.h"

#include <cmath>
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
    const float inf = std::numeric_limits<float>::infinity();
    float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; ++k) {
            const float a = std::fabs(p[i + k]);
            bad |= !(a < inf);
            m[k] = a > m[k] ? a : m[k];  // a NaN never wins
        }
    }
    for (; i < n; ++i) {
        const float a = std::fabs(p[i]);
        bad |= !(a < inf);
        m[0] = a > m[0] ? a : m[0];
    }
    for (float v : m) value = v > value ? v : value;
    nonfinite = nonfinite || bad;
}

HistogramAccumulator::HistogramAccumulator(float absmax)
    : absmax_(absmax), lanes_(size_t(LANES) * WIDE, 0) {}

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
    uint64_t* lanes = lanes_.data();
    while (n) {
        const size_t m = n < CHUNK ? n : CHUNK;
        for (size_t i = 0; i < m; ++i) {
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

std::vector<uint64_t> HistogramAccumulator::counts() const {
    std::vector<uint64_t> c(NUM_BINS, 0);
    for (int l = 0; l < LANES; ++l) {
        for (int b = 0; b < NUM_BINS; ++b) c[size_t(b)] += lanes_[size_t(l) * WIDE + size_t(b)];
    }
    return c;
}

}  // namespace edgecal
