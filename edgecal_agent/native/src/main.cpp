// edgecal-agent-native: the command line of the Python agent (__main__.py).
//
//   edgecal-agent-native serve --workdir W [--root R]       persistent: job ids on stdin
//   edgecal-agent-native run-job --workdir W [--root R] ID  one job directory
//   edgecal-agent-native hello                              the hello facts as JSON
//   edgecal-agent-native --version
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "hello.h"
#include "server.h"
#include "workdir.h"

namespace {

const char* const USAGE =
    "usage: edgecal-agent-native [--version] {serve,run-job,hello} ...\n"
    "  serve --workdir W [--root R]       run jobs whose ids arrive on stdin\n"
    "  run-job --workdir W [--root R] ID  run one job directory\n"
    "  hello                              print the device facts as JSON\n";

int usage_error(const std::string& why) {
    std::fprintf(stderr, "%sedgecal-agent-native: error: %s\n", USAGE, why.c_str());
    return 2;
}

// A crash inside ncnn (SIGSEGV on a malformed model): say so on stderr, then die of the
// signal as before (the host reads the exit status).
void on_fatal(int sig) {
    const char* name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE"
                       : sig == SIGILL ? "SIGILL" : "SIGABRT";
    const char head[] = "edgecal-agent-native: fatal signal ";
    ssize_t ignored = ::write(2, head, sizeof head - 1);
    ignored = ::write(2, name, std::strlen(name));
    ignored = ::write(2, "\n", 1);
    (void)ignored;
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

// Reserve the real stdout for protocol lines: fd 1 then points at stderr, so nothing else
// printing to it (ncnn) can corrupt the protocol stream.
FILE* protocol_stdout() {
    std::fflush(stdout);
    int fd = ::dup(1);
    ::dup2(2, 1);
    FILE* f = fd >= 0 ? ::fdopen(fd, "w") : nullptr;
    return f ? f : stderr;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage_error("the following arguments are required: command");
    if (args[0] == "--version") {
        std::printf("%s\n", EDGECAL_AGENT_VERSION);
        return 0;
    }
    if (args[0] == "-h" || args[0] == "--help") {
        std::printf("%s", USAGE);
        return 0;
    }
    const std::string command = args[0];
    if (command == "hello") {
        if (args.size() > 1) return usage_error("unrecognized arguments");
        FILE* proto = protocol_stdout();
        std::string text = edgecal::hello_info().dump(1, ' ', true) + "\n";
        std::fputs(text.c_str(), proto);
        std::fflush(proto);
        return 0;
    }
    if (command != "serve" && command != "run-job") {
        return usage_error("argument command: invalid choice: '" + command +
                           "' (choose from 'serve', 'run-job', 'hello')");
    }
    std::string workdir, job_id;
    bool have_workdir = false, have_root = false;
    std::string root;
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&](const std::string& flag, std::string& out) -> bool {
            if (a == flag) {
                if (i + 1 >= args.size()) return false;
                out = args[++i];
                return true;
            }
            if (a.compare(0, flag.size() + 1, flag + "=") == 0) {
                out = a.substr(flag.size() + 1);
                return true;
            }
            return false;
        };
        if (a == "--workdir" || a.compare(0, 10, "--workdir=") == 0) {
            if (!value("--workdir", workdir)) return usage_error("argument --workdir: expected one argument");
            have_workdir = true;
        } else if (a == "--root" || a.compare(0, 7, "--root=") == 0) {
            if (!value("--root", root)) return usage_error("argument --root: expected one argument");
            have_root = true;
        } else if (command == "run-job" && job_id.empty() && (a.empty() || a[0] != '-')) {
            job_id = a;
        } else {
            return usage_error("unrecognized arguments: " + a);
        }
    }
    if (!have_workdir) return usage_error("the following arguments are required: --workdir");
    if (command == "run-job" && job_id.empty()) {
        return usage_error("the following arguments are required: job_id");
    }
    std::unique_ptr<edgecal::Workdir> wd;
    try {
        wd = std::make_unique<edgecal::Workdir>(
            edgecal::check_workdir(workdir, have_root ? &root : nullptr), true);
    } catch (const edgecal::JobError& e) {
        std::fprintf(stderr, "edgecal-agent: %s: %s\n", e.kind.c_str(), e.what());
        return 2;
    }
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(sig, on_fatal);
    if (command == "run-job") {
        try {
            edgecal::Response r = edgecal::run_job(*wd, job_id, stderr);
            return r.ok ? 0 : 1;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "edgecal-agent: %s\n", e.what());
            return 1;
        }
    }
    FILE* proto = protocol_stdout();
    return edgecal::serve(*wd, stdin, proto, stderr);
}
