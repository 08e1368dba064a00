#include "shards.h"

#include "errors.h"
#include "pyfmt.h"

namespace edgecal {

namespace {

const int64_t SHARD_SCHEMA = 1;

std::string num5(int64_t k) {
    std::string s = std::to_string(k);
    return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
}
std::string block_key(int64_t k, size_t j) { return "b" + num5(k) + "_" + std::to_string(j); }
std::string shapes_key(int64_t k, size_t j) { return block_key(k, j) + "_shapes"; }

int64_t int_scalar(const NpzReader& npz, const std::string& key, const std::string& where) {
    NpyArray a = npz.get(key);
    if (!a.shape.empty() || (a.kind != 'i' && a.kind != 'u')) {
        throw ProtocolViolation(where + ": member " + py_repr(key) +
                                " must be an integer scalar, got " + a.descr);
    }
    return a.int_at(0);
}

std::string descr_of(const NpyArray& a) { return a.descr; }

}  // namespace

ShardInfo read_shard_info(int fd, const std::string& name) {
    const std::string where = "shard " + name;
    NpzReader npz(fd, name);
    ShardInfo info;
    try {
        int64_t schema = int_scalar(npz, "schema", where);
        if (schema != SHARD_SCHEMA) {
            throw ProtocolViolation(where + ": schema " + std::to_string(schema) +
                                    ", this agent reads " + std::to_string(SHARD_SCHEMA));
        }
        NpyArray text = npz.get("inputs");
        if (!text.shape.empty() || text.kind != 'U') {
            throw ProtocolViolation(where + ": member 'inputs' must be JSON text");
        }
        json descs;
        try {
            descs = json::parse(text.unicode());
        } catch (const json::exception& e) {
            throw ProtocolViolation(where + ": member 'inputs' is not JSON (" + e.what() + ")");
        }
        if (!descs.is_array()) throw ProtocolViolation(where + ": member 'inputs' must be a JSON list");
        for (size_t i = 0; i < descs.size(); ++i) {
            info.inputs.push_back(
                InputDesc::from_json(descs[i], where + ": input " + std::to_string(i)));
        }
        info.n_samples = int_scalar(npz, "n_samples", where);
        NpyArray sizes = npz.get("block_sizes");
        if (sizes.shape.size() != 1 || (sizes.count() && sizes.kind != 'i' && sizes.kind != 'u')) {
            throw ProtocolViolation(where + ": member 'block_sizes' must be a list of counts");
        }
        for (size_t i = 0; i < sizes.count(); ++i) info.block_sizes.push_back(sizes.int_at(i));
    } catch (const NpzKeyError& e) {
        throw ProtocolViolation(where + ": missing member " + py_repr(e.key));
    }
    int64_t sum = 0;
    bool negative = info.n_samples < 0;
    for (int64_t n : info.block_sizes) {
        negative = negative || n < 0;
        sum += n;
    }
    if (negative) throw ProtocolViolation(where + ": negative sample counts");
    if (sum != info.n_samples) throw ProtocolViolation(where + ": block sizes do not add up");
    return info;
}

void iter_shard(int fd, const ShardInfo& info, const std::string& name,
                const std::function<void(const Sample&)>& fn) {
    const std::string where = "shard " + name;
    NpzReader npz(fd, name);
    const size_t n_inputs = info.inputs.size();
    for (size_t k = 0; k < info.block_sizes.size(); ++k) {
        const int64_t n = info.block_sizes[k];
        std::vector<NpyArray> blocks(n_inputs);
        // per input, per sample: (shape, byte offset)
        std::vector<std::vector<std::pair<std::vector<int64_t>, size_t>>> parts(n_inputs);
        try {
            for (size_t j = 0; j < n_inputs; ++j) {
                if (npz.has(shapes_key(int64_t(k), j))) {
                    NpyArray flat = npz.get(block_key(int64_t(k), j));
                    NpyArray shapes = npz.get(shapes_key(int64_t(k), j));
                    bool bad = flat.shape.size() != 1 || shapes.shape.size() != 2 ||
                               shapes.shape[0] != n || (shapes.kind != 'i' && shapes.kind != 'u');
                    for (size_t e = 0; !bad && e < shapes.count(); ++e) bad = shapes.int_at(e) < 0;
                    if (bad) {
                        throw ProtocolViolation(where + ": ragged block " + std::to_string(k) +
                                                " of input " + std::to_string(j) + " is malformed");
                    }
                    const size_t ndim = size_t(shapes.shape[1]);
                    uint64_t start = 0;
                    const uint64_t total = uint64_t(flat.shape[0]);
                    bool fits = true;
                    for (int64_t i = 0; i < n && fits; ++i) {
                        std::vector<int64_t> shape;
                        uint64_t count = 1;
                        for (size_t d = 0; d < ndim; ++d) {
                            int64_t v = shapes.int_at(size_t(i) * ndim + d);
                            shape.push_back(v);
                            if (v && count > total / uint64_t(v) + 1) fits = false;
                            count *= uint64_t(v);
                        }
                        if (!fits || start + count > total) {
                            fits = false;
                            break;
                        }
                        parts[j].push_back({shape, size_t(start) * flat.itemsize});
                        start += count;
                    }
                    if (!fits || start != total) {
                        throw ProtocolViolation(where + ": ragged block " + std::to_string(k) +
                                                " of input " + std::to_string(j) + " does not add up");
                    }
                    blocks[j] = std::move(flat);
                } else {
                    blocks[j] = npz.get(block_key(int64_t(k), j));
                    const NpyArray& b = blocks[j];
                    if (b.shape.empty() || b.shape[0] != n) {
                        throw ProtocolViolation(where + ": block " + std::to_string(k) +
                                                " is not " + std::to_string(n) + " long");
                    }
                    std::vector<int64_t> shape(b.shape.begin() + 1, b.shape.end());
                    size_t per = b.itemsize;
                    for (int64_t d : shape) per *= size_t(d);
                    for (int64_t i = 0; i < n; ++i) parts[j].push_back({shape, size_t(i) * per});
                }
            }
        } catch (const NpzKeyError& e) {
            throw ProtocolViolation(where + ": missing member " + py_repr(e.key));
        }
        for (int64_t i = 0; i < n; ++i) {
            Sample sample(n_inputs);
            for (size_t j = 0; j < n_inputs; ++j) {
                ArrayView& v = sample[j];
                v.descr = descr_of(blocks[j]);
                v.kind = blocks[j].kind;
                v.itemsize = blocks[j].itemsize;
                v.shape = parts[j][size_t(i)].first;
                v.data = reinterpret_cast<const unsigned char*>(blocks[j].data.data()) +
                         parts[j][size_t(i)].second;
            }
            fn(sample);
        }
    }
}

}  // namespace edgecal
