// Errors a job can fail with (errors.py): the kind travels to the host as the error's "kind".
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace edgecal {

// A job failed for a reason the agent understands; kind names it on the wire, details (JSON)
// travel with it for the host.
class JobError : public std::runtime_error {
public:
    JobError(std::string kind, const std::string& message,
             nlohmann::json details = nlohmann::json::object())
        : std::runtime_error(message), kind(std::move(kind)), details(std::move(details)) {}
    std::string kind;
    nlohmann::json details;
};

inline JobError BadRequest(const std::string& m) { return JobError("BadRequest", m); }
inline JobError InputCorrupt(const std::string& m) { return JobError("InputCorrupt", m); }
inline JobError ModelLoadError(const std::string& m) { return JobError("ModelLoadError", m); }
inline JobError BlobNotFound(const std::string& m) { return JobError("BlobNotFound", m); }
inline JobError InputError(const std::string& m) { return JobError("InputError", m); }
inline JobError ExtractError(const std::string& m) { return JobError("ExtractError", m); }
inline JobError ArtifactMissing(const std::string& m) { return JobError("ArtifactMissing", m); }
inline JobError WorkdirRefused(const std::string& m) { return JobError("WorkdirRefused", m); }

// A message or file does not follow the protocol (messages.ProtocolViolation); mismatch: the
// other side speaks another major protocol version (messages.ProtocolMismatch).
class ProtocolViolation : public std::runtime_error {
public:
    explicit ProtocolViolation(const std::string& message, bool mismatch = false)
        : std::runtime_error(message), mismatch(mismatch) {}
    bool mismatch;
};

// A failed system call on a file of the work directory (Python's OSError): errno and text.
class SysError : public std::runtime_error {
public:
    SysError(int err, const std::string& what);
    int err;
};

// "[Errno N] text: what", as Python words an OSError.
std::string errno_text(int err);

}  // namespace edgecal
