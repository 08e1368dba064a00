#include "hello.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include <cpu.h>
#include <platform.h>

namespace edgecal {

namespace {

const char* const CPU_FEATURES[] = {
    "neon",   "asimd",    "asimdhp",  "asimddp",     "asimdrdm",  "fphp",        "i8mm",
    "bf16",   "sve",      "sve2",     "sse2",        "sse4_1",    "avx",         "avx2",
    "fma",    "f16c",     "avx512f",  "avx512bw",    "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16"};

const char* target_name() {
#if defined(__x86_64__)
    return "x86_64";
#elif defined(__aarch64__)
    return "aarch64";
#elif defined(__arm__)
    return "armv7";
#else
    return "unknown";
#endif
}

std::string lower_strip(std::string s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    size_t e = s.find_last_not_of(" \t\r\n");
    s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
    for (auto& c : s) c = char(std::tolower((unsigned char)c));
    return s;
}

}  // namespace

std::vector<std::string> cpu_features(const std::string& cpuinfo) {
    std::set<std::string> found;
    std::istringstream in(cpuinfo);
    std::string line;
    while (std::getline(in, line)) {
        size_t colon = line.find(':');
        std::string key = lower_strip(line.substr(0, colon));
        if (key != "flags" && key != "features") continue;
        if (colon == std::string::npos) continue;
        std::istringstream words(line.substr(colon + 1));
        std::string w;
        while (words >> w) found.insert(w);
    }
    std::vector<std::string> out;
    for (const char* f : CPU_FEATURES) {
        if (found.count(f)) out.push_back(f);
    }
    return out;
}

nlohmann::json hello_info() {
    struct utsname u;
    std::string machine = "", system = "";
    if (::uname(&u) == 0) {
        machine = u.machine;
        system = u.sysname;
    }
    long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
    nlohmann::json info = {
        {"agent_version", EDGECAL_AGENT_VERSION},
        {"protocol", EDGECAL_PROTOCOL},
        {"python", nullptr},
        {"numpy", nullptr},
        {"machine", machine},
        {"system", system},
        {"cores", cores > 0 ? cores : 1},
        {"agent_kind", "native"},
        {"target", target_name()},
        {"ncnn", NCNN_VERSION_STRING},
        {"ncnn_ok", true},
    };
    std::ifstream f("/proc/cpuinfo");
    if (f) {
        std::stringstream ss;
        ss << f.rdbuf();
        info["cpu_features"] = cpu_features(ss.str());
    } else {
        info["cpu_features"] = nlohmann::json::array();
    }
    info["ncnn_cpu"] = {
        {"arm_asimdhp", ncnn::cpu_support_arm_asimdhp() != 0},
        {"arm_neon", ncnn::cpu_support_arm_neon() != 0},
        {"x86_avx", ncnn::cpu_support_x86_avx() != 0},
        {"x86_avx2", ncnn::cpu_support_x86_avx2() != 0},
    };
    return info;
}

}  // namespace edgecal
