// EQ's greedy scale search for one layer (eqsearch.py): the fast search over per-candidate
// unit terms, checked on every layer, and its literal fallback, the bottom scale's candidates
// pruned exactly; the same sums, in the same order, as the Python agent.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <mat.h>

namespace edgecal {

struct EqFound {
    std::vector<double> sim;       // (n_rows, steps) row-major
    std::vector<int64_t> counts;   // the samples each sum covers (fewer: pruned, partial)
    std::vector<float> weight_scales;
    float bottom_scale = 0.0f;
    double sim_start = 0.0;
    double sim_end = 0.0;
    std::string path;
};

class EqSearch {
public:
    // ins: the probe's input per sample; refs: the fp32 top blob per sample (elempack 1).
    EqSearch(const std::string& probe_param, const std::string& prefix, int64_t n_weight_scales,
             const std::vector<ncnn::Mat>& ins, const std::vector<ncnn::Mat>& refs,
             std::function<void()> tick);
    ~EqSearch();
    static int64_t passes(int64_t n_rows, int64_t steps, bool fast);
    bool fast_possible(int64_t n_weight_scales) const;
    // candidates: (n_rows, steps) row-major, n_rows = weight scales + 1
    EqFound run(const std::vector<float>& candidates, int64_t n_rows, int64_t steps,
                const std::vector<float>& weight_scales, float bottom_scale);

    struct Impl;

private:
    Impl* impl_;
};

}  // namespace edgecal
