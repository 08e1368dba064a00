#include "workdir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>

#include "errors.h"
#include "pyfmt.h"

namespace edgecal {

namespace {

const int DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#ifdef O_PATH
const int WALK_FLAGS = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#else
const int WALK_FLAGS = DIR_FLAGS;
#endif

JobError oserror(int err, const std::string& rel, const std::string& what) {
    std::string reason = std::strerror(err);
    if (err == ELOOP || err == ENOTDIR || err == EMLINK) {
        reason = "a symlink or a file is in the way (only real folders are followed)";
    } else if (err == ENOENT) {
        reason = "it does not exist";
    }
    return BadRequest(what + " " + rel + " cannot be used inside the work directory: " + reason);
}

// Python's os.path.abspath + normpath of a POSIX path.
std::string abspath(const std::string& p) {
    std::string full = p;
    if (full.empty() || full[0] != '/') {
        char buf[PATH_MAX];
        if (!getcwd(buf, sizeof buf)) throw WorkdirRefused("cannot read the current folder");
        full = std::string(buf) + "/" + p;
    }
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= full.size()) {
        size_t j = full.find('/', i);
        if (j == std::string::npos) j = full.size();
        std::string part = full.substr(i, j - i);
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
        } else if (!part.empty() && part != ".") {
            parts.push_back(part);
        }
        i = j + 1;
    }
    return "/" + join(parts, "/");
}

// Python's os.path.realpath (non-strict): symlinks of the existing part resolved, the
// missing rest appended as it is.
std::string realpath_lax(const std::string& absolute) {
    char buf[PATH_MAX];
    if (::realpath(absolute.c_str(), buf)) return buf;
    if (absolute == "/") return "/";
    size_t cut = absolute.rfind('/');
    std::string head = cut == 0 ? "/" : absolute.substr(0, cut);
    std::string tail = absolute.substr(cut + 1);
    std::string real_head = realpath_lax(head);
    return real_head == "/" ? "/" + tail : real_head + "/" + tail;
}

bool inside(const std::string& path, const std::string& root, bool strictly) {
    if (path == root) return !strictly;
    std::string r = root;
    while (!r.empty() && r.back() == '/') r.pop_back();
    r += "/";
    return path.compare(0, r.size(), r) == 0;
}

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.release();
    }
    return *this;
}

Fd::~Fd() {
    if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> split_relpath(const std::string& rel, const std::string& what) {
    if (rel.empty()) throw BadRequest(what + " " + py_repr(rel) + " must be a non-empty relative path");
    bool bad = rel.find('\0') != std::string::npos || rel.find('\\') != std::string::npos ||
               rel[0] == '/';
    std::vector<std::string> parts;
    if (!bad) {
        size_t i = 0;
        while (i <= rel.size()) {
            size_t j = rel.find('/', i);
            if (j == std::string::npos) j = rel.size();
            std::string part = rel.substr(i, j - i);
            if (!part.empty() && part != ".") parts.push_back(part);
            i = j + 1;
        }
    }
    bool dotdot = false;
    for (const auto& p : parts) dotdot = dotdot || p == "..";
    if (bad || parts.empty() || dotdot || parts.size() > MAX_DEPTH) {
        throw BadRequest(what + " " + py_repr(rel) +
                         " must be a relative path inside the work directory "
                         "(no '..', no absolute path, no NUL)");
    }
    return parts;
}

Workdir::Workdir(const std::string& path, bool real) : path_(path) {
    int fd = -1;
    int err = 0;
    if (real && !path.empty() && path[0] == '/') {
        fd = ::open("/", WALK_FLAGS);
        size_t i = 1;
        while (fd >= 0 && i <= path.size()) {
            size_t j = path.find('/', i);
            if (j == std::string::npos) j = path.size();
            std::string part = path.substr(i, j - i);
            i = j + 1;
            if (part.empty()) continue;
            // the folders above the work directory only need search (x) permission, as on a
            // phone (/data is rwxrwx--x): those are opened O_PATH, the work directory itself
            // for reading
            bool last = path.find_first_not_of('/', i > path.size() ? path.size() : i) ==
                        std::string::npos;
            int nfd = ::openat(fd, part.c_str(), last ? DIR_FLAGS : WALK_FLAGS);
            if (nfd < 0) err = errno;
            ::close(fd);
            fd = nfd;
        }
    } else {
        fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0) {
        if (!err) err = errno;
        throw WorkdirRefused("cannot open the work directory " + path + ": " + std::strerror(err));
    }
    fd_ = Fd(fd);
}

Fd Workdir::open_dir_parts(const std::vector<std::string>& parts, bool create) const {
    Fd fd(::openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw SysError(errno, ".");
    for (const auto& name : parts) {
        if (create && ::mkdirat(fd.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
            throw SysError(errno, name);
        }
        Fd nfd(::openat(fd.get(), name.c_str(), DIR_FLAGS));
        if (!nfd) throw SysError(errno, name);
        fd = std::move(nfd);
    }
    return fd;
}

std::pair<Fd, std::string> Workdir::parent(const std::string& rel, const std::string& what,
                                           bool create) const {
    std::vector<std::string> parts = split_relpath(rel, what);
    std::string name = parts.back();
    parts.pop_back();
    try {
        return {open_dir_parts(parts, create), name};
    } catch (const SysError& e) {
        throw oserror(e.err, rel, what);
    }
}

Fd open_file_at(int dfd, const std::string& name, const std::string& rel, const std::string& what) {
    const std::string& label = rel.empty() ? name : rel;
    if (name.find('\0') != std::string::npos) {
        throw BadRequest(what + " " + py_repr(label) + ": embedded null byte");
    }
    Fd fd(::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!fd) throw oserror(errno, label, what);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw SysError(errno, label);
    if (!S_ISREG(st.st_mode)) throw BadRequest(what + " " + label + " is not a regular file");
    return fd;
}

std::string read_limited(int fd, size_t limit, const std::string& rel, const std::string& what) {
    std::string data;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw SysError(errno, rel);
        }
        if (n == 0) break;
        data.append(buf, size_t(n));
        if (data.size() > limit) {
            throw BadRequest(what + " " + rel + " is larger than " + std::to_string(limit) +
                             " bytes");
        }
    }
    return data;
}

std::string read_all(int fd) {
    std::string data;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw SysError(errno, "");
        }
        if (n == 0) return data;
        data.append(buf, size_t(n));
    }
}

std::string random_hex(size_t n_bytes) {
    static std::random_device rd;
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n_bytes; ++i) {
        unsigned v = rd() & 0xff;
        out += hex[v >> 4];
        out += hex[v & 15];
    }
    return out;
}

std::pair<Fd, std::string> create_temp_at(int dfd, const std::string& name) {
    for (int i = 0; i < 100; ++i) {
        std::string tmp = "." + name.substr(0, 80) + ".tmp" + std::to_string(::getpid()) + "-" +
                          random_hex(6);
        int fd = ::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          0644);
        if (fd >= 0) return {Fd(fd), tmp};
        if (errno != EEXIST) throw SysError(errno, tmp);
    }
    throw SysError(EEXIST, name);
}

void write_all(int fd, const void* data, size_t n, const std::string& what) {
    const char* p = static_cast<const char*>(data);
    while (n) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            throw SysError(errno, what);
        }
        p += k;
        n -= size_t(k);
    }
}

void sync_unless_asked_not_to(int fd, const std::string& what) {
    static const bool skip = [] {
        const char* v = std::getenv("EDGECAL_AGENT_FSYNC");
        return v && std::string(v) == "0";
    }();
    if (!skip && ::fsync(fd) != 0) throw SysError(errno, what);
}

void write_atomic_at(int dfd, const std::string& name, const std::string& data) {
    auto [fd, tmp] = create_temp_at(dfd, name);
    try {
        write_all(fd.get(), data.data(), data.size(), tmp);
        sync_unless_asked_not_to(fd.get(), tmp);
        Fd closing = std::move(fd);
        if (::close(closing.release()) != 0) throw SysError(errno, tmp);
        if (::renameat(dfd, tmp.c_str(), dfd, name.c_str()) != 0) throw SysError(errno, name);
    } catch (...) {
        ::unlinkat(dfd, tmp.c_str(), 0);
        throw;
    }
}

std::string home_dir() {
    const char* home = std::getenv("HOME");
    if (home && *home) return home;
    // the passwd entry of this user (read as text: a static binary has no NSS)
    std::ifstream pw("/etc/passwd");
    std::string line;
    const std::string uid = std::to_string(::getuid());
    while (std::getline(pw, line)) {
        std::vector<std::string> f;
        size_t i = 0;
        while (i <= line.size()) {
            size_t j = line.find(':', i);
            if (j == std::string::npos) j = line.size();
            f.push_back(line.substr(i, j - i));
            i = j + 1;
        }
        if (f.size() >= 6 && f[2] == uid) return f[5];
    }
    return "";
}

std::string check_workdir(const std::string& workdir, const std::string* root) {
    if (workdir.empty() || workdir.find('\0') != std::string::npos) {
        throw WorkdirRefused("work directory " + py_repr(workdir) + " is empty or not a path");
    }
    const std::string real = realpath_lax(abspath(workdir));
    const std::string hint =
        "set `workdir` in the boards file to a folder of its own inside the user's home "
        "(e.g. .cache/edgecal), or configure its root";
    if (real == "/") {
        throw WorkdirRefused("work directory " + workdir + " is the file system root; " + hint);
    }
    const std::string home = home_dir();
    const std::string real_home = home.empty() ? "" : realpath_lax(abspath(home));
    if (!real_home.empty() && real == real_home) {
        throw WorkdirRefused("work directory " + workdir + " is the home folder itself; " + hint);
    }
    if (root) {
        const std::string real_root = realpath_lax(abspath(*root));
        if (real_root == "/") {
            throw WorkdirRefused("work directory root " + *root + " is the file system root; " +
                                 hint);
        }
        if (!inside(real, real_root, false)) {
            throw WorkdirRefused("work directory " + workdir + " resolves to " + real +
                                 ", outside its root " + real_root + "; " + hint);
        }
        return real;
    }
    if (real_home.empty() || real_home == "/") {
        throw WorkdirRefused("work directory " + workdir +
                             ": the user has no home folder to keep it in; " + hint);
    }
    if (!inside(real, real_home, true)) {
        throw WorkdirRefused("work directory " + workdir + " resolves to " + real +
                             ", which is not inside the home folder " + real_home + "; " + hint);
    }
    return real;
}

}  // namespace edgecal
