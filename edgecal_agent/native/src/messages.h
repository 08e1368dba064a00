// The host <-> agent messages (messages.py): requests validated as the Python agent does,
// responses written as it writes them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgecal {

using json = nlohmann::json;

extern const char* const READY_PREFIX;
extern const char* const DONE_PREFIX;
extern const char* const PROGRESS_PREFIX;
extern const char* const REQUEST_FILE;
extern const char* const RESPONSE_FILE;
extern const char* const JOBS_DIR;
constexpr size_t MAX_REQUEST_BYTES = size_t(16) << 20;
constexpr size_t MAX_JOB_LINE = 1024;
constexpr int EQ_MAX_SAMPLES = 50;
extern const char* const EQ_SIMILARITY;
// The form of an eq_layer result (messages.EQ_RESULT): 2, the bottom scale's candidates pruned
// exactly, the artifact's sim_samples the samples each sum covers.
constexpr int EQ_RESULT = 2;
// What a cosine may exceed 1 by in the pruning bound, per remaining sample (EQ_PRUNE_SLACK).
constexpr double EQ_PRUNE_SLACK = 1e-6;
// A run with variants names at most this many of them (each is a net loaded at once) ...
constexpr int64_t MAX_VARIANTS = 32;
// ... and times each variant's whole forward on at most this many of its first samples.
constexpr int64_t MAX_TIMED_SAMPLES = 64;
// A variant's .bin made on the device from at most this many pieces.
constexpr int64_t MAX_SEGMENTS = int64_t(1) << 16;

// The sha256 a workdir-relative path promises (files/<sha256>/<name>), else empty.
std::string content_digest(const std::string& rel);
// ProtocolViolation unless job_id matches the job id pattern.
void check_job_id(const std::string& job_id);
// ProtocolViolation unless path is relative, without '..', '\\' or NUL.
const std::string& check_relpath(const std::string& path, const std::string& where);

// One model input (messages.InputDesc).
struct InputDesc {
    std::string blob;
    std::string kind = "image";
    std::string pixel = "BGR";
    std::vector<double> mean;
    std::vector<double> norm;
    std::vector<int64_t> shape;

    static InputDesc from_json(const json& d, const std::string& where);
    json to_json() const;
    // Python's repr of to_dict(): "{'blob': 'in0', 'kind': 'image', ...}"
    std::string repr() const;
    // ncnn2table's resize rule (spec 2.3)
    std::pair<int64_t, int64_t> target_size(int64_t cols, int64_t rows) const;
    bool operator==(const InputDesc& o) const;
};

struct ModelFiles {
    std::string param;
    std::string bin;
};

// absmax / histogram / run (CaptureParams) and eq_layer (EqLayerParams) share these.
struct ShardParams {
    ModelFiles model;
    std::vector<InputDesc> inputs;
    std::vector<std::string> shards;
};

// run's compare (agent >= 0.3.0): the reference model and, per blob, the scale of the run's
// raw int8 codes (0: float values).
struct CompareParams {
    ModelFiles model;
    std::vector<std::pair<std::string, double>> pairs;
};

// One piece of a BinPatch: length bytes at offset of source (0: the base's .bin, 1: data).
// Offsets and lengths are kept as JSON has them (a uint64 past int64 too).
struct BinSegment {
    int source = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
};

// A variant's .bin put together on the device (agent >= 0.4.0), so that only what the variant
// changes is pushed: segments in order, each bytes of the base's .bin (source 0: the job's
// model) or of the pushed file data (source 1); the result must have the digest sha256.
struct BinPatch {
    std::string data;
    std::vector<BinSegment> segments;
    std::string sha256;
};

// One variant of run's variants: its files and the blobs it is fed from the base model.  Its
// .bin is either a pushed file (bin) or made on the device (patch; bin is empty).
struct VariantRun {
    std::string param;
    std::string bin;
    std::vector<std::string> feed;
    std::optional<BinPatch> patch;
};

// run's variants (agent >= 0.4.0): several variants of the run's model (the base), each fed
// per sample the base's feed blobs as ncnn holds them; timed_samples: the job's first samples
// on which each variant's whole forward is timed.
struct VariantsParams {
    std::vector<VariantRun> models;
    int64_t timed_samples = 0;
};

struct CaptureParams : ShardParams {
    std::vector<std::string> blobs;
    std::string runtime = "calibration";
    int64_t threads = 1;
    std::optional<std::map<std::string, double>> absmax;
    bool timed = false;
    std::optional<CompareParams> compare;
    std::optional<VariantsParams> variants;
};

struct EqLayerParams : ShardParams {
    std::string bottom;
    std::string top;
    std::string probe_param = "probe.param";
    std::string probe_prefix = "probe_prefix.bin";
    std::string candidates = "candidates.npz";
    int64_t max_samples = EQ_MAX_SAMPLES;
};

struct Request {
    std::string op;
    std::string job_id;
    double sleep_seconds = 0.0;
    CaptureParams capture;
    EqLayerParams eq;

    // ProtocolViolation (mismatch set for another protocol version)
    static Request from_json(const json& d);
};

// The response document (Response.to_dict), with keys sorted as json.dumps(sort_keys=True).
struct Response {
    std::string op;
    std::string job_id;
    bool ok = true;
    json result = json::object();
    json artifacts = json::object();  // key -> {"file", "sha256"}
    json error = nullptr;             // {"kind", "message", "traceback", ["details"]}
    std::map<std::string, double> timing_s;
    int64_t ru_maxrss_kb = 0;

    std::string dumps() const;
};

}  // namespace edgecal
