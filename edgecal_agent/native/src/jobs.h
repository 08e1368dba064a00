// Op handlers (jobs.py): each takes the job context and returns (result, artifacts).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "messages.h"
#include "workdir.h"

namespace edgecal {

using Progress = std::function<void(int64_t done, int64_t total)>;

// One job's view of the device: every file it names is reached through the work directory.
struct JobContext {
    const Workdir& workdir;
    int job_fd;
    std::string job_id;
    const Request& request;
    Progress progress;
    std::map<std::string, double>& timing_s;

    // Workdir file rel, open for reading; a pushed input (files/<sha256>/<name>) is checked
    // against its sha256 first and removed if it does not match (InputCorrupt).
    Fd open_input(const std::string& rel, const std::string& what) const;
    // The bytes of job-relative file rel (BadRequest).
    std::string read_job_file(const std::string& rel) const;
    // (name, {"file", "sha256"}) of an artifact this job wrote (ArtifactMissing).
    std::pair<std::string, json> artifact(const std::string& name) const;
};

struct OpResult {
    json result = json::object();
    json artifacts = json::object();
};

// Run the request's op.
OpResult run_op(JobContext& ctx);

}  // namespace edgecal
