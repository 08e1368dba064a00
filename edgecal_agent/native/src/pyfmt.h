// Python's spelling of values in messages (repr of str, float, list), so the native agent's
// messages read like the Python agent's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgecal {

std::string py_repr(const std::string& s);
std::string py_float(double v);
std::string py_str_list(const std::vector<std::string>& items);
// a numpy shape as Python prints the tuple: (3, 4), (5,), ()
std::string py_shape(const std::vector<int64_t>& shape);
// items joined by sep
std::string join(const std::vector<std::string>& items, const std::string& sep);

}  // namespace edgecal
