#include "core/base/check.h"

namespace loom::detail {

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  std::ostringstream out;
  out << "check failed (" << condition << ")";
  if (!message.empty()) out << ": " << message;
  throw Error(out.str(), std::string(file) + ":" + std::to_string(line));
}

}  // namespace loom::detail
