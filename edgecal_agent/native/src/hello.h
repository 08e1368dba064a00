// The hello facts (jobs.hello_info), plus the native agent's own: agent_kind, target.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgecal {

// The interesting CPU features in /proc/cpuinfo text (x86 "flags", ARM "Features").
std::vector<std::string> cpu_features(const std::string& cpuinfo);
nlohmann::json hello_info();

}  // namespace edgecal
