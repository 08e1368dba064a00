#include "messages.h"

#include <cmath>
#include <regex>
#include <set>

#include "errors.h"
#include "pyfmt.h"

namespace edgecal {

const char* const READY_PREFIX = "EDGECAL-READY";
const char* const DONE_PREFIX = "EDGECAL-DONE";
const char* const PROGRESS_PREFIX = "EDGECAL-PROGRESS";
const char* const REQUEST_FILE = "request.json";
const char* const RESPONSE_FILE = "response.json";
const char* const JOBS_DIR = "jobs";
const char* const EQ_SIMILARITY = "unit-f64";

namespace {

const char* const OPS[] = {"hello", "absmax", "histogram", "run", "eq_layer", "sleep"};
const char* const RUNTIMES[] = {"calibration", "deployed"};
const char* const INPUT_KINDS[] = {"image", "npy"};
const char* const PIXEL_TYPES[] = {"BGR", "RGB", "GRAY", "RGBA", "BGRA"};
const char* const JOB_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

template <size_t N>
bool one_of(const std::string& v, const char* const (&names)[N]) {
    for (const char* n : names) {
        if (v == n) return true;
    }
    return false;
}

template <size_t N>
std::string py_tuple(const char* const (&names)[N]) {
    std::vector<std::string> r;
    for (const char* n : names) r.push_back(py_repr(n));
    return "(" + join(r, ", ") + ")";
}

// Python's type name of a JSON value.
std::string type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::object: return "dict";
        case json::value_t::array: return "list";
        case json::value_t::string: return "str";
        case json::value_t::boolean: return "bool";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned: return "int";
        case json::value_t::number_float: return "float";
        case json::value_t::null: return "NoneType";
        default: return "object";
    }
}

enum Kind { DICT, LIST, STR, INT, NUM, BOOL };

const char* kind_name(Kind k) {
    switch (k) {
        case DICT: return "dict";
        case LIST: return "list";
        case STR: return "str";
        case INT: return "int";
        case NUM: return "int or float";
        case BOOL: return "bool";
    }
    return "?";
}

bool is_kind(const json& v, Kind k) {
    switch (k) {
        case DICT: return v.is_object();
        case LIST: return v.is_array();
        case STR: return v.is_string();
        case INT: return v.is_number_integer();
        case NUM: return v.is_number();
        case BOOL: return v.is_boolean();
    }
    return false;
}

const json& typed(const json& v, Kind k, const std::string& where) {
    if (!is_kind(v, k)) {
        throw ProtocolViolation(where + ": expected " + kind_name(k) + ", got " + type_name(v));
    }
    return v;
}

void need_object(const json& d, const std::string& where) {
    if (!d.is_object()) {
        throw ProtocolViolation(where + ": expected an object, got " + type_name(d));
    }
}

const json& req(const json& d, const std::string& key, Kind k, const std::string& where) {
    need_object(d, where);
    auto it = d.find(key);
    if (it == d.end()) throw ProtocolViolation(where + ": missing field " + py_repr(key));
    return typed(*it, k, where + "." + key);
}

// The field, or nullptr when missing or null.
const json* opt(const json& d, const std::string& key, Kind k, const std::string& where) {
    need_object(d, where);
    auto it = d.find(key);
    if (it == d.end() || it->is_null()) return nullptr;
    return &typed(*it, k, where + "." + key);
}

double to_float(const json& v, const std::string& where) {
    typed(v, NUM, where);
    return v.get<double>();
}

int64_t to_int(const json& v) {
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        return u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u);
    }
    return v.get<int64_t>();
}

std::vector<std::string> str_list(const json& v, const std::string& where) {
    typed(v, LIST, where);
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
        out.push_back(typed(v[i], STR, where + "[" + std::to_string(i) + "]").get<std::string>());
    }
    return out;
}

std::vector<double> num_list(const json& v, const std::string& where) {
    typed(v, LIST, where);
    std::vector<double> out;
    for (size_t i = 0; i < v.size(); ++i) out.push_back(to_float(v[i], where + "[" + std::to_string(i) + "]"));
    return out;
}

std::string opt_str(const json& d, const std::string& key, const std::string& where,
                    const std::string& dflt) {
    const json* v = opt(d, key, STR, where);
    return v ? v->get<std::string>() : dflt;
}

ModelFiles model_files(const json& d, const std::string& where) {
    ModelFiles m;
    m.param = check_relpath(req(d, "param", STR, where).get<std::string>(), where + ".param");
    m.bin = check_relpath(req(d, "bin", STR, where).get<std::string>(), where + ".bin");
    return m;
}

void read_shards(const json& d, const std::string& where, const json& inputs, ShardParams& p) {
    p.model = model_files(req(d, "model", DICT, where), where + ".model");
    for (size_t i = 0; i < inputs.size(); ++i) {
        p.inputs.push_back(
            InputDesc::from_json(inputs[i], where + ".inputs[" + std::to_string(i) + "]"));
    }
    for (const auto& s : str_list(req(d, "shards", LIST, where), where + ".shards")) {
        p.shards.push_back(check_relpath(s, where + ".shards"));
    }
}

CompareParams compare_params(const json& d, const std::string& where) {
    CompareParams c;
    const json& pairs = req(d, "pairs", LIST, where);
    for (size_t i = 0; i < pairs.size(); ++i) {
        const std::string at = where + ".pairs[" + std::to_string(i) + "]";
        const json& item = pairs[i];
        if (!item.is_array() || item.size() != 2) {
            throw ProtocolViolation(at + ": must be [blob, scale or null]");
        }
        const std::string blob = typed(item[0], STR, at + "[0]").get<std::string>();
        double scale = 0.0;
        if (!item[1].is_null()) {
            scale = to_float(item[1], at + "[1]");
            if (!(scale > 0.0 && std::isfinite(scale))) {
                throw ProtocolViolation(at + "[1]: a scale must be positive and finite");
            }
        }
        c.pairs.emplace_back(blob, scale);
    }
    if (c.pairs.empty()) throw ProtocolViolation(where + ".pairs: at least one pair is needed");
    c.model = model_files(req(d, "model", DICT, where), where + ".model");
    return c;
}

// A whole number >= 0 (bool is not one: JSON keeps them apart), as JSON has it.
bool whole_nonnegative(const json& v) {
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
}

BinPatch bin_patch(const json& d, const std::string& where) {
    BinPatch b;
    const json& items = req(d, "segments", LIST, where);
    if (int64_t(items.size()) > MAX_SEGMENTS) {
        throw ProtocolViolation(where + ".segments: at most " + std::to_string(MAX_SEGMENTS) +
                                ", got " + std::to_string(items.size()));
    }
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string at = where + ".segments[" + std::to_string(i) + "]";
        const json& item = items[i];
        if (!item.is_array() || item.size() != 3 || !whole_nonnegative(item[0]) ||
            !whole_nonnegative(item[1]) || !whole_nonnegative(item[2]) ||
            item[0].get<uint64_t>() > 1) {
            throw ProtocolViolation(
                at + ": must be [source 0 or 1, offset >= 0, length >= 0] (whole numbers)");
        }
        b.segments.push_back(
            {int(item[0].get<uint64_t>()), item[1].get<uint64_t>(), item[2].get<uint64_t>()});
    }
    b.sha256 = req(d, "sha256", STR, where).get<std::string>();
    bool hex = b.sha256.size() == 64;
    for (char c : b.sha256) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!hex) {
        throw ProtocolViolation(where + ".sha256: 64 lowercase hex digits, got " +
                                py_repr(b.sha256));
    }
    b.data = check_relpath(req(d, "data", STR, where).get<std::string>(), where + ".data");
    return b;
}

VariantRun variant_run(const json& item, const std::string& at) {
    if (!item.is_object()) throw ProtocolViolation(at + ": must be an object {model, feed}");
    VariantRun run;
    run.feed = str_list(req(item, "feed", LIST, at), at + ".feed");
    if (run.feed.empty()) throw ProtocolViolation(at + ".feed: at least one blob is needed");
    if (std::set<std::string>(run.feed.begin(), run.feed.end()).size() != run.feed.size()) {
        throw ProtocolViolation(at + ".feed: a blob is named twice");
    }
    const json* patch = opt(item, "patch", DICT, at);
    if (!patch) {
        const ModelFiles model = model_files(req(item, "model", DICT, at), at + ".model");
        run.param = model.param;
        run.bin = model.bin;
        return run;
    }
    if (item.contains("model")) {
        throw ProtocolViolation(at + ": either model or param and patch, not both");
    }
    run.param = check_relpath(req(item, "param", STR, at).get<std::string>(), at + ".param");
    run.patch = bin_patch(*patch, at + ".patch");
    return run;
}

VariantsParams variants_params(const json& d, const std::string& where) {
    VariantsParams v;
    const json& models = req(d, "models", LIST, where);
    for (size_t i = 0; i < models.size(); ++i) {
        v.models.push_back(variant_run(models[i], where + ".models[" + std::to_string(i) + "]"));
    }
    if (v.models.empty() || int64_t(v.models.size()) > MAX_VARIANTS) {
        throw ProtocolViolation(where + ".models: 1 to " + std::to_string(MAX_VARIANTS) +
                                " variants, got " + std::to_string(v.models.size()));
    }
    if (const json* t = opt(d, "timed_samples", INT, where)) {
        v.timed_samples = to_int(*t);
        // the value as JSON has it (an unsigned one past int64 is out of range too)
        if (t->is_number_unsigned() ? t->get<uint64_t>() > uint64_t(MAX_TIMED_SAMPLES)
                                    : v.timed_samples < 0 || v.timed_samples > MAX_TIMED_SAMPLES) {
            throw ProtocolViolation(where + ".timed_samples: must be in [0, " +
                                    std::to_string(MAX_TIMED_SAMPLES) + "], got " + t->dump());
        }
    }
    return v;
}

CaptureParams capture_params(const json& d, const std::string& where) {
    CaptureParams p;
    const json& inputs = req(d, "inputs", LIST, where);
    if (inputs.empty()) throw ProtocolViolation(where + ".inputs: at least one input is needed");
    if (const json* a = opt(d, "absmax", DICT, where)) {
        std::map<std::string, double> absmax;
        for (auto it = a->begin(); it != a->end(); ++it) {
            absmax[it.key()] = to_float(it.value(), where + ".absmax[" + py_repr(it.key()) + "]");
        }
        p.absmax = absmax;
    }
    // compare, variants and timed are type-checked here, parsed after the rest (messages.py)
    const json* compare = opt(d, "compare", DICT, where);
    const json* variants = opt(d, "variants", DICT, where);
    if (const json* t = opt(d, "timed", BOOL, where)) p.timed = t->get<bool>();
    if (variants && (p.timed || compare)) {
        throw ProtocolViolation(where + ".variants: a run with variants is neither timed nor "
                                        "compared (its timed_samples time the variants)");
    }
    read_shards(d, where, inputs, p);
    p.blobs = str_list(req(d, "blobs", LIST, where), where + ".blobs");
    if (variants && p.blobs.empty()) {
        throw ProtocolViolation(where + ".blobs: a run with variants needs at least one blob");
    }
    p.runtime = opt_str(d, "runtime", where, "calibration");
    if (!one_of(p.runtime, RUNTIMES)) {
        throw ProtocolViolation(where + ".runtime: " + py_repr(p.runtime) + " not in " +
                                py_tuple(RUNTIMES));
    }
    if (const json* t = opt(d, "threads", INT, where)) p.threads = to_int(*t);
    if (p.threads < 1) {
        throw ProtocolViolation(where + ".threads: must be >= 1, got " + std::to_string(p.threads));
    }
    if (compare) p.compare = compare_params(*compare, where + ".compare");
    if (variants) p.variants = variants_params(*variants, where + ".variants");
    return p;
}

EqLayerParams eq_params(const json& d, const std::string& where) {
    EqLayerParams p;
    const json& inputs = req(d, "inputs", LIST, where);
    if (const json* m = opt(d, "max_samples", INT, where)) p.max_samples = to_int(*m);
    if (p.max_samples < 1 || p.max_samples > EQ_MAX_SAMPLES) {
        throw ProtocolViolation(where + ".max_samples: must be in [1, " +
                                std::to_string(EQ_MAX_SAMPLES) + "], got " +
                                std::to_string(p.max_samples));
    }
    p.probe_param = check_relpath(opt_str(d, "probe_param", where, p.probe_param), where + ".probe_param");
    p.probe_prefix = check_relpath(opt_str(d, "probe_prefix", where, p.probe_prefix), where + ".probe_prefix");
    p.candidates = check_relpath(opt_str(d, "candidates", where, p.candidates), where + ".candidates");
    read_shards(d, where, inputs, p);
    p.bottom = req(d, "bottom", STR, where).get<std::string>();
    p.top = req(d, "top", STR, where).get<std::string>();
    return p;
}

}  // namespace

std::string content_digest(const std::string& rel) {
    // ^files/([0-9a-f]{64})/[^/]+$
    if (rel.size() < 6 + 64 + 2 || rel.compare(0, 6, "files/") != 0) return "";
    std::string digest = rel.substr(6, 64);
    for (char c : digest) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return "";
    }
    if (rel[70] != '/') return "";
    std::string name = rel.substr(71);
    if (name.empty() || name.find('/') != std::string::npos || name.find('\n') != std::string::npos) {
        return "";
    }
    return digest;
}

void check_job_id(const std::string& job_id) {
    bool ok = !job_id.empty() && job_id.size() <= 128 && std::isalnum((unsigned char)job_id[0]) &&
              (unsigned char)job_id[0] < 128;
    for (size_t i = 1; ok && i < job_id.size(); ++i) {
        unsigned char c = job_id[i];
        ok = c < 128 && (std::isalnum(c) || c == '.' || c == '_' || c == '-');
    }
    if (!ok) {
        throw ProtocolViolation("job id " + py_repr(job_id) + " must match " + JOB_ID_PATTERN);
    }
}

const std::string& check_relpath(const std::string& path, const std::string& where) {
    bool bad = path.empty() || path[0] == '/' || path.find('\\') != std::string::npos ||
               path.find('\0') != std::string::npos;
    size_t i = 0;
    while (!bad && i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        bad = path.compare(i, j - i, "..") == 0 && j - i == 2;
        i = j + 1;
    }
    if (bad) {
        throw ProtocolViolation(where + ": " + py_repr(path) +
                                " must be a relative path inside the workdir");
    }
    return path;
}

InputDesc InputDesc::from_json(const json& d, const std::string& where) {
    InputDesc r;
    const json* shape = opt(d, "shape", LIST, where);
    r.blob = req(d, "blob", STR, where).get<std::string>();
    r.kind = opt_str(d, "kind", where, "image");
    r.pixel = opt_str(d, "pixel", where, "BGR");
    if (const json* m = opt(d, "mean", LIST, where)) r.mean = num_list(*m, where + ".mean");
    if (const json* n = opt(d, "norm", LIST, where)) r.norm = num_list(*n, where + ".norm");
    if (shape) {
        for (size_t i = 0; i < shape->size(); ++i) {
            r.shape.push_back(to_int(typed((*shape)[i], INT, where + ".shape[" + std::to_string(i) + "]")));
        }
    }
    if (!one_of(r.kind, INPUT_KINDS)) {
        throw ProtocolViolation("input " + py_repr(r.blob) + ": kind " + py_repr(r.kind) +
                                " not in " + py_tuple(INPUT_KINDS));
    }
    if (!one_of(r.pixel, PIXEL_TYPES)) {
        throw ProtocolViolation("input " + py_repr(r.blob) + ": pixel " + py_repr(r.pixel) +
                                " not in " + py_tuple(PIXEL_TYPES));
    }
    return r;
}

json InputDesc::to_json() const {
    return json{{"blob", blob}, {"kind", kind}, {"pixel", pixel},
                {"mean", mean}, {"norm", norm}, {"shape", shape}};
}

std::string InputDesc::repr() const {
    std::vector<std::string> m, n, sh;
    for (double v : mean) m.push_back(py_float(v));
    for (double v : norm) n.push_back(py_float(v));
    for (int64_t v : shape) sh.push_back(std::to_string(v));
    return "{'blob': " + py_repr(blob) + ", 'kind': " + py_repr(kind) + ", 'pixel': " +
           py_repr(pixel) + ", 'mean': [" + join(m, ", ") + "], 'norm': [" + join(n, ", ") +
           "], 'shape': [" + join(sh, ", ") + "]}";
}

std::pair<int64_t, int64_t> InputDesc::target_size(int64_t cols, int64_t rows) const {
    int64_t w = shape.size() > 0 ? shape[0] : 0;
    int64_t h = shape.size() > 1 ? shape[1] : 0;
    if (w > 0 && h > 0) return {w, h};
    if (w <= 0 && h <= 0) return {cols, rows};
    if (h <= 0) {
        double s = double(cols) / double(w);
        return {w, int64_t(double(rows) / s)};
    }
    double s = double(rows) / double(h);
    return {int64_t(double(cols) / s), h};
}

bool InputDesc::operator==(const InputDesc& o) const {
    return blob == o.blob && kind == o.kind && pixel == o.pixel && mean == o.mean &&
           norm == o.norm && shape == o.shape;
}

Request Request::from_json(const json& d) {
    const json& protocol = req(d, "protocol", INT, "request");
    if (to_int(protocol) != EDGECAL_PROTOCOL) {
        throw ProtocolViolation("the request speaks edgecal agent protocol " + protocol.dump() +
                                    ", this side speaks protocol " +
                                    std::to_string(EDGECAL_PROTOCOL) +
                                    "; host and agent must use the same major protocol version",
                                true);
    }
    Request r;
    r.op = req(d, "op", STR, "request").get<std::string>();
    if (!one_of(r.op, OPS)) {
        throw ProtocolViolation("unknown op " + py_repr(r.op) +
                                "; known ops: hello, absmax, histogram, run, eq_layer, sleep");
    }
    static const json empty = json::object();
    const json* pp = opt(d, "params", DICT, "request");
    const json& params = pp ? *pp : empty;
    if (r.op == "sleep") {
        const json* s = opt(params, "seconds", NUM, "params");
        r.sleep_seconds = s ? to_float(*s, "params.seconds") : 0.0;
        if (!(r.sleep_seconds >= 0.0 && r.sleep_seconds <= 3600.0)) {
            throw ProtocolViolation("params.seconds: must be in [0, 3600], got " +
                                    py_float(r.sleep_seconds));
        }
    } else if (r.op == "absmax" || r.op == "histogram" || r.op == "run") {
        r.capture = capture_params(params, "params");
    } else if (r.op == "eq_layer") {
        r.eq = eq_params(params, "params");
    }
    r.job_id = req(d, "job_id", STR, "request").get<std::string>();
    check_job_id(r.job_id);
    if (r.op == "histogram" && !r.capture.absmax) {
        throw ProtocolViolation("op 'histogram' needs params.absmax (blob -> absmax)");
    }
    return r;
}

std::string Response::dumps() const {
    json timing = json::object();
    for (const auto& [k, v] : timing_s) timing[k] = v;
    json d = {
        {"protocol", EDGECAL_PROTOCOL},
        {"op", op},
        {"job_id", job_id},
        {"ok", ok},
        {"agent_version", EDGECAL_AGENT_VERSION},
        {"result", result},
        {"artifacts", artifacts},
        {"error", error},
        {"timing_s", timing},
        {"ru_maxrss_kb", ru_maxrss_kb},
    };
    return d.dump(1, ' ', true, json::error_handler_t::replace) + "\n";
}

}  // namespace edgecal
