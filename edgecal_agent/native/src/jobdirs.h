// Job folders (jobdirs.py): the lock a running job holds, and the removal at start of the
// folders earlier hosts left behind.
#pragma once

#include <ctime>
#include <string>
#include <vector>

#include "workdir.h"

namespace edgecal {

constexpr double STALE_AFTER_S = 3600.0;
// Folders being removed are first renamed to this prefix (job ids never start with a dot).
extern const char* const TRASH_PREFIX;

// Hold a shared lock on the open request file while the job runs (released on destruction
// of the caller's descriptor).
void lock_running(int request_fd);

// Remove the job folders under workdir/jobs unchanged for older_than_s and not locked by a
// running job; their names.  Errors leave a folder in place.
std::vector<std::string> remove_stale(const Workdir& wd, double older_than_s = STALE_AFTER_S);

}  // namespace edgecal
