// Hashing once per file state (fileio.py), with the same ".<name>.sha256" marker beside the
// file the Python agent writes and reads (either agent trusts the other's marker).
#pragma once

#include <string>

namespace edgecal {

// An open file's identity and state: "dev ino size mtime_ns ctime_ns".
std::string fd_state(int fd);
// sha256 of the open file fd from its start (leaves it at its start).
std::string sha256_fd(int fd);
// sha256 of fd, the open file name in folder dfd, hashed once per file state.
std::string sha256_cached_at(int dfd, const std::string& name, int fd);

}  // namespace edgecal
