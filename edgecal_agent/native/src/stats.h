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

// numpy's pairwise summation of n contiguous float64 values (what np.add.reduce of one
// contiguous row adds up after its identity, 0.0: callers add that themselves).
double pairwise_sum(const double* a, size_t n);

// stats.pair_sums: [sum ref^2, sum t^2, sum ref*t, sum (ref - t)^2] in float64 of n values,
// t the test values or, with scale > 0, the raw int8 codes as float32(code / scale); each
// sum as np.add.reduce of the float64 products (0.0 + pairwise_sum), bit for bit.
// scratch: reused between calls.
void pair_sums(const float* ref, const float* test, size_t n, double scale, double out[4],
               std::vector<double>& scratch);

}  // namespace edgecal
