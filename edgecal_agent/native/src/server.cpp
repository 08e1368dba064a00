#include "server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <new>

#include "errors.h"
#include "jobdirs.h"
#include "jobs.h"

namespace edgecal {

namespace {

int64_t peak_rss_kb() {
    struct rusage ru;
    if (::getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return int64_t(ru.ru_maxrss);
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

json error_info(const std::string& kind, const std::string& message, const json& details) {
    json e = {{"kind", kind},
              {"message", message},
              {"traceback", "Traceback (native agent " EDGECAL_AGENT_VERSION
                            ", no Python stack):\n" + kind + ": " + message + "\n"}};
    if (details.is_object() && !details.empty()) e["details"] = details;
    return e;
}

}  // namespace

Response run_job(const Workdir& wd, const std::string& job_id, FILE* progress_to) {
    check_job_id(job_id);
    const double t_start = now_s();
    Response response;
    response.op = "unknown";
    response.job_id = job_id;
    Fd job_fd;
    try {
        try {
            job_fd = wd.open_dir_parts({JOBS_DIR, job_id});
        } catch (const SysError& e) {
            throw BadRequest(std::string("job folder ") + JOBS_DIR + "/" + job_id +
                             " is not a real folder in the work directory: " +
                             std::strerror(e.err));
        }
        const std::string where = std::string(JOBS_DIR) + "/" + job_id + "/" + REQUEST_FILE;
        Fd req_fd = open_file_at(job_fd.get(), REQUEST_FILE, where, "request");
        json raw;
        try {
            const std::string text = read_limited(req_fd.get(), MAX_REQUEST_BYTES,
                                                  std::string(REQUEST_FILE) + " of job " + job_id,
                                                  "request");
            raw = json::parse(text);
        } catch (const json::exception& e) {
            throw BadRequest(std::string("cannot read ") + REQUEST_FILE + " of job " + job_id +
                             ": " + e.what());
        } catch (const SysError& e) {
            throw BadRequest(std::string("cannot read ") + REQUEST_FILE + " of job " + job_id +
                             ": " + e.what());
        }
        if (raw.is_object() && raw.contains("op") && raw["op"].is_string()) {
            response.op = raw["op"].get<std::string>();
        }
        Request request;
        try {
            request = Request::from_json(raw);
        } catch (const ProtocolViolation& e) {
            if (e.mismatch) throw JobError("ProtocolMismatch", e.what());
            throw BadRequest(std::string("cannot read ") + REQUEST_FILE + " of job " + job_id +
                             ": " + e.what());
        }
        if (request.job_id != job_id) {
            throw BadRequest("request.json names job '" + request.job_id + "', run as '" + job_id +
                             "'");
        }
        std::string id = job_id;
        Progress progress = [id, progress_to](int64_t done, int64_t total) {
            std::fprintf(progress_to, "%s %s %lld %lld\n", PROGRESS_PREFIX, id.c_str(),
                         (long long)done, (long long)total);
            std::fflush(progress_to);
        };
        JobContext ctx{wd, job_fd.get(), job_id, request, progress, response.timing_s};
        lock_running(req_fd.get());
        try {
            OpResult r = run_op(ctx);
            response.result = std::move(r.result);
            response.artifacts = std::move(r.artifacts);
        } catch (const SysError& e) {
            throw JobError("DeviceFileError", "job " + job_id +
                                                  ": a file operation in the work directory failed: " +
                                                  e.what());
        }
        response.ok = true;
    } catch (const JobError& e) {
        response.ok = false;
        response.error = error_info(e.kind, e.what(), e.details);
    } catch (const std::bad_alloc& e) {
        response.ok = false;
        response.error = error_info(
            "OutOfMemory",
            "out of memory (" + std::string(e.what()) + ") in job " + job_id + " (" + response.op +
                "): the model or its inputs need more memory than this device gives",
            json::object());
    } catch (const std::domain_error& e) {
        response.ok = false;
        response.error = error_info("ValueError", e.what(), json::object());
    } catch (const ProtocolViolation& e) {
        response.ok = false;
        response.error = error_info("ProtocolViolation", e.what(), json::object());
    } catch (const std::exception& e) {
        response.ok = false;
        response.error = error_info("RuntimeError", e.what(), json::object());
    }
    if (!response.ok) {
        response.result = json::object();
        response.artifacts = json::object();
    }
    response.timing_s["total"] = now_s() - t_start;
    response.ru_maxrss_kb = peak_rss_kb();
    if (job_fd) write_atomic_at(job_fd.get(), RESPONSE_FILE, response.dumps());
    return response;
}

int serve(const Workdir& wd, FILE* in, FILE* out, FILE* err) {
    std::vector<std::string> removed = remove_stale(wd);
    if (!removed.empty()) {
        std::fprintf(err, "edgecal-agent: removed %zu job folder(s) left by earlier runs\n",
                     removed.size());
        std::fflush(err);
    }
    std::fprintf(out, "%s %d %s\n", READY_PREFIX, EDGECAL_PROTOCOL, EDGECAL_AGENT_VERSION);
    std::fflush(out);
    for (;;) {
        std::string line;
        bool eof = false, too_long = false;
        for (;;) {
            int c = std::fgetc(in);
            if (c == EOF) {
                eof = true;
                break;
            }
            if (line.size() <= MAX_JOB_LINE) {
                line += char(c);
            } else {
                too_long = true;
            }
            if (c == '\n') break;
        }
        if (line.empty() && eof) return 0;
        if (too_long || line.size() > MAX_JOB_LINE) {
            std::fprintf(err,
                         "edgecal-agent: BadRequest: a job id line longer than %zu characters "
                         "was refused\n",
                         MAX_JOB_LINE);
            std::fflush(err);
            if (eof) return 0;
            continue;
        }
        size_t b = line.find_first_not_of(" \t\r\n\v\f");
        size_t e = line.find_last_not_of(" \t\r\n\v\f");
        const std::string job_id = b == std::string::npos ? "" : line.substr(b, e - b + 1);
        if (!job_id.empty()) {
            if (job_id == "quit") return 0;
            try {
                run_job(wd, job_id, out);  // progress on stdout: in order with the DONE line
            } catch (const ProtocolViolation& ex) {
                std::fprintf(err, "edgecal-agent: %s\n", ex.what());
                std::fflush(err);
            } catch (const SysError& ex) {
                std::fprintf(err, "edgecal-agent: cannot answer job %s: %s\n", job_id.c_str(),
                             ex.what());
                std::fflush(err);
            }
            std::fprintf(out, "%s %s\n", DONE_PREFIX, job_id.c_str());
            std::fflush(out);
        }
        if (eof) return 0;
    }
}

}  // namespace edgecal
