// Per-blob statistics exactly as ncnn2table gathers them (stats.py): pass 1 abs-max, pass 2
// the 2048-bin histogram, bin for bin what stats._histogram_reference counts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace edgecal {

constexpr int NUM_BINS = 2048;

// (NaN count, inf count) of n floats.
std::pair<int64_t, int64_t> count_nonfinite(const float* p, size_t n);

// Pass 1 of one blob: max |x| (NaN ignored as std::max(absmax, fabs(nan)) does; 0 when
// empty) and whether a NaN or inf was seen.
struct AbsMaxAccumulator {
    float value = 0.0f;
    bool nonfinite = false;
    void add(const float* p, size_t n);
    // fold in another accumulator of the same blob (max is order-free)
    void merge(const AbsMaxAccumulator& other);
};

// Pass 2 of one blob: zeros (+-0.0) and NaN skipped; otherwise
// min((int)(float32(|x|) / absmax * 2048), 2047) in float32 with truncation, inf/inf (NaN)
// in the last bin.  add throws std::domain_error when absmax is not > 0 and a non-zero
// element comes (Python's ValueError).
class HistogramAccumulator {
public:
    explicit HistogramAccumulator(float absmax);
    void add(const float* p, size_t n);
    // add another accumulator's counts (same absmax): counts sum
    void merge(const HistogramAccumulator& other);
    // the uint64 counts so far
    std::vector<uint64_t> counts() const;

private:
    float absmax_;
    void flush();
    // 4 interleaved sub-histograms of NUM_BINS + 1 (the last: skipped elements), 32-bit so
    // that one blob's fit in the L1 cache, added into flushed_ before any could wrap
    std::vector<uint32_t> lanes_;
    std::vector<uint64_t> flushed_;
    uint64_t pending_ = 0;  // elements counted in lanes_ since the last flush
};

}  // namespace edgecal
