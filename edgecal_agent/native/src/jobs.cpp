#include "jobs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "errors.h"
#include "eqsearch.h"
#include "fileio.h"
#include "hello.h"
#include "model.h"
#include "npz.h"
#include "pyfmt.h"
#include "sha256.h"
#include "shards.h"
#include "stats.h"

namespace edgecal {

namespace {

const int64_t ARTIFACT_SCHEMA = 1;
// At most this many (sample, blob) entries are named in a NonFiniteActivation error.
const size_t NONFINITE_REPORT_MAX = 1000;

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Report progress at most every interval (and always at the end).
class Throttle {
public:
    Throttle(const Progress& progress, int64_t total) : progress_(progress), total_(total) {
        last_ = now_s();
        progress_(0, total_);
    }
    void operator()(int64_t done) {
        double t = now_s();
        if (done >= total_ || t - last_ >= 0.25) {
            last_ = t;
            progress_(done, total_);
        }
    }

private:
    const Progress& progress_;
    int64_t total_;
    double last_;
};

// The samples of several shards, one at a time, checked against the request's inputs.
class SampleStream {
public:
    SampleStream(const JobContext& ctx, const std::vector<std::string>& shards,
                 const std::vector<InputDesc>& inputs)
        : ctx_(ctx), shards_(shards), inputs_(inputs) {
        for (const auto& rel : shards_) {
            Fd fd = open(rel);
            ShardInfo info;
            try {
                info = read_shard_info(fd.get(), rel);
            } catch (const ProtocolViolation& e) {
                throw BadRequest("sample shard " + rel + " is unreadable: " + e.what());
            }
            if (!(info.inputs == inputs_)) {
                std::vector<std::string> got, want;
                for (const auto& d : info.inputs) got.push_back(d.repr());
                for (const auto& d : inputs_) want.push_back(d.repr());
                throw BadRequest("sample shard " + rel + " was written for inputs [" +
                                 join(got, ", ") + "], the request names [" + join(want, ", ") +
                                 "]");
            }
            total += info.n_samples;
            infos_.push_back(std::move(info));
        }
    }

    // fn(index within the job, index within its shard, shard number, sample)
    void for_each(const std::function<void(int64_t, int64_t, size_t, const Sample&)>& fn) const {
        int64_t index = 0;
        for (size_t k = 0; k < shards_.size(); ++k) {
            const std::string& rel = shards_[k];
            Fd fd = open(rel);
            int64_t in_shard = 0;
            try {
                iter_shard(fd.get(), infos_[k], rel, [&](const Sample& s) {
                    fn(index, in_shard, k, s);
                    ++index;
                    ++in_shard;
                });
            } catch (const ProtocolViolation& e) {
                throw InputError("shard " + rel + " is damaged: " + e.what());
            }
        }
    }

    int64_t total = 0;

private:
    Fd open(const std::string& rel) const {
        try {
            return ctx_.open_input(rel, "sample shard");
        } catch (const JobError& e) {
            if (e.kind != "BadRequest") throw;
            throw BadRequest("sample shard " + rel + " is not on the device (push it first): " +
                             e.what());
        }
    }
    const JobContext& ctx_;
    std::vector<std::string> shards_;
    std::vector<InputDesc> inputs_;
    std::vector<ShardInfo> infos_;
};

// The last loaded model, reused by the next job that names the same files (same identity
// and state) with the same options.  One model at most.
struct CachedModel {
    std::string key;
    std::unique_ptr<NcnnModel> model;
};
CachedModel cache;

Fd model_file(const JobContext& ctx, const std::string& rel) {
    try {
        return ctx.open_input(rel, "model file");
    } catch (const JobError& e) {
        if (e.kind != "BadRequest") throw;
        throw ModelLoadError("model file " + rel + " is not usable on the device: " + e.what());
    }
}

// A path naming the open file fd (ncnn takes paths), or "" where the system has none.
std::string fd_path(int fd) {
    struct stat a, b;
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (::stat(path.c_str(), &a) == 0 && ::fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        return path;
    }
    return "";
}

// The net of files, opened (and checked) here and handed to ncnn by descriptor path.
std::unique_ptr<NcnnModel> open_model(JobContext& ctx, const ModelFiles& files, Fd& fparam,
                                      Fd& fbin, const std::string& runtime, int threads) {
    std::string param = fd_path(fparam.get());
    std::string bin = fd_path(fbin.get());
    if (param.empty()) param = ctx.workdir.path() + "/" + files.param;
    if (bin.empty()) bin = ctx.workdir.path() + "/" + files.bin;
    return std::make_unique<NcnnModel>(param, bin, runtime, threads, files.param, files.bin);
}

NcnnModel& load_model(JobContext& ctx, const ShardParams& p, const std::string& runtime,
                      int threads) {
    const double t0 = now_s();
    Fd fparam = model_file(ctx, p.model.param);
    Fd fbin = model_file(ctx, p.model.bin);
    const std::string key = fd_state(fparam.get()) + "|" + fd_state(fbin.get()) + "|" + runtime +
                            "|" + std::to_string(threads);
    if (!cache.model || cache.key != key) {
        cache.model.reset();  // drop the old net before loading another
        cache.key.clear();
        cache.model = open_model(ctx, p.model, fparam, fbin, runtime, threads);
        cache.key = key;
    }
    cache.model->check_inputs(p.inputs);
    ctx.timing_s["load"] = now_s() - t0;
    return *cache.model;
}

// A net that is not cached (run's reference model: the cached one is the run's own).
std::unique_ptr<NcnnModel> load_other_model(JobContext& ctx, const ModelFiles& files,
                                            const std::string& runtime, int threads) {
    Fd fparam = model_file(ctx, files.param);
    Fd fbin = model_file(ctx, files.bin);
    return open_model(ctx, files, fparam, fbin, runtime, threads);
}

std::string sample_where(int64_t i) { return "sample " + std::to_string(i); }

void write_f32(NpzWriter& w, const std::string& key, const std::vector<float>& v,
               std::vector<int64_t> shape) {
    w.add(key, "<f4", shape, v.data(), v.size() * 4);
}

// -- hello / sleep ---------------------------------------------------------------------------
OpResult op_hello(JobContext&) { return {hello_info(), json::object()}; }

OpResult op_sleep(JobContext& ctx) {
    std::this_thread::sleep_for(std::chrono::duration<double>(ctx.request.sleep_seconds));
    return {json{{"slept_s", ctx.request.sleep_seconds}}, json::object()};
}

// -- absmax / histogram / run ----------------------------------------------------------------
// Whether a second thread reduces (abs-max, histogram) while ncnn computes the next sample:
// the Python agent's switch EDGECAL_AGENT_BIN_WORKER=1 forces it on (both passes, even on a
// busy machine); =auto turns it on for the histogram pass only, with a spare core (cores >
// ncnn's threads), at least two samples and no busy hold.  Unset (or anything else) it is off:
// holding each sample's blobs (ncnn then allocates fresh memory and copies a held blob before
// an in-place layer) costs the ncnn thread about what the thread saves it, the C++ binning
// being cheap (PP-OCR-like bench, 1000 images: histogram pass 0.74 s CPU inline, 0.82 s with
// the thread, and no shorter on a shared 2-core machine; abs-max is cheaper still).
// The job thread "has a core to itself" while it gets at least this share of the wall time as
// CPU time (checked every CHECK_SAMPLES samples); when it has not, the thread would only take
// turns with ncnn on a busy machine: the job reduces the rest inline, and no job starts a
// binning thread for BUSY_HOLD_S (the Python agent's binworker rules).
const double ALONE_SHARE = 0.8;
const int64_t CHECK_SAMPLES = 16;
const double BUSY_HOLD_S = 60.0;
double busy_until = 0.0;

bool bin_worker_forced() {
    const char* forced = std::getenv("EDGECAL_AGENT_BIN_WORKER");
    return forced && std::string(forced) == "1";
}

double thread_cpu_s() {
    struct timespec t;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return 0.0;
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Measures the job thread's CPU share between checks.
class CpuShare {
public:
    CpuShare() : wall_(now_s()), cpu_(thread_cpu_s()) {}
    // false (and the busy hold starts) when the thread ran less than ALONE_SHARE of the time
    bool alone() {
        if (bin_worker_forced()) return true;
        const double wall = now_s(), cpu = thread_cpu_s();
        const bool ok = wall - wall_ <= 0 || cpu - cpu_ >= ALONE_SHARE * (wall - wall_);
        wall_ = wall;
        cpu_ = cpu;
        if (!ok) busy_until = now_s() + BUSY_HOLD_S;
        return ok;
    }

private:
    double wall_, cpu_;
};

bool overlap_wanted(int ncnn_threads, int64_t n_samples, bool cheap) {
    const char* forced = std::getenv("EDGECAL_AGENT_BIN_WORKER");
    const std::string f = forced ? forced : "";
    if (f == "1") return true;
    if (f != "auto") return false;
    if (cheap || n_samples < 2 || now_s() < busy_until) return false;
    int cores = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cores = CPU_COUNT(&set);
    if (cores <= 0) cores = int(std::thread::hardware_concurrency());
    return cores > std::max(1, ncnn_threads);
}

// A thread that reduces whole samples (their extracted blobs, held) with its own visit
// function while the job thread runs ncnn on the next one.  At most DEPTH samples wait for
// it; when it is behind, offer declines and the job thread reduces that sample itself, so
// neither side waits and the work is shared.  The thread never releases a Mat (ncnn's blob
// allocator is not locked): the job thread does, when it reuses a slot or at the end.
class BinThread {
public:
    explicit BinThread(VisitFn fn) : fn_(std::move(fn)), slots_(DEPTH + 1) {
        thread_ = std::thread([this] { run(); });
    }
    ~BinThread() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            closing_ = true;
            abandon_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
    }
    BinThread(const BinThread&) = delete;
    BinThread& operator=(const BinThread&) = delete;

    // Hand over one sample's blobs (moved from mats) unless DEPTH samples wait already: true
    // when taken.  Rethrows the thread's error (an earlier sample's) once it has one.
    bool offer(std::vector<ncnn::Mat>& mats) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (!error_) {
                if (pushed_ - done_ >= DEPTH) return false;
                auto& slot = slots_[size_t(pushed_ % (DEPTH + 1))];  // not in flight
                slot = std::move(mats);  // releases that slot's previous sample here
                ++pushed_;
            }
        }
        if (failed()) finish();
        cv_.notify_all();
        return true;
    }

    bool failed() {
        std::lock_guard<std::mutex> lk(mu_);
        return bool(error_);
    }

    // Wait until every offered sample is reduced, end the thread, release the held blobs;
    // rethrow the thread's error.
    void finish() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            closing_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
        for (auto& slot : slots_) slot.clear();
        if (error_) std::rethrow_exception(error_);
    }

private:
    static constexpr int64_t DEPTH = 2;

    void run() {
        for (;;) {
            std::vector<ncnn::Mat>* slot = nullptr;
            bool skip = false;
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait(lk, [this] { return closing_ || done_ < pushed_; });
                if (done_ == pushed_ || abandon_) return;
                slot = &slots_[size_t(done_ % (DEPTH + 1))];
                skip = bool(error_);
            }
            if (!skip) {
                try {
                    for (size_t b = 0; b < slot->size(); ++b) NcnnModel::visit_blob((*slot)[b], b, fn_);
                } catch (...) {
                    std::lock_guard<std::mutex> lk(mu_);
                    error_ = std::current_exception();
                }
            }
            {
                std::lock_guard<std::mutex> lk(mu_);
                ++done_;
            }
            cv_.notify_all();
        }
    }

    VisitFn fn_;
    std::vector<std::vector<ncnn::Mat>> slots_;
    std::mutex mu_;
    std::condition_variable cv_;
    int64_t pushed_ = 0, done_ = 0;
    bool closing_ = false, abandon_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

// Every sample's visited blob elements go to here (on the job thread) or, with there, to
// there on a BinThread: the two sets of statistics are merged by the caller (sums and maxima,
// so which sample went where does not matter).  sizes(b, nullptr-or-values, n) sees every
// sample's blobs on the job thread after begin(i).  Errors are the inline loop's: the first
// sample's, and within a sample the binning of earlier blobs before an extraction error.
void reduce_samples(NcnnModel& model, const SampleStream& samples, const CaptureParams& p,
                    Throttle& tick, const VisitFn& here, const VisitFn* there,
                    const std::function<void(int64_t)>& begin, const VisitFn& sizes) {
    if (!there) {
        const VisitFn both = [&](size_t b, const float* v, size_t n) {
            here(b, v, n);
            if (sizes) sizes(b, v, n);
        };
        samples.for_each([&](int64_t i, int64_t, size_t, const Sample& sample) {
            if (begin) begin(i);
            model.for_each_visited(sample, p.inputs, p.blobs, sizes ? both : here, sample_where(i));
            tick(i + 1);
        });
        return;
    }
    BinThread bins(*there);
    CpuShare clock;
    bool sharing = true;
    try {
        samples.for_each([&](int64_t i, int64_t, size_t, const Sample& sample) {
            if (begin) begin(i);
            if (sharing && i > 0 && i % CHECK_SAMPLES == 0) sharing = clock.alone();
            std::vector<ncnn::Mat> mats;
            try {
                mats = model.extract_visitable(sample, p.inputs, p.blobs, sample_where(i));
            } catch (...) {
                bins.finish();  // an earlier sample's binning error comes first
                // the inline order within this sample: earlier blobs binned, then the error
                model.for_each_visited(sample, p.inputs, p.blobs, here, sample_where(i));
                throw;
            }
            if (sizes) {
                for (size_t b = 0; b < mats.size(); ++b) NcnnModel::visit_blob(mats[b], b, sizes);
            }
            if (!sharing || !bins.offer(mats)) {
                for (size_t b = 0; b < mats.size(); ++b) NcnnModel::visit_blob(mats[b], b, here);
            }
            tick(i + 1);
        });
    } catch (...) {
        bins.finish();  // rethrows the thread's error: always an earlier sample's
        throw;
    }
    bins.finish();
}

[[noreturn]] void raise_nonfinite(NcnnModel& model, const SampleStream& samples,
                                  const CaptureParams& p, const std::vector<size_t>& bad) {
    std::vector<std::string> names;
    for (size_t b : bad) names.push_back(p.blobs[b]);
    json found = json::array();
    std::map<std::string, std::pair<int64_t, int64_t>> totals;
    std::vector<std::string> order;
    for (const auto& n : names) {
        if (!totals.count(n)) order.push_back(n);
        totals[n] = {0, 0};
    }
    std::map<std::string, std::set<int64_t>> samples_of;
    samples.for_each([&](int64_t i, int64_t, size_t, const Sample& sample) {
        std::vector<std::pair<int64_t, int64_t>> counts(names.size(), {0, 0});
        model.for_each_visited(
            sample, p.inputs, names,
            [&](size_t b, const float* v, size_t n) {
                auto c = count_nonfinite(v, n);
                counts[b].first += c.first;
                counts[b].second += c.second;
            },
            sample_where(i));
        for (size_t b = 0; b < names.size(); ++b) {
            auto [n_nan, n_inf] = counts[b];
            if (n_nan || n_inf) {
                totals[names[b]].first += n_nan;
                totals[names[b]].second += n_inf;
                if (found.size() < NONFINITE_REPORT_MAX) {
                    found.push_back(json::array({i, names[b], n_nan, n_inf}));
                    samples_of[names[b]].insert(i);
                }
            }
        }
    });
    std::vector<std::string> per_blob;
    json totals_json = json::object();
    for (const auto& n : order) {
        per_blob.push_back("blob " + py_repr(n) + ": " + std::to_string(totals[n].first) +
                           " NaN, " + std::to_string(totals[n].second) + " inf on " +
                           std::to_string(samples_of[n].size()) + " sample(s)");
        totals_json[n] = json::array({totals[n].first, totals[n].second});
    }
    std::string message = "non-finite activations (" + join(per_blob, "; ") + ")";
    if (!found.empty()) {
        message += "; first: sample " + std::to_string(found[0][0].get<int64_t>()) +
                   " of the job, blob " + py_repr(found[0][1].get<std::string>());
    }
    throw JobError("NonFiniteActivation", message, json{{"samples", found}, {"totals", totals_json}});
}

OpResult op_absmax(JobContext& ctx) {
    const CaptureParams& p = ctx.request.capture;
    NcnnModel& model = load_model(ctx, p, p.runtime, int(p.threads));
    model.check_blobs(p.blobs);
    SampleStream samples(ctx, p.shards, p.inputs);
    const size_t n_blobs = p.blobs.size();
    std::vector<AbsMaxAccumulator> accs(n_blobs), theirs(n_blobs);
    std::vector<int64_t> per_sample(n_blobs, 0);
    Throttle tick(ctx.progress, samples.total);
    const double t0 = now_s();
    const VisitFn here = [&](size_t b, const float* v, size_t n) { accs[b].add(v, n); };
    const VisitFn there = [&](size_t b, const float* v, size_t n) { theirs[b].add(v, n); };
    reduce_samples(
        model, samples, p, tick, here,
        overlap_wanted(model.net.opt.num_threads, samples.total, true) ? &there : nullptr,
        [&](int64_t) { std::fill(per_sample.begin(), per_sample.end(), 0); },  // the last sample's
        [&](size_t b, const float*, size_t n) { per_sample[b] += int64_t(n); });
    for (size_t b = 0; b < n_blobs; ++b) accs[b].merge(theirs[b]);
    ctx.timing_s["infer"] = now_s() - t0;
    std::vector<size_t> bad;
    std::vector<float> absmax;
    for (size_t b = 0; b < n_blobs; ++b) {
        absmax.push_back(accs[b].value);
        if (accs[b].nonfinite) bad.push_back(b);
    }
    if (!bad.empty()) raise_nonfinite(model, samples, p, bad);
    const std::string name = "absmax.npz";
    {
        NpzWriter w(ctx.job_fd, name);
        w.add_i64("schema", ARTIFACT_SCHEMA);
        w.add_names("names", p.blobs);
        write_f32(w, "absmax", absmax, {int64_t(n_blobs)});
        w.add("elements_per_sample", "<i8", {int64_t(n_blobs)}, per_sample.data(), n_blobs * 8);
        w.add_i64("n_samples", samples.total);
        w.close();
    }
    OpResult r;
    r.result = {{"n_samples", samples.total}};
    auto art = ctx.artifact(name);
    r.artifacts[art.first] = art.second;
    return r;
}

OpResult op_histogram(JobContext& ctx) {
    const CaptureParams& p = ctx.request.capture;
    if (!p.absmax) throw BadRequest("histogram request lacks params.absmax");
    std::vector<std::string> missing;
    for (const auto& b : p.blobs) {
        if (!p.absmax->count(b)) missing.push_back(b);
    }
    if (!missing.empty()) {
        throw BadRequest("histogram request lacks absmax for blob(s) " + py_str_list(missing));
    }
    std::vector<float> ranges;
    for (const auto& b : p.blobs) ranges.push_back(static_cast<float>(p.absmax->at(b)));
    NcnnModel& model = load_model(ctx, p, p.runtime, int(p.threads));
    model.check_blobs(p.blobs);
    SampleStream samples(ctx, p.shards, p.inputs);
    std::vector<HistogramAccumulator> accs, theirs;
    for (float r : ranges) accs.emplace_back(r);
    for (float r : ranges) theirs.emplace_back(r);
    Throttle tick(ctx.progress, samples.total);
    const double t0 = now_s();
    const VisitFn here = [&](size_t b, const float* v, size_t n) { accs[b].add(v, n); };
    const VisitFn there = [&](size_t b, const float* v, size_t n) { theirs[b].add(v, n); };
    reduce_samples(model, samples, p, tick, here,
                   overlap_wanted(model.net.opt.num_threads, samples.total, false) ? &there : nullptr,
                   nullptr, nullptr);
    for (size_t b = 0; b < accs.size(); ++b) accs[b].merge(theirs[b]);
    ctx.timing_s["infer"] = now_s() - t0;
    std::vector<uint64_t> counts;
    for (const auto& acc : accs) {
        auto c = acc.counts();
        counts.insert(counts.end(), c.begin(), c.end());
    }
    const std::string name = "histograms.npz";
    {
        NpzWriter w(ctx.job_fd, name);
        w.add_i64("schema", ARTIFACT_SCHEMA);
        w.add_names("names", p.blobs);
        write_f32(w, "absmax", ranges, {int64_t(ranges.size())});
        w.add("counts", "<u8", {int64_t(p.blobs.size()), NUM_BINS}, counts.data(),
              counts.size() * 8);
        w.add_i64("n_samples", samples.total);
        w.close();
    }
    OpResult r;
    r.result = {{"n_samples", samples.total}};
    auto art = ctx.artifact(name);
    r.artifacts[art.first] = art.second;
    return r;
}

std::string output_key(int64_t i, size_t b) {
    std::string s = std::to_string(i);
    if (s.size() < 6) s = std::string(6 - s.size(), '0') + s;
    return "s" + s + "_b" + std::to_string(b);
}

void add_mat(NpzWriter& w, const std::string& key, const ncnn::Mat& m) {
    auto [shape, values] = mat_to_array(m);
    write_f32(w, key, values, shape);
}

// layers_<k>.npz of run's compare: per sample of the shard and pair, stats' pair_sums of the
// blob in ref (the reference) and in model (first: the job's index of the shard's first sample).
std::pair<std::string, json> compare_shard(JobContext& ctx, NcnnModel& model, NcnnModel& ref,
                                           const CaptureParams& p, SampleStream& samples,
                                           size_t k, int64_t first) {
    const CompareParams& c = *p.compare;
    std::vector<std::string> blobs;
    for (const auto& pr : c.pairs) blobs.push_back(pr.first);
    std::vector<double> sums;
    sums.reserve(size_t(samples.total) * blobs.size() * 4);
    std::vector<double> scratch;
    samples.for_each([&](int64_t, int64_t i, size_t, const Sample& sample) {
        const std::string where = sample_where(first + i);
        const auto refs = ref.extract(sample, p.inputs, blobs, where, false);
        std::vector<std::pair<std::vector<int64_t>, std::vector<float>>> ref_arrays;
        for (const auto& m : refs) ref_arrays.push_back(mat_to_array(m));
        const auto mats = model.extract(sample, p.inputs, blobs, where, false);
        for (size_t b = 0; b < blobs.size(); ++b) {
            const auto got = mat_to_array(mats[b]);
            const auto& want = ref_arrays[b];
            if (got.first != want.first) {
                throw JobError("BlobMismatch",
                               where + ": blob " + py_repr(blobs[b]) + " is " +
                                   py_shape(got.first) + " in " + model.param_label + " and " +
                                   py_shape(want.first) + " in the reference " +
                                   ref.param_label + ": they are not the same network",
                               json{{"blob", blobs[b]},
                                    {"sample", first + i},
                                    {"shape", got.first},
                                    {"ref_shape", want.first}});
            }
            double out[4];
            pair_sums(want.second.data(), got.second.data(), got.second.size(), c.pairs[b].second,
                      out, scratch);
            sums.insert(sums.end(), out, out + 4);
        }
    });
    const std::string name = "layers_" + std::to_string(k) + ".npz";
    {
        NpzWriter w(ctx.job_fd, name);
        w.add_i64("schema", ARTIFACT_SCHEMA);
        w.add_names("names", blobs);
        w.add_i64("n_samples", samples.total);
        w.add("sums", "<f8", {samples.total, int64_t(blobs.size()), 4}, sums.data(),
              sums.size() * 8);
        w.close();
    }
    return ctx.artifact(name);
}

// the members every outputs_<k>.npz of a run starts with (jobs.py's _outputs_header)
void outputs_header(NpzWriter& w, const std::vector<std::string>& blobs, int64_t n_samples) {
    w.add_i64("schema", ARTIFACT_SCHEMA);
    w.add_names("names", blobs);
    w.add_i64("n_samples", n_samples);
}

// one SampleStream per shard of a run (each shard its own output file)
std::vector<std::unique_ptr<SampleStream>> shard_streams(JobContext& ctx, const CaptureParams& p) {
    std::vector<std::unique_ptr<SampleStream>> streams;
    for (const auto& s : p.shards) {
        streams.push_back(std::make_unique<SampleStream>(ctx, std::vector<std::string>{s}, p.inputs));
    }
    return streams;
}

int64_t total_samples(const std::vector<std::unique_ptr<SampleStream>>& streams) {
    int64_t n = 0;
    for (const auto& s : streams) n += s->total;
    return n;
}

std::string variant_key(size_t j, int64_t i, size_t b) {
    return "v" + std::to_string(j) + "_" + output_key(i, b);
}

// A file this job creates in its folder (O_EXCL, 0600, never through a symlink): closed and
// removed when this goes, whatever happens.
class JobTempFile {
public:
    JobTempFile(int job_fd, std::string name) : job_fd_(job_fd), name_(std::move(name)) {
        fd_ = Fd(::openat(job_fd_, name_.c_str(),
                          O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd_) throw SysError(errno, name_);
    }
    ~JobTempFile() {
        fd_ = Fd();
        ::unlinkat(job_fd_, name_.c_str(), 0);
    }
    JobTempFile(const JobTempFile&) = delete;
    JobTempFile& operator=(const JobTempFile&) = delete;
    int get() const { return fd_.get(); }

private:
    int job_fd_;
    std::string name_;
    Fd fd_;
};

// Variant j's net: from its pushed files, or with its .bin put together from the base's and
// the pushed piece (BinPatch) in the job folder, checked against its digest, and removed once
// ncnn has read it (jobs.py's _variant_net).  A piece must lie within its file (checked before
// any read) and is copied in 1 MiB blocks.
std::unique_ptr<NcnnModel> variant_net(JobContext& ctx, const CaptureParams& p,
                                       const VariantRun& v, size_t j) {
    if (!v.patch) return load_other_model(ctx, {v.param, v.bin}, p.runtime, int(p.threads));
    const BinPatch& patch = *v.patch;
    const std::string name = "variant_" + std::to_string(j) + ".bin";
    const std::string label = "variant " + std::to_string(j) + "'s .bin";
    const std::string made = label + " (made from " + p.model.bin + " and " + patch.data + ")";
    Sha256 digest;
    JobTempFile out(ctx.job_fd, name);
    {
        Fd base = model_file(ctx, p.model.bin);
        Fd data = model_file(ctx, patch.data);
        std::vector<char> buf(1 << 20);
        for (const BinSegment& s : patch.segments) {
            const int fd = s.source == 0 ? base.get() : data.get();
            const std::string& what = s.source == 0 ? p.model.bin : patch.data;
            struct stat st {};
            if (::fstat(fd, &st) != 0) throw SysError(errno, "");
            const uint64_t size = uint64_t(st.st_size);
            if (s.offset > size || s.length > size - s.offset) {
                throw BadRequest(made + ": a piece of " + std::to_string(s.length) + " bytes at " +
                                 std::to_string(s.offset) + " is past the end of " + what);
            }
            if (::lseek64(fd, off64_t(s.offset), SEEK_SET) < 0) throw SysError(errno, "");
            for (uint64_t left = s.length; left > 0;) {
                ssize_t n = ::read(fd, buf.data(), size_t(std::min<uint64_t>(left, buf.size())));
                if (n < 0) {
                    if (errno == EINTR) continue;
                    throw SysError(errno, "");
                }
                if (n == 0) throw BadRequest(made + ": " + what + " changed while it was read");
                digest.update(buf.data(), size_t(n));
                write_all(out.get(), buf.data(), size_t(n), "");
                left -= uint64_t(n);
            }
        }
    }
    const std::string got = digest.hexdigest();
    if (got != patch.sha256) {
        throw BadRequest(made + " has sha256 " + got + ", the host expects " + patch.sha256);
    }
    Fd fparam = model_file(ctx, v.param);
    std::string param = fd_path(fparam.get());
    std::string bin = fd_path(out.get());
    if (param.empty()) param = ctx.workdir.path() + "/" + v.param;
    if (bin.empty()) bin = ctx.workdir.path() + "/" + JOBS_DIR + "/" + ctx.job_id + "/" + name;
    return std::make_unique<NcnnModel>(param, bin, p.runtime, int(p.threads), v.param, label);
}

// run with variants: per sample the base model once, every blob kept; each variant from the
// base's feed blobs (jobs.py's _run_variants).
OpResult run_variants(JobContext& ctx, const CaptureParams& p, NcnnModel& base) {
    const std::vector<VariantRun>& runs = p.variants->models;
    double t0 = now_s();
    std::vector<std::unique_ptr<NcnnModel>> nets;
    for (size_t j = 0; j < runs.size(); ++j) {
        const VariantRun& v = runs[j];
        auto net = variant_net(ctx, p, v, j);
        base.check_blobs(v.feed);
        std::vector<std::string> wanted = v.feed;
        wanted.insert(wanted.end(), p.blobs.begin(), p.blobs.end());
        net->check_blobs(wanted);
        net->check_inputs(p.inputs);
        nets.push_back(std::move(net));
    }
    ctx.timing_s["load"] += now_s() - t0;
    const int64_t timed = p.variants->timed_samples;
    std::vector<json> latency(runs.size(), json::array());
    std::vector<std::unique_ptr<SampleStream>> streams = shard_streams(ctx, p);
    Throttle tick(ctx.progress, total_samples(streams));
    OpResult r;
    int64_t done = 0;
    t0 = now_s();
    for (size_t k = 0; k < streams.size(); ++k) {
        const std::string name = "outputs_" + std::to_string(k) + ".npz";
        {
            NpzWriter w(ctx.job_fd, name);
            outputs_header(w, p.blobs, streams[k]->total);
            w.add_i64("n_variants", int64_t(runs.size()));
            streams[k]->for_each([&](int64_t, int64_t i, size_t, const Sample& sample) {
                const std::string where = sample_where(done);
                if (done < timed) {  // whole forwards, before the base's blobs take the memory
                    for (size_t j = 0; j < nets.size(); ++j) {
                        latency[j].push_back(nets[j]->time_extract(sample, p.inputs, p.blobs[0],
                                                                   where, false, nullptr));
                    }
                }
                base.kept(sample, p.inputs, where, [&](ncnn::Extractor& ex) {
                    std::map<std::string, ncnn::Mat> raw;  // each feed blob once per sample
                    for (size_t j = 0; j < runs.size(); ++j) {
                        std::vector<std::pair<std::string, ncnn::Mat>> fed;
                        for (const auto& blob : runs[j].feed) {
                            auto it = raw.find(blob);
                            if (it == raw.end()) {
                                it = raw.emplace(blob, base.raw_blob(ex, blob, where)).first;
                            }
                            fed.emplace_back(blob, it->second);
                        }
                        nets[j]->extract_fed(fed, p.blobs, where, [&](size_t b, const ncnn::Mat& m) {
                            add_mat(w, variant_key(j, i, b), m);
                        });
                    }
                });
                ++done;
                tick(done);
            });
            w.close();
        }
        auto art = ctx.artifact(name);
        r.artifacts[art.first] = art.second;
    }
    ctx.timing_s["infer"] = now_s() - t0;
    r.result = {{"n_samples", done}, {"n_shards", streams.size()}};
    if (timed) r.result["latency_s"] = latency;
    return r;
}

OpResult op_run(JobContext& ctx) {
    const CaptureParams& p = ctx.request.capture;
    NcnnModel& model = load_model(ctx, p, p.runtime, int(p.threads));
    model.check_blobs(p.blobs);
    if (p.variants) return run_variants(ctx, p, model);
    std::unique_ptr<NcnnModel> ref;
    if (p.compare) {
        ref = load_other_model(ctx, p.compare->model, p.runtime, int(p.threads));
        ref->check_inputs(p.inputs);
        std::vector<std::string> pair_blobs;
        for (const auto& pr : p.compare->pairs) pair_blobs.push_back(pr.first);
        model.check_blobs(pair_blobs);
        ref->check_blobs(pair_blobs);
    }
    std::vector<std::unique_ptr<SampleStream>> streams = shard_streams(ctx, p);
    Throttle tick(ctx.progress, total_samples(streams));
    OpResult r;
    json latency = json::array();
    int64_t total = 0, done = 0;
    const double t0 = now_s();
    for (size_t k = 0; k < streams.size(); ++k) {
        const std::string name = "outputs_" + std::to_string(k) + ".npz";
        {
            NpzWriter w(ctx.job_fd, name);
            outputs_header(w, p.blobs, streams[k]->total);
            streams[k]->for_each([&](int64_t, int64_t i, size_t, const Sample& sample) {
                bool have_only = false;
                if (p.timed && !p.blobs.empty()) {
                    // one blob: the timed forward's own output is the answer (one forward)
                    ncnn::Mat only;
                    const bool keep = p.blobs.size() == 1;
                    latency.push_back(model.time_extract(sample, p.inputs, p.blobs[0],
                                                         sample_where(done), keep, &only));
                    if (keep) {
                        add_mat(w, output_key(i, 0), only);
                        have_only = true;
                    }
                }
                if (!have_only) {
                    auto mats = model.extract(sample, p.inputs, p.blobs, sample_where(done), false);
                    for (size_t b = 0; b < mats.size(); ++b) add_mat(w, output_key(i, b), mats[b]);
                }
                ++done;
                tick(done);
            });
            w.close();
        }
        auto art = ctx.artifact(name);
        r.artifacts[art.first] = art.second;
        if (ref) {  // after the shard's timed forwards, which it must not disturb
            auto layers = compare_shard(ctx, model, *ref, p, *streams[k], k, total);
            r.artifacts[layers.first] = layers.second;
        }
        total += streams[k]->total;
    }
    ctx.timing_s["infer"] = now_s() - t0;
    r.result = {{"n_samples", total}, {"n_shards", streams.size()}};
    if (p.timed) r.result["latency_s"] = latency;
    return r;
}

// -- eq_layer --------------------------------------------------------------------------------
OpResult op_eq_layer(JobContext& ctx) {
    const EqLayerParams& p = ctx.request.eq;
    std::string probe_param, prefix;
    std::vector<float> candidates, weight_scales;
    float bottom_scale = 0.0f;
    int64_t n_w = 0, steps = 0;
    // a job file that cannot be read is a BadRequest of its own (read_job_file's message)
    probe_param = ctx.read_job_file(p.probe_param);
    prefix = ctx.read_job_file(p.probe_prefix);
    const std::string raw = ctx.read_job_file(p.candidates);
    try {
        auto npz = load_npz_bytes(raw, p.candidates);
        for (const char* key : {"candidates", "weight_scales", "bottom_scale"}) {
            auto it = npz.find(key);
            if (it == npz.end()) throw BadRequest(std::string("'") + key + "'");
            if (it->second.kind != 'f' || it->second.itemsize != 4) {
                throw BadRequest(std::string("member '") + key + "' must be float32");
            }
        }
        const NpyArray& c = npz["candidates"];
        const NpyArray& ws = npz["weight_scales"];
        const NpyArray& bs = npz["bottom_scale"];
        candidates.assign(c.f32(), c.f32() + c.count());
        weight_scales.assign(ws.f32(), ws.f32() + ws.count());
        if (bs.count() == 0) throw BadRequest("index 0 is out of bounds for axis 0 with size 0");
        bottom_scale = bs.f32()[0];
        n_w = int64_t(weight_scales.size());
        if (c.shape.size() != 2 || c.shape[0] != n_w + 1) {
            std::vector<std::string> sh;
            for (int64_t d : c.shape) sh.push_back(std::to_string(d));
            throw JobError("BadRequest", "candidates must be (" + std::to_string(n_w) +
                                             " weight scales + 1, steps), got (" + join(sh, ", ") +
                                             (sh.size() == 1 ? ",)" : ")"));
        }
        steps = c.shape[1];
    } catch (const JobError& e) {
        if (e.what() && std::string(e.what()).rfind("candidates must be", 0) == 0) throw;
        throw BadRequest(std::string("eq_layer job inputs are incomplete: ") + e.what());
    } catch (const ProtocolViolation& e) {
        throw BadRequest(std::string("eq_layer job inputs are incomplete: ") + e.what());
    }

    NcnnModel& model = load_model(ctx, p, "calibration", 1);
    model.check_blobs({p.bottom, p.top});
    SampleStream samples(ctx, p.shards, p.inputs);
    const int64_t n_samples = std::min<int64_t>(samples.total, p.max_samples);
    std::vector<ncnn::Mat> ins;
    std::vector<ncnn::Mat> refs;
    double t0 = now_s();
    samples.for_each([&](int64_t i, int64_t, size_t, const Sample& sample) {
        if (i >= n_samples) return;
        auto got = model.extract(sample, p.inputs, {p.bottom, p.top}, sample_where(i), false);
        ins.push_back(got[0]);
        refs.push_back(got[1]);
    });
    ctx.timing_s["fp32"] = now_s() - t0;
    if (ins.empty()) throw BadRequest("eq_layer needs at least one sample");

    int64_t passes = 0, total = 0;
    std::unique_ptr<Throttle> tick;
    EqSearch search(probe_param, prefix, n_w, ins, refs, [&]() {
        ++passes;
        if (tick) (*tick)(std::min(passes, total - 1));
    });
    total = search.passes(n_w + 1, steps, search.fast_possible(n_w));
    tick = std::make_unique<Throttle>(ctx.progress, total);
    t0 = now_s();
    EqFound found = search.run(candidates, n_w + 1, steps, weight_scales, bottom_scale);
    (*tick)(total);
    ctx.timing_s["search"] = now_s() - t0;

    const std::string name = "eq.npz";
    {
        NpzWriter w(ctx.job_fd, name);
        w.add_i64("schema", ARTIFACT_SCHEMA);
        w.add("sim", "<f8", {n_w + 1, steps}, found.sim.data(), found.sim.size() * 8);
        w.add("sim_samples", "<i8", {n_w + 1, steps}, found.counts.data(),
              found.counts.size() * 8);
        write_f32(w, "weight_scales", found.weight_scales, {n_w});
        write_f32(w, "bottom_scale", {found.bottom_scale}, {1});
        w.add_f64("sim_start", found.sim_start);
        w.add_f64("sim_end", found.sim_end);
        w.add_i64("n_samples", int64_t(ins.size()));
        w.close();
    }
    OpResult r;
    r.result = {{"n_samples", ins.size()},
                {"similarity", EQ_SIMILARITY},
                {"eq_result", EQ_RESULT},
                {"search", found.path},
                {"probe_passes", passes}};
    auto art = ctx.artifact(name);
    r.artifacts[art.first] = art.second;
    return r;
}

}  // namespace

Fd JobContext::open_input(const std::string& rel, const std::string& what) const {
    const std::string want = content_digest(rel);
    auto [dfd, name] = workdir.parent(rel, what);
    Fd fh = open_file_at(dfd.get(), name, rel, what);
    if (want.empty()) return fh;
    const std::string got = sha256_cached_at(dfd.get(), name, fh.get());
    if (got != want) {
        struct stat a, b;
        if (::fstatat(dfd.get(), name.c_str(), &a, AT_SYMLINK_NOFOLLOW) == 0 &&
            ::fstat(fh.get(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            ::unlinkat(dfd.get(), name.c_str(), 0);
        }
        throw InputCorrupt(rel + " on the device has sha256 " + got +
                           ": a damaged upload or disk; it was removed, push it again");
    }
    return fh;
}

std::string JobContext::read_job_file(const std::string& rel) const {
    std::vector<std::string> parts = split_relpath(rel, "job file");
    Fd fd(::openat(job_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    try {
        if (!fd) throw SysError(errno, ".");
        for (size_t i = 0; i + 1 < parts.size(); ++i) {
            Fd nfd(::openat(fd.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!nfd) throw SysError(errno, parts[i]);
            fd = std::move(nfd);
        }
        Fd fh = open_file_at(fd.get(), parts.back(), rel, "job file");
        return read_all(fh.get());
    } catch (const SysError& e) {
        throw BadRequest("job file " + rel + " cannot be read: " + std::strerror(e.err));
    }
}

std::pair<std::string, json> JobContext::artifact(const std::string& name) const {
    std::string digest;
    try {
        Fd fh = open_file_at(job_fd, name, name, "artifact");
        digest = sha256_fd(fh.get());
    } catch (const JobError& e) {
        throw ArtifactMissing("job " + job_id + ": artifact " + name + " it wrote is gone: " +
                              e.what());
    }
    return {name, json{{"file", name}, {"sha256", digest}}};
}

OpResult run_op(JobContext& ctx) {
    const std::string& op = ctx.request.op;
    if (op == "hello") return op_hello(ctx);
    if (op == "sleep") return op_sleep(ctx);
    if (op == "absmax") return op_absmax(ctx);
    if (op == "histogram") return op_histogram(ctx);
    if (op == "run") return op_run(ctx);
    if (op == "eq_layer") return op_eq_layer(ctx);
    throw BadRequest("unknown op " + py_repr(op));
}

}  // namespace edgecal
