// .npz files on the wire (npzio.py): zip archives of .npy members, STORED (the host and the
// Python agent write only stored members; a compressed member is refused, never inflated).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "workdir.h"

namespace edgecal {

// One .npy array in memory (C order, little-endian).
struct NpyArray {
    std::string descr;  // '<f4', '|u1', '<i8', '<U7', ...
    char kind = 0;      // 'f', 'i', 'u', 'U', 'b'
    size_t itemsize = 0;
    std::vector<int64_t> shape;
    std::string data;

    size_t count() const;
    // element i of an integer array (kind i/u)
    int64_t int_at(size_t i) const;
    // a 0-d or 1-element unicode array as UTF-8
    std::string unicode() const;
    const float* f32() const { return reinterpret_cast<const float*>(data.data()); }
};

// A member that is not in the archive (Python's KeyError).
struct NpzKeyError {
    std::string key;
};

class NpzReader {
public:
    // fd: an open, regular, seekable file (borrowed); name: how messages name it.
    // ProtocolViolation for anything that is not a readable stored zip.
    NpzReader(int fd, std::string name);
    // over bytes in memory (kept by the caller while the reader lives)
    NpzReader(const std::string* bytes, std::string name);
    bool has(const std::string& key) const { return members_.count(key) != 0; }
    const std::vector<std::string>& files() const { return files_; }
    // NpzKeyError when missing, ProtocolViolation when damaged
    NpyArray get(const std::string& key) const;

private:
    struct Member {
        uint64_t offset;  // of the local header
        uint64_t size;
        uint16_t method;
    };
    void open();
    bool read_at(void* buf, size_t n, uint64_t off) const;
    uint64_t file_size() const;
    int fd_ = -1;
    const std::string* mem_ = nullptr;
    std::string name_;
    std::vector<std::string> files_;
    std::map<std::string, Member> members_;
};

// Parse a whole .npy file held in memory.
NpyArray parse_npy(const std::string& bytes, const std::string& where);
// An in-memory .npz (small files, e.g. eq_layer candidates).
std::map<std::string, NpyArray> load_npz_bytes(const std::string& bytes, const std::string& name);

// Streams members into "<dir>/<name>", appearing under its name only on close() (temp,
// fsync, rename); abandoned (temp removed) when destroyed unclosed.
class NpzWriter {
public:
    NpzWriter(int dir_fd, std::string name);
    ~NpzWriter();
    NpzWriter(const NpzWriter&) = delete;
    NpzWriter& operator=(const NpzWriter&) = delete;

    void add(const std::string& key, const std::string& descr, const std::vector<int64_t>& shape,
             const void* data, size_t nbytes);
    void add_i64(const std::string& key, int64_t v);
    void add_f64(const std::string& key, double v);
    void add_names(const std::string& key, const std::vector<std::string>& names);
    void close();

private:
    struct Entry {
        std::string name;
        uint32_t crc;
        uint64_t size;
        uint64_t offset;
    };
    int dfd_;
    std::string name_;
    Fd fd_;
    std::string tmp_;
    uint64_t pos_ = 0;
    std::vector<Entry> entries_;
    std::set<std::string> keys_;
    bool closed_ = false;
};

}  // namespace edgecal
