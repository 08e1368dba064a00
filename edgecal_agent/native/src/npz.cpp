#include "npz.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "errors.h"
#include "pyfmt.h"
#include "sha256.h"

namespace edgecal {

namespace {

uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

void put16(std::string& s, uint16_t v) {
    s += char(v & 0xff);
    s += char(v >> 8);
}
void put32(std::string& s, uint32_t v) {
    for (int i = 0; i < 4; ++i) s += char((v >> (8 * i)) & 0xff);
}

// pread exactly n bytes at off, false on a short file
bool pread_all(int fd, void* buf, size_t n, uint64_t off) {
    char* p = static_cast<char*>(buf);
    while (n) {
        ssize_t k = ::pread(fd, p, n, off_t(off));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= size_t(k);
        off += uint64_t(k);
    }
    return true;
}

void skip_ws(const std::string& s, size_t& i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t')) ++i;
}

// the .npy header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
void parse_header(const std::string& h, NpyArray& a, const std::string& where) {
    auto bad = [&]() { return ProtocolViolation(where + " has a malformed .npy header"); };
    size_t i = 0;
    skip_ws(h, i);
    if (i >= h.size() || h[i] != '{') throw bad();
    ++i;
    bool fortran = false, got_descr = false, got_shape = false;
    for (;;) {
        skip_ws(h, i);
        if (i < h.size() && h[i] == '}') break;
        if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) throw bad();
        char q = h[i++];
        size_t e = h.find(q, i);
        if (e == std::string::npos) throw bad();
        std::string key = h.substr(i, e - i);
        i = e + 1;
        skip_ws(h, i);
        if (i >= h.size() || h[i] != ':') throw bad();
        ++i;
        skip_ws(h, i);
        if (key == "descr") {
            if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) throw bad();
            char q2 = h[i++];
            size_t e2 = h.find(q2, i);
            if (e2 == std::string::npos) throw bad();
            a.descr = h.substr(i, e2 - i);
            i = e2 + 1;
            got_descr = true;
        } else if (key == "fortran_order") {
            if (h.compare(i, 4, "True") == 0) {
                fortran = true;
                i += 4;
            } else if (h.compare(i, 5, "False") == 0) {
                i += 5;
            } else {
                throw bad();
            }
        } else if (key == "shape") {
            if (i >= h.size() || h[i] != '(') throw bad();
            ++i;
            for (;;) {
                skip_ws(h, i);
                if (i < h.size() && h[i] == ')') {
                    ++i;
                    break;
                }
                size_t start = i;
                while (i < h.size() && h[i] >= '0' && h[i] <= '9') ++i;
                if (i == start || i - start > 18) throw bad();
                a.shape.push_back(std::stoll(h.substr(start, i - start)));
                skip_ws(h, i);
                if (i < h.size() && h[i] == ',') ++i;
            }
            got_shape = true;
        } else {
            throw bad();
        }
        skip_ws(h, i);
        if (i < h.size() && h[i] == ',') ++i;
    }
    if (!got_descr || !got_shape) throw bad();
    if (fortran) throw ProtocolViolation(where + " is in Fortran order (only C order is sent)");
    const std::string& d = a.descr;
    if (d.size() < 3 || (d[0] != '<' && d[0] != '|' && d[0] != '=')) {
        throw ProtocolViolation(where + ": unsupported dtype " + py_repr(d));
    }
    a.kind = d[1];
    if (a.kind != 'f' && a.kind != 'i' && a.kind != 'u' && a.kind != 'U' && a.kind != 'b') {
        throw ProtocolViolation(where + ": unsupported dtype " + py_repr(d));
    }
    size_t n = 0;
    for (size_t k = 2; k < d.size(); ++k) {
        if (d[k] < '0' || d[k] > '9' || k > 10) {
            throw ProtocolViolation(where + ": unsupported dtype " + py_repr(d));
        }
        n = n * 10 + size_t(d[k] - '0');
    }
    a.itemsize = a.kind == 'U' ? 4 * n : n;
    if (a.itemsize == 0 && a.kind != 'U') {
        throw ProtocolViolation(where + ": unsupported dtype " + py_repr(d));
    }
}

// Header of a .npy held in 'head' (at least its first bytes); returns the data offset.
size_t npy_header(const std::string& head, NpyArray& a, const std::string& where, bool complete) {
    if (head.size() < 10 || std::memcmp(head.data(), "\x93NUMPY", 6) != 0) {
        throw ProtocolViolation(where + " is not a .npy array");
    }
    const unsigned char* p = reinterpret_cast<const unsigned char*>(head.data());
    int major = p[6];
    size_t hlen, start;
    if (major == 1) {
        hlen = le16(p + 8);
        start = 10;
    } else if (major == 2 || major == 3) {
        if (head.size() < 12) throw ProtocolViolation(where + " is not a .npy array");
        hlen = le32(p + 8);
        start = 12;
    } else {
        throw ProtocolViolation(where + ": unsupported .npy version (" + std::to_string(major) +
                                ", " + std::to_string(p[7]) + ")");
    }
    if (start + hlen > head.size()) {
        if (complete) throw ProtocolViolation(where + " has a truncated .npy header");
        return 0;
    }
    parse_header(head.substr(start, hlen), a, where);
    return start + hlen;
}

void check_size(const NpyArray& a, uint64_t have, const std::string& where) {
    uint64_t count = 1;
    for (int64_t n : a.shape) {
        if (n < 0 || (n && count > (uint64_t(1) << 62) / uint64_t(n))) {
            throw ProtocolViolation(where + ": its header claims an impossible shape");
        }
        count *= uint64_t(n);
    }
    uint64_t need = count * a.itemsize;
    if (a.itemsize && need / a.itemsize != count) {
        throw ProtocolViolation(where + ": its header claims an impossible shape");
    }
    if (need > have) {
        throw ProtocolViolation(where + ": its header claims " + a.descr + " (" +
                                std::to_string(need) + " bytes) but it holds " +
                                std::to_string(have) + " bytes");
    }
}

std::string npy_header_bytes(const std::string& descr, const std::vector<int64_t>& shape) {
    std::string sh = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) sh += ", ";
        sh += std::to_string(shape[i]);
    }
    if (shape.size() == 1) sh += ",";
    sh += ")";
    std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + sh + ", }";
    size_t total = 10 + dict.size() + 1;
    size_t pad = (64 - total % 64) % 64;
    dict += std::string(pad, ' ') + "\n";
    std::string out("\x93NUMPY\x01\x00", 8);
    put16(out, uint16_t(dict.size()));
    return out + dict;
}

}  // namespace

size_t NpyArray::count() const {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    return n;
}

int64_t NpyArray::int_at(size_t i) const {
    const char* p = data.data() + i * itemsize;
    if (kind == 'i') {
        switch (itemsize) {
            case 1: return *reinterpret_cast<const int8_t*>(p);
            case 2: { int16_t v; std::memcpy(&v, p, 2); return v; }
            case 4: { int32_t v; std::memcpy(&v, p, 4); return v; }
            case 8: { int64_t v; std::memcpy(&v, p, 8); return v; }
        }
    } else if (kind == 'u') {
        switch (itemsize) {
            case 1: return *reinterpret_cast<const uint8_t*>(p);
            case 2: { uint16_t v; std::memcpy(&v, p, 2); return v; }
            case 4: { uint32_t v; std::memcpy(&v, p, 4); return v; }
            case 8: { uint64_t v; std::memcpy(&v, p, 8); return v > uint64_t(INT64_MAX) ? -1 : int64_t(v); }
        }
    }
    return 0;
}

std::string NpyArray::unicode() const {
    std::string out;
    for (size_t i = 0; i + 4 <= itemsize && i + 4 <= data.size(); i += 4) {
        uint32_t c = le32(reinterpret_cast<const unsigned char*>(data.data()) + i);
        if (c == 0) break;
        if (c < 0x80) {
            out += char(c);
        } else if (c < 0x800) {
            out += char(0xC0 | (c >> 6));
            out += char(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out += char(0xE0 | (c >> 12));
            out += char(0x80 | ((c >> 6) & 0x3F));
            out += char(0x80 | (c & 0x3F));
        } else {
            out += char(0xF0 | (c >> 18));
            out += char(0x80 | ((c >> 12) & 0x3F));
            out += char(0x80 | ((c >> 6) & 0x3F));
            out += char(0x80 | (c & 0x3F));
        }
    }
    return out;
}

NpyArray parse_npy(const std::string& bytes, const std::string& where) {
    NpyArray a;
    size_t off = npy_header(bytes, a, where, true);
    check_size(a, bytes.size() - off, where);
    a.data = bytes.substr(off, a.count() * a.itemsize);
    return a;
}

NpzReader::NpzReader(int fd, std::string name) : fd_(fd), name_(std::move(name)) { open(); }

NpzReader::NpzReader(const std::string* bytes, std::string name)
    : mem_(bytes), name_(std::move(name)) {
    open();
}

bool NpzReader::read_at(void* buf, size_t n, uint64_t off) const {
    if (!mem_) return pread_all(fd_, buf, n, off);
    if (off > mem_->size() || n > mem_->size() - off) return false;
    std::memcpy(buf, mem_->data() + off, n);
    return true;
}

uint64_t NpzReader::file_size() const {
    if (mem_) return mem_->size();
    off_t end = ::lseek(fd_, 0, SEEK_END);
    return end < 0 ? 0 : uint64_t(end);
}

void NpzReader::open() {
    auto unreadable = [&](const std::string& why) {
        return ProtocolViolation(name_ + " is not a readable .npz archive (" + why + ")");
    };
    unsigned char magic[4];
    if (!read_at(magic, 4, 0) ||
        !(std::memcmp(magic, "PK\x03\x04", 4) == 0 || std::memcmp(magic, "PK\x05\x06", 4) == 0)) {
        throw ProtocolViolation(name_ + " is not an .npz (zip) archive");
    }
    const uint64_t end = file_size();
    if (end < 22) throw unreadable("File is not a zip file");
    size_t tail_n = size_t(end < 65557 ? end : 65557);
    std::string tail(tail_n, '\0');
    if (!read_at(&tail[0], tail_n, uint64_t(end) - tail_n)) throw unreadable("short read");
    size_t eocd = std::string::npos;
    for (size_t i = tail_n - 22 + 1; i-- > 0;) {
        if (std::memcmp(&tail[i], "PK\x05\x06", 4) == 0) {
            eocd = i;
            break;
        }
    }
    if (eocd == std::string::npos) throw unreadable("File is not a zip file");
    const unsigned char* e = reinterpret_cast<const unsigned char*>(&tail[eocd]);
    uint64_t n_entries = le16(e + 10);
    uint64_t cd_size = le32(e + 12);
    uint64_t cd_off = le32(e + 16);
    uint64_t eocd_abs = uint64_t(end) - tail_n + eocd;
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
        unsigned char loc[20];
        if (eocd_abs < 20 || !read_at(loc, 20, eocd_abs - 20) ||
            std::memcmp(loc, "PK\x06\x07", 4) != 0) {
            throw unreadable("no zip64 end record");
        }
        uint64_t z64 = le64(loc + 8);
        unsigned char rec[56];
        if (!read_at(rec, 56, z64) || std::memcmp(rec, "PK\x06\x06", 4) != 0) {
            throw unreadable("bad zip64 end record");
        }
        n_entries = le64(rec + 32);
        cd_size = le64(rec + 40);
        cd_off = le64(rec + 48);
    }
    if (cd_size > (uint64_t(64) << 20) || cd_off + cd_size > uint64_t(end)) {
        throw unreadable("bad central directory");
    }
    std::string cd(size_t(cd_size), '\0');
    if (cd_size && !read_at(&cd[0], size_t(cd_size), cd_off)) throw unreadable("short read");
    size_t pos = 0;
    for (uint64_t k = 0; k < n_entries; ++k) {
        if (pos + 46 > cd.size()) throw unreadable("truncated central directory");
        const unsigned char* c = reinterpret_cast<const unsigned char*>(&cd[pos]);
        if (std::memcmp(c, "PK\x01\x02", 4) != 0) throw unreadable("bad central directory entry");
        Member m;
        m.method = le16(c + 10);
        uint64_t comp = le32(c + 20);
        uint64_t size = le32(c + 24);
        size_t nlen = le16(c + 28), xlen = le16(c + 30), clen = le16(c + 32);
        m.offset = le32(c + 42);
        if (pos + 46 + nlen + xlen + clen > cd.size()) throw unreadable("truncated central directory");
        std::string fname = cd.substr(pos + 46, nlen);
        // zip64 extra: the fields that are 0xFFFFFFFF, in order size, comp, offset
        size_t x = pos + 46 + nlen, xend = x + xlen;
        while (x + 4 <= xend) {
            const unsigned char* xp = reinterpret_cast<const unsigned char*>(&cd[x]);
            uint16_t id = le16(xp), len = le16(xp + 2);
            if (x + 4 + len > xend) break;
            if (id == 1) {
                size_t f = 4;
                if (size == 0xFFFFFFFF && f + 8 <= size_t(len) + 4) { size = le64(xp + f); f += 8; }
                if (comp == 0xFFFFFFFF && f + 8 <= size_t(len) + 4) { comp = le64(xp + f); f += 8; }
                if (m.offset == 0xFFFFFFFF && f + 8 <= size_t(len) + 4) { m.offset = le64(xp + f); f += 8; }
            }
            x += 4 + len;
        }
        m.size = m.method == 0 ? comp : size;
        pos += 46 + nlen + xlen + clen;
        std::string key = fname;
        if (key.size() > 4 && key.compare(key.size() - 4, 4, ".npy") == 0) key.resize(key.size() - 4);
        if (!members_.count(key)) files_.push_back(key);
        members_[key] = m;
    }
}

NpyArray NpzReader::get(const std::string& key) const {
    auto it = members_.find(key);
    if (it == members_.end()) throw NpzKeyError{key};
    const Member& m = it->second;
    const std::string where = name_ + ": member " + py_repr(key);
    if (m.method != 0) {
        throw ProtocolViolation(where + " is compressed (zip method " + std::to_string(m.method) +
                                "); this agent reads stored members only");
    }
    unsigned char lh[30];
    if (!read_at(lh, 30, m.offset) || std::memcmp(lh, "PK\x03\x04", 4) != 0) {
        throw ProtocolViolation(where + " is damaged (bad local header)");
    }
    uint64_t data_off = m.offset + 30 + le16(lh + 26) + le16(lh + 28);
    std::string head(size_t(m.size < 4096 ? m.size : 4096), '\0');
    if (!head.empty() && !read_at(&head[0], head.size(), data_off)) {
        throw ProtocolViolation(where + " is damaged (short read)");
    }
    NpyArray a;
    size_t hoff = npy_header(head, a, where, head.size() == m.size);
    if (hoff == 0) {  // a header longer than 4 KiB
        head.resize(size_t(m.size < (1u << 20) ? m.size : (1u << 20)));
        if (!read_at(&head[0], head.size(), data_off)) {
            throw ProtocolViolation(where + " is damaged (short read)");
        }
        a = NpyArray();
        hoff = npy_header(head, a, where, true);
    }
    check_size(a, m.size - hoff, where);
    size_t nbytes = a.count() * a.itemsize;
    a.data.resize(nbytes);
    if (nbytes && !read_at(&a.data[0], nbytes, data_off + hoff)) {
        throw ProtocolViolation(where + " is damaged (short read)");
    }
    return a;
}

std::map<std::string, NpyArray> load_npz_bytes(const std::string& bytes, const std::string& name) {
    NpzReader r(&bytes, name);
    std::map<std::string, NpyArray> out;
    for (const auto& k : r.files()) out[k] = r.get(k);
    return out;
}

NpzWriter::NpzWriter(int dir_fd, std::string name) : dfd_(dir_fd), name_(std::move(name)) {
    auto made = create_temp_at(dfd_, name_);
    fd_ = std::move(made.first);
    tmp_ = made.second;
}

NpzWriter::~NpzWriter() {
    if (!closed_) {
        fd_ = Fd();
        ::unlinkat(dfd_, tmp_.c_str(), 0);
    }
}

void NpzWriter::add(const std::string& key, const std::string& descr,
                    const std::vector<int64_t>& shape, const void* data, size_t nbytes) {
    if (!keys_.insert(key).second) {
        throw ProtocolViolation("npz member " + py_repr(key) + " written twice");
    }
    const std::string header = npy_header_bytes(descr, shape);
    const uint64_t size = header.size() + nbytes;
    if (size >= 0xFFFFFFFFull || pos_ >= 0xFFFFFFFFull) {
        throw ProtocolViolation("npz member " + py_repr(key) + " is larger than 4 GiB");
    }
    uint32_t crc = crc32_update(0, header.data(), header.size());
    crc = crc32_update(crc, data, nbytes);
    const std::string fname = key + ".npy";
    std::string lh;
    put32(lh, 0x04034b50);
    put16(lh, 20);      // version needed
    put16(lh, 0);       // flags
    put16(lh, 0);       // stored
    put16(lh, 0);       // time 00:00:00
    put16(lh, 0x21);    // date 1980-01-01
    put32(lh, crc);
    put32(lh, uint32_t(size));
    put32(lh, uint32_t(size));
    put16(lh, uint16_t(fname.size()));
    put16(lh, 0);
    lh += fname;
    entries_.push_back({fname, crc, size, pos_});
    write_all(fd_.get(), lh.data(), lh.size(), tmp_);
    write_all(fd_.get(), header.data(), header.size(), tmp_);
    write_all(fd_.get(), data, nbytes, tmp_);
    pos_ += lh.size() + size;
}

void NpzWriter::add_i64(const std::string& key, int64_t v) { add(key, "<i8", {}, &v, 8); }

void NpzWriter::add_f64(const std::string& key, double v) { add(key, "<f8", {}, &v, 8); }

void NpzWriter::add_names(const std::string& key, const std::vector<std::string>& names) {
    // '<U<n>' (UTF-32LE, zero padded), as numpy.array(names, dtype=str); empty: '<U1' (0,)
    std::vector<std::vector<uint32_t>> cps;
    size_t width = 1;
    for (const auto& s : names) {
        std::vector<uint32_t> cp;
        for (size_t i = 0; i < s.size();) {
            unsigned char c = s[i];
            uint32_t v;
            int extra;
            if (c < 0x80) { v = c; extra = 0; }
            else if ((c >> 5) == 6) { v = c & 0x1F; extra = 1; }
            else if ((c >> 4) == 14) { v = c & 0x0F; extra = 2; }
            else { v = c & 0x07; extra = 3; }
            ++i;
            for (int k = 0; k < extra && i < s.size(); ++k, ++i) v = (v << 6) | (s[i] & 0x3F);
            cp.push_back(v);
        }
        if (!names.empty()) width = std::max(width, cp.size());
        cps.push_back(cp);
    }
    std::string data(names.size() * width * 4, '\0');
    for (size_t r = 0; r < cps.size(); ++r) {
        for (size_t k = 0; k < cps[r].size(); ++k) {
            uint32_t v = cps[r][k];
            for (int b = 0; b < 4; ++b) data[(r * width + k) * 4 + b] = char((v >> (8 * b)) & 0xff);
        }
    }
    add(key, "<U" + std::to_string(width), {int64_t(names.size())}, data.data(), data.size());
}

void NpzWriter::close() {
    std::string cd;
    for (const auto& e : entries_) {
        put32(cd, 0x02014b50);
        put16(cd, 20);      // made by
        put16(cd, 20);      // needed
        put16(cd, 0);
        put16(cd, 0);
        put16(cd, 0);
        put16(cd, 0x21);
        put32(cd, e.crc);
        put32(cd, uint32_t(e.size));
        put32(cd, uint32_t(e.size));
        put16(cd, uint16_t(e.name.size()));
        put16(cd, 0);
        put16(cd, 0);
        put16(cd, 0);
        put16(cd, 0);
        put32(cd, 0600u << 16);
        put32(cd, uint32_t(e.offset));
        cd += e.name;
    }
    std::string eocd;
    put32(eocd, 0x06054b50);
    put16(eocd, 0);
    put16(eocd, 0);
    put16(eocd, uint16_t(entries_.size()));
    put16(eocd, uint16_t(entries_.size()));
    put32(eocd, uint32_t(cd.size()));
    put32(eocd, uint32_t(pos_));
    put16(eocd, 0);
    if (entries_.size() >= 0xFFFF || pos_ + cd.size() >= 0xFFFFFFFFull) {
        throw ProtocolViolation("npz " + name_ + " has too many or too large members");
    }
    write_all(fd_.get(), cd.data(), cd.size(), tmp_);
    write_all(fd_.get(), eocd.data(), eocd.size(), tmp_);
    sync_unless_asked_not_to(fd_.get(), tmp_);
    fd_ = Fd();
    if (::renameat(dfd_, tmp_.c_str(), dfd_, name_.c_str()) != 0) throw SysError(errno, name_);
    closed_ = true;
}

}  // namespace edgecal
