#include "jobdirs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "errors.h"

namespace edgecal {

const char* const TRASH_PREFIX = ".trash-";

namespace {

const int DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
const int MAX_WALK_DEPTH = 32;
const char* const REQUEST = "request.json";

struct Busy {};  // the folder is in use: changed too recently, locked, too deep or swapped

double mtime_of(const struct stat& st) {
    return double(st.st_mtim.tv_sec) + double(st.st_mtim.tv_nsec) * 1e-9;
}

bool same(const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The names in folder fd (not . and ..).
std::vector<std::string> list_dir(int fd) {
    int dup = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup < 0) throw SysError(errno, ".");
    DIR* d = ::fdopendir(dup);
    if (!d) {
        int e = errno;
        ::close(dup);
        throw SysError(e, ".");
    }
    std::vector<std::string> names;
    while (struct dirent* ent = ::readdir(d)) {
        std::string n = ent->d_name;
        if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    return names;
}

double newest_mtime(int fd, int depth) {
    if (depth > MAX_WALK_DEPTH) throw Busy();
    struct stat st;
    if (::fstat(fd, &st) != 0) throw SysError(errno, ".");
    double newest = mtime_of(st);
    for (const auto& name : list_dir(fd)) {
        struct stat est;
        if (::fstatat(fd, name.c_str(), &est, AT_SYMLINK_NOFOLLOW) != 0) throw SysError(errno, name);
        newest = std::max(newest, mtime_of(est));
        if (S_ISDIR(est.st_mode)) {
            Fd sub(::openat(fd, name.c_str(), DIR_FLAGS));
            if (!sub) throw SysError(errno, name);
            struct stat sst;
            if (::fstat(sub.get(), &sst) != 0 || !same(est, sst)) throw Busy();
            newest = std::max(newest, newest_mtime(sub.get(), depth + 1));
        }
    }
    return newest;
}

void remove_tree(int fd, int depth) {
    if (depth > MAX_WALK_DEPTH) throw Busy();
    for (const auto& name : list_dir(fd)) {
        struct stat st;
        if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw SysError(errno, name);
        if (S_ISDIR(st.st_mode)) {
            {
                Fd sub(::openat(fd, name.c_str(), DIR_FLAGS));
                if (!sub) throw SysError(errno, name);
                remove_tree(sub.get(), depth + 1);
            }
            if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) != 0) throw SysError(errno, name);
        } else if (::unlinkat(fd, name.c_str(), 0) != 0) {
            throw SysError(errno, name);
        }
    }
}

// Remove jobs/<name> if it is a real folder, stale and unlocked; whether it did.
bool remove_if_stale(int jobs_fd, const std::string& name, double older_than_s, double now) {
    struct stat st;
    if (::fstatat(jobs_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw SysError(errno, name);
    if (!S_ISDIR(st.st_mode)) return false;
    Fd fd(::openat(jobs_fd, name.c_str(), DIR_FLAGS));
    if (!fd) throw SysError(errno, name);
    struct stat fst;
    if (::fstat(fd.get(), &fst) != 0 || !same(st, fst)) return false;
    try {
        if (now - newest_mtime(fd.get(), 0) < older_than_s) return false;
        // hold the folder's request exclusively (Busy if a running job holds it)
        Fd req(::openat(fd.get(), REQUEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
        if (req && ::flock(req.get(), LOCK_EX | LOCK_NB) != 0) throw Busy();
        std::string trash = name;
        if (name.compare(0, 7, TRASH_PREFIX) != 0) {
            trash = std::string(TRASH_PREFIX) + random_hex(8);
            if (::renameat(jobs_fd, name.c_str(), jobs_fd, trash.c_str()) != 0) {
                throw SysError(errno, name);
            }
        }
        struct stat moved;
        bool ok = ::fstatat(jobs_fd, trash.c_str(), &moved, AT_SYMLINK_NOFOLLOW) == 0 &&
                  same(moved, fst);
        if (!ok || now - newest_mtime(fd.get(), 0) < older_than_s) {
            if (trash != name) {  // changed meanwhile: it keeps its name
                struct stat taken;
                if (::fstatat(jobs_fd, name.c_str(), &taken, AT_SYMLINK_NOFOLLOW) == 0) return false;
                ::renameat(jobs_fd, trash.c_str(), jobs_fd, name.c_str());
            }
            return false;
        }
        remove_tree(fd.get(), 0);
        if (::unlinkat(jobs_fd, trash.c_str(), AT_REMOVEDIR) != 0) throw SysError(errno, trash);
    } catch (const Busy&) {
        return false;
    }
    return true;
}

}  // namespace

void lock_running(int request_fd) { ::flock(request_fd, LOCK_SH); }

std::vector<std::string> remove_stale(const Workdir& wd, double older_than_s) {
    std::vector<std::string> removed;
    const double now = std::chrono::duration<double>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    Fd jobs_fd;
    try {
        jobs_fd = wd.open_dir_parts({"jobs"});
    } catch (const SysError&) {
        return removed;  // none yet, or not a real folder: nothing to clean
    }
    std::vector<std::string> names;
    try {
        names = list_dir(jobs_fd.get());
    } catch (const SysError&) {
        return removed;
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        bool gone = false;
        try {
            gone = remove_if_stale(jobs_fd.get(), name, older_than_s, now);
        } catch (const SysError&) {
            continue;
        }
        if (gone && name.compare(0, 7, TRASH_PREFIX) != 0) removed.push_back(name);
    }
    return removed;
}

}  // namespace edgecal
