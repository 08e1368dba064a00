// The work directory, and the only ways the agent touches files in it (workdir.py): every file
// is reached from the work directory's descriptor one real folder at a time (O_NOFOLLOW |
// O_DIRECTORY with openat), files are opened with O_NOFOLLOW and must be regular, new files
// are created under a fresh random name with O_EXCL and renamed into place.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace edgecal {

// An owned file descriptor (closed on destruction).
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept;
    ~Fd();
    int get() const { return fd_; }
    int release() {
        int f = fd_;
        fd_ = -1;
        return f;
    }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// A request may name at most this many path components.
constexpr size_t MAX_DEPTH = 16;

// The components of a work-directory-relative path, or BadRequest.
std::vector<std::string> split_relpath(const std::string& rel, const std::string& what);

class Workdir {
public:
    // real: path is a real absolute path (from check_workdir), opened one component at a time
    // without following a link.  WorkdirRefused when it cannot be opened.
    Workdir(const std::string& path, bool real);
    const std::string& path() const { return path_; }
    int fd() const { return fd_.get(); }
    // A new descriptor of the real folder parts below the work directory (created with
    // create); SysError when a component is missing, a symlink or not a folder.
    Fd open_dir_parts(const std::vector<std::string>& parts, bool create = false) const;
    // (folder descriptor, name) of file rel; BadRequest naming rel and what.
    std::pair<Fd, std::string> parent(const std::string& rel, const std::string& what,
                                      bool create = false) const;

private:
    std::string path_;
    Fd fd_;
};

// Regular file name in folder dfd, for reading, never through a symlink; BadRequest.
Fd open_file_at(int dfd, const std::string& name, const std::string& rel,
                const std::string& what);
// All of fd if it holds at most limit bytes, else BadRequest.
std::string read_limited(int fd, size_t limit, const std::string& rel, const std::string& what);
// All of fd from its current offset (SysError on a read error).
std::string read_all(int fd);
// A new empty file beside name in dfd: (fd, its temp name), created exclusively.
std::pair<Fd, std::string> create_temp_at(int dfd, const std::string& name);
// name in dfd holds data, all or nothing (temp, fsync, rename); SysError.
void write_atomic_at(int dfd, const std::string& name, const std::string& data);

// fsync(fd) (what names the file in the error) unless EDGECAL_AGENT_FSYNC=0: a host that
// removes the work folder when the run ends (a local device's temporary one) asks for no
// durability, so the agent's answers do not wait for the disk.
void sync_unless_asked_not_to(int fd, const std::string& what);
// write all of data to fd (SysError)
void write_all(int fd, const void* data, size_t n, const std::string& what);
// fresh random hex text of 2*n_bytes digits
std::string random_hex(size_t n_bytes);

std::string home_dir();
// The real path of workdir if the agent may work there, else WorkdirRefused.
std::string check_workdir(const std::string& workdir, const std::string* root);

}  // namespace edgecal
