// The sample shard format (shards.py): samples stacked into blocks in one .npz, read one
// block at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "messages.h"
#include "npz.h"

namespace edgecal {

struct ShardInfo {
    std::vector<InputDesc> inputs;
    int64_t n_samples = 0;
    std::vector<int64_t> block_sizes;
};

// One input array of one sample: a view into a block held by the shard reader.
struct ArrayView {
    std::string descr;
    char kind = 0;
    size_t itemsize = 0;
    std::vector<int64_t> shape;
    const unsigned char* data = nullptr;
    size_t count() const {
        size_t n = 1;
        for (int64_t d : shape) n *= size_t(d);
        return n;
    }
};
using Sample = std::vector<ArrayView>;

// A shard's header (reads no sample data); ProtocolViolation.
ShardInfo read_shard_info(int fd, const std::string& name);
// Every sample, in order; fn's views live for the call.  ProtocolViolation (a damaged shard).
void iter_shard(int fd, const ShardInfo& info, const std::string& name,
                const std::function<void(const Sample&)>& fn);

}  // namespace edgecal
