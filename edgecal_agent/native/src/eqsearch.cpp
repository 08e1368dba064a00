#include "eqsearch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>

#include <allocator.h>
#include <net.h>

#include "errors.h"
#include "stats.h"
#include "messages.h"
#include "pyfmt.h"

namespace edgecal {

namespace {

const double NaN = std::numeric_limits<double>::quiet_NaN();

// Sequential float64 sum (acc = x[0]; acc += x[i]).
double seq_sum(const double* x, size_t n, size_t stride = 1) {
    if (n == 0) return 0.0;
    double acc = x[0];
    for (size_t i = 1; i < n; ++i) acc += x[i * stride];
    return acc;
}

double cosine(double dot, double ref_norm, double q_norm) {
    if (!(ref_norm > 0.0 && q_norm > 0.0)) return NaN;
    return dot / std::sqrt(ref_norm) / std::sqrt(q_norm);
}

// Index of the largest sum, strict > from 0.0: first wins, NaN never wins; none when no sum
// is > 0.
std::optional<size_t> pick(const double* sums, size_t n) {
    std::optional<size_t> best;
    double best_val = 0.0;
    for (size_t k = 0; k < n; ++k) {
        if (best_val < sums[k]) {
            best_val = sums[k];
            best = k;
        }
    }
    return best;
}

// Whether a candidate whose first `done` of `n` per-sample cosines sum to `partial` can no
// longer be picked against `best` (eqsearch.out_of_reach).
bool out_of_reach(double partial, size_t done, size_t n, double best) {
    return std::isnan(partial) || partial + double(n - done) * (1.0 + EQ_PRUNE_SLACK) < best;
}

// The candidates' indices nearest `start` first, in double; ties: the lower index
// (eqsearch.search_order).
std::vector<size_t> search_order(const float* cand, size_t steps, float start) {
    std::vector<size_t> order(steps);
    std::vector<double> dist(steps);
    for (size_t k = 0; k < steps; ++k) {
        order[k] = k;
        dist[k] = std::fabs(double(cand[k]) - double(start));
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return dist[a] < dist[b]; });
    return order;
}

// The pick among the sums complete over n samples (eqsearch.pick_complete).
std::optional<size_t> pick_complete(const double* sums, const int64_t* counts, size_t steps,
                                    size_t n) {
    std::vector<double> s(sums, sums + steps);
    for (size_t k = 0; k < steps; ++k) {
        if (counts[k] != int64_t(n)) s[k] = NaN;
    }
    return pick(s.data(), steps);
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 8) == 0;
}

// One fp32 output as (units, values) rows in float32: channels of a 3-D blob, the first depth
// slice of each channel of a 4-D one, the columns of a 2-D blob, the elements of a 1-D one.
struct Rows {
    size_t units = 0, values = 0;
    std::vector<float> v;
    std::vector<int> shape;  // dims, w, h, d, c
};

Rows unit_rows(const ncnn::Mat& m) {
    Rows r;
    r.shape = {m.dims, m.w, m.h, m.d, m.c};
    if (m.dims >= 3) {
        r.units = size_t(m.c);
        r.values = size_t(m.w) * size_t(m.h);
        r.v.resize(r.units * r.values);
        for (int q = 0; q < m.c; ++q) {
            const float* p = m.channel(q);
            std::memcpy(&r.v[size_t(q) * r.values], p, r.values * 4);
        }
    } else if (m.dims == 2) {
        r.units = size_t(m.w);
        r.values = size_t(m.h);
        r.v.resize(r.units * r.values);
        const float* p = static_cast<const float*>(m.data);
        for (size_t y = 0; y < r.values; ++y) {
            for (size_t x = 0; x < r.units; ++x) r.v[x * r.values + y] = p[y * r.units + x];
        }
    } else {
        r.units = m.dims == 1 ? size_t(m.w) : 0;
        r.values = 1;
        const float* p = static_cast<const float*>(m.data);
        r.v.assign(p, p + r.units);
    }
    return r;
}

struct NotIndependent {};

}  // namespace

struct EqSearch::Impl {
    // the probe
    std::string param_text;
    std::vector<unsigned char> buf;  // prefix + scales (little-endian float32)
    size_t prefix_size = 0;
    std::unique_ptr<ncnn::Net> net;
    std::vector<unsigned char> model_bytes;
    ncnn::UnlockedPoolAllocator allocator;
    ncnn::PoolAllocator workspace;
    std::string input_name, output_name;

    std::vector<ncnn::Mat> ins;
    std::vector<Rows> refs;
    std::vector<double> ref_norm;
    size_t units = 0;
    std::function<void()> tick;

    void set_scale(size_t i, float v) {
        unsigned char b[4];
        uint32_t u;
        std::memcpy(&u, &v, 4);
        for (int k = 0; k < 4; ++k) b[k] = uint8_t(u >> (8 * k));
        std::memcpy(&buf[prefix_size + 4 * i], b, 4);
    }
    float get_scale(size_t i) const {
        uint32_t u = 0;
        for (int k = 0; k < 4; ++k) u |= uint32_t(buf[prefix_size + 4 * i + size_t(k)]) << (8 * k);
        float v;
        std::memcpy(&v, &u, 4);
        return v;
    }
    void set(const std::vector<float>& ws, float bs) {
        for (size_t j = 0; j < ws.size(); ++j) set_scale(j, ws[j]);
        set_scale(ws.size(), bs);
    }

    void build() {
        auto n = std::make_unique<ncnn::Net>();
        n->opt.use_packing_layout = false;
        // one thread: int8 accumulation is exact integer arithmetic
        n->opt.num_threads = 1;
        if (n->load_param_mem(param_text.c_str()) != 0) {
            throw ModelLoadError("ncnn cannot parse the EQ probe .param");
        }
        std::vector<unsigned char> bytes = buf;  // the net may reference this memory
        n->load_model(bytes.data());
        const auto& in_names = n->input_names();
        const auto& out_names = n->output_names();
        if (in_names.size() != 1 || out_names.size() != 1) {
            std::vector<std::string> a(in_names.begin(), in_names.end());
            std::vector<std::string> b(out_names.begin(), out_names.end());
            throw ModelLoadError("the EQ probe must have one input and one output, it has " +
                                 py_str_list(a) + " and " + py_str_list(b));
        }
        n->opt.blob_allocator = &allocator;
        n->opt.workspace_allocator = &workspace;
        input_name = in_names[0];
        output_name = out_names[0];
        net = std::move(n);  // the old net dropped only now
        model_bytes = std::move(bytes);
    }

    ncnn::Mat forward(const ncnn::Mat& mat) {
        ncnn::Extractor ex = net->create_extractor();
        ex.input(input_name.c_str(), mat);
        ncnn::Mat out;
        int ret = ex.extract(output_name.c_str(), out);
        if (ret != 0) {
            throw JobError("JobError", "the EQ probe forward failed (extract returned " +
                                           std::to_string(ret) + ")");
        }
        return out.clone();
    }

    // Unit terms of sample s's probe output into dots/qqs (ref units each).
    void sample_terms(size_t s, const ncnn::Mat& out, double* dots, double* qqs,
                      std::vector<double>& prod) const {
        Rows q = unit_rows(out);
        const Rows& ref = refs[s];
        if (q.shape != ref.shape) {
            throw JobError("JobError", "the EQ probe output shape differs from the fp32 top blob");
        }
        prod.resize(q.values);
        for (size_t u = 0; u < ref.units; ++u) {
            const float* rp = &ref.v[u * ref.values];
            const float* qp = &q.v[u * q.values];
            for (size_t i = 0; i < q.values; ++i) prod[i] = double(rp[i]) * double(qp[i]);
            dots[u] = 0.0 + pairwise_sum(prod.data(), q.values);
            for (size_t i = 0; i < q.values; ++i) prod[i] = double(qp[i]) * double(qp[i]);
            qqs[u] = 0.0 + pairwise_sum(prod.data(), q.values);
        }
    }

    // Build the probe with its current scales and forward every sample: unit terms
    // (samples, units) of dot and qq.
    void terms(std::vector<double>& dots, std::vector<double>& qqs) {
        build();
        const size_t n = ins.size();
        dots.assign(n * units, 0.0);
        qqs.assign(n * units, 0.0);
        std::vector<double> prod;
        for (size_t s = 0; s < n; ++s) {
            if (refs[s].units != units) {
                throw JobError("JobError", "the EQ probe output shape differs from the fp32 top blob");
            }
            sample_terms(s, forward(ins[s]), &dots[s * units], &qqs[s * units], prod);
        }
        tick();
    }

    // The bottom scale's row over the candidates `cand` (steps), weight scales ws, pruned
    // exactly (eqsearch.pruned_row): sums (partial for a pruned candidate) and their samples.
    void bottom_row(const std::vector<float>& ws, const float* cand, size_t steps, float start,
                    double* sums, int64_t* counts) {
        const size_t n = ins.size();
        std::vector<double> d, q, prod;
        double best = 0.0;
        for (size_t k : search_order(cand, steps, start)) {
            set(ws, cand[k]);
            tick();  // one pass of the progress per candidate, however far it goes
            build();
            double acc = 0.0;
            size_t done = 0;
            for (size_t s = 0; s < n; ++s) {
                d.assign(refs[s].units, 0.0);
                q.assign(refs[s].units, 0.0);
                sample_terms(s, forward(ins[s]), d.data(), q.data(), prod);
                const double c =
                    cosine(seq_sum(d.data(), d.size()), ref_norm[s], seq_sum(q.data(), q.size()));
                acc = done == 0 ? c : acc + c;
                ++done;
                if (done < n && out_of_reach(acc, done, n, best)) break;
            }
            sums[k] = acc;
            counts[k] = int64_t(done);
            if (done == n && acc > best) best = acc;
        }
    }

    double similarity(const double* dots, const double* qqs) const {
        const size_t n = ins.size();
        std::vector<double> c(n);
        for (size_t s = 0; s < n; ++s) {
            c[s] = cosine(seq_sum(dots + s * units, units), ref_norm[s], seq_sum(qqs + s * units, units));
        }
        return seq_sum(c.data(), n);
    }

    double sums() {
        std::vector<double> d, q;
        terms(d, q);
        return similarity(d.data(), q.data());
    }
};

EqSearch::EqSearch(const std::string& probe_param, const std::string& prefix,
                   int64_t n_weight_scales, const std::vector<ncnn::Mat>& ins,
                   const std::vector<ncnn::Mat>& refs, std::function<void()> tick)
    : impl_(new Impl) {
    Impl& m = *impl_;
    m.param_text = probe_param;
    m.prefix_size = prefix.size();
    m.buf.assign(prefix.begin(), prefix.end());
    m.buf.resize(prefix.size() + 4 * size_t(n_weight_scales + 1), 0);
    m.ins = ins;
    for (const auto& r : refs) m.refs.push_back(unit_rows(r));
    m.units = m.refs.empty() ? 0 : m.refs[0].units;
    for (const auto& r : m.refs) {
        double norm = 0.0;
        std::vector<double> prod(r.values);
        std::vector<double> unit_qq(r.units);
        for (size_t u = 0; u < r.units; ++u) {
            const float* p = &r.v[u * r.values];
            for (size_t i = 0; i < r.values; ++i) prod[i] = double(p[i]) * double(p[i]);
            unit_qq[u] = 0.0 + pairwise_sum(prod.data(), r.values);
        }
        norm = seq_sum(unit_qq.data(), r.units);
        m.ref_norm.push_back(norm);
    }
    m.tick = std::move(tick);
}

EqSearch::~EqSearch() { delete impl_; }

int64_t EqSearch::passes(int64_t n_rows, int64_t steps, bool fast) {
    return fast ? 2 * steps + 3 : n_rows * steps + 2;
}

bool EqSearch::fast_possible(int64_t n_weight_scales) const {
    const Impl& m = *impl_;
    if (n_weight_scales <= 0 || m.units % size_t(n_weight_scales) != 0) return false;
    for (const auto& r : m.refs) {
        if (r.units != m.units) return false;
    }
    return true;
}

namespace {

// The fast search (see eqsearch.py); NotIndependent when a check fails.
EqFound fast_search(EqSearch::Impl& m, const std::vector<float>& cand, size_t n_w, size_t steps,
                    const std::vector<float>& ws, float bs) {
    const size_t S = m.ins.size(), U = m.units, per = U / n_w;
    auto C = [&](size_t j, size_t k) { return cand[j * steps + k]; };
    std::vector<std::vector<double>> dots(steps + 1), qqs(steps + 1);
    for (size_t k = 0; k <= steps; ++k) {
        std::vector<float> w(n_w);
        for (size_t j = 0; j < n_w; ++j) w[j] = k < steps ? C(j, k) : ws[j];
        m.set(w, bs);
        m.terms(dots[k], qqs[k]);
    }
    // the independence claim on a mixed scale vector
    std::vector<size_t> pattern(n_w);
    std::vector<float> mix(n_w);
    for (size_t j = 0; j < n_w; ++j) {
        pattern[j] = (37 * j + 11) % (steps + 1);
        mix[j] = pattern[j] < steps ? C(j, pattern[j]) : ws[j];
    }
    {
        m.set(mix, bs);
        std::vector<double> d, q;
        m.terms(d, q);
        std::vector<double> ed(S * U), eq(S * U);
        for (size_t s = 0; s < S; ++s) {
            for (size_t u = 0; u < U; ++u) {
                size_t k = pattern[u / per];
                ed[s * U + u] = dots[k][s * U + u];
                eq[s * U + u] = qqs[k][s * U + u];
            }
        }
        if (!same_bits(d, ed) || !same_bits(q, eq)) throw NotIndependent();
    }
    // greedy over the weight rows
    EqFound f;
    f.sim.assign((n_w + 1) * steps, 0.0);
    std::vector<double> cur_d = dots[steps], cur_q = qqs[steps];
    std::vector<std::optional<size_t>> picks;
    std::vector<double> row(U);
    std::vector<double> c(S), pre_d(S), pre_q(S);
    for (size_t j = 0; j < n_w; ++j) {
        const size_t a = j * per, b = (j + 1) * per;
        // the sequential sum of the units before a, the same for every candidate
        for (size_t s = 0; s < S; ++s) {
            pre_d[s] = a > 0 ? seq_sum(&cur_d[s * U], a) : 0.0;
            pre_q[s] = a > 0 ? seq_sum(&cur_q[s * U], a) : 0.0;
        }
        for (size_t k = 0; k < steps; ++k) {
            const double* kd = dots[k].data();
            const double* kq = qqs[k].data();
            for (size_t s = 0; s < S; ++s) {
                // the sequential unit sums of the row with units a:b at candidate k
                const size_t o = s * U;
                double td = a > 0 ? pre_d[s] + kd[o + a] : kd[o];
                double tq = a > 0 ? pre_q[s] + kq[o + a] : kq[o];
                for (size_t u = a + 1; u < b; ++u) {
                    td += kd[o + u];
                    tq += kq[o + u];
                }
                for (size_t u = b; u < U; ++u) {
                    td += cur_d[o + u];
                    tq += cur_q[o + u];
                }
                c[s] = cosine(td, m.ref_norm[s], tq);
            }
            f.sim[j * steps + k] = seq_sum(c.data(), S);
        }
        auto kp = pick(&f.sim[j * steps], steps);
        if (kp) {
            for (size_t s = 0; s < S; ++s) {
                for (size_t u = a; u < b; ++u) {
                    cur_d[s * U + u] = dots[*kp][s * U + u];
                    cur_q[s * U + u] = qqs[*kp][s * U + u];
                }
            }
        }
        picks.push_back(kp);
    }
    std::vector<float> chosen(n_w);
    for (size_t j = 0; j < n_w; ++j) chosen[j] = picks[j] ? C(j, *picks[j]) : ws[j];
    m.set(chosen, bs);
    std::vector<double> d, q;
    m.terms(d, q);
    if (!same_bits(d, cur_d) || !same_bits(q, cur_q)) throw NotIndependent();
    f.sim_start = m.similarity(dots[steps].data(), qqs[steps].data());
    const double sim_chosen_w = m.similarity(d.data(), q.data());
    f.counts.assign((n_w + 1) * steps, int64_t(S));
    m.bottom_row(chosen, &cand[n_w * steps], steps, bs, &f.sim[n_w * steps],
                 &f.counts[n_w * steps]);
    auto kb = pick_complete(&f.sim[n_w * steps], &f.counts[n_w * steps], steps, S);
    f.weight_scales = chosen;
    f.bottom_scale = kb ? C(n_w, *kb) : bs;
    f.sim_end = kb ? f.sim[n_w * steps + *kb] : sim_chosen_w;
    f.path = "fast";
    return f;
}

EqFound literal_search(EqSearch::Impl& m, const std::vector<float>& cand, size_t n_w,
                       size_t steps, const std::vector<float>& ws, float bs) {
    EqFound f;
    f.sim.assign((n_w + 1) * steps, 0.0);
    f.counts.assign((n_w + 1) * steps, int64_t(m.ins.size()));
    std::vector<float> scales(ws);
    scales.push_back(bs);
    m.set(std::vector<float>(scales.begin(), scales.begin() + long(n_w)), scales[n_w]);
    f.sim_start = m.sums();
    for (size_t j = 0; j < n_w; ++j) {
        for (size_t k = 0; k < steps; ++k) {
            m.set_scale(j, cand[j * steps + k]);
            f.sim[j * steps + k] = m.sums();
        }
        auto kb = pick(&f.sim[j * steps], steps);
        if (kb) scales[j] = cand[j * steps + *kb];
        m.set_scale(j, scales[j]);
    }
    const std::vector<float> chosen(scales.begin(), scales.begin() + long(n_w));
    m.bottom_row(chosen, &cand[n_w * steps], steps, bs, &f.sim[n_w * steps],
                 &f.counts[n_w * steps]);
    auto kb = pick_complete(&f.sim[n_w * steps], &f.counts[n_w * steps], steps, m.ins.size());
    if (kb) scales[n_w] = cand[n_w * steps + *kb];
    m.set(std::vector<float>(scales.begin(), scales.begin() + long(n_w)), scales[n_w]);
    f.sim_end = m.sums();
    f.weight_scales.assign(scales.begin(), scales.begin() + long(n_w));
    f.bottom_scale = scales[n_w];
    f.path = "literal";
    return f;
}

}  // namespace

EqFound EqSearch::run(const std::vector<float>& candidates, int64_t n_rows, int64_t steps,
                      const std::vector<float>& weight_scales, float bottom_scale) {
    const size_t n_w = size_t(n_rows - 1);
    if (fast_possible(int64_t(n_w))) {
        try {
            return fast_search(*impl_, candidates, n_w, size_t(steps), weight_scales, bottom_scale);
        } catch (const NotIndependent&) {
        }
    }
    return literal_search(*impl_, candidates, n_w, size_t(steps), weight_scales, bottom_scale);
}

}  // namespace edgecal
