#include "core/base/check.h"

namespace loom::detail {

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  std::ostringstream out;
  out << file << ":" << line << ": check failed (" << condition << ")";
  if (!message.empty()) out << ": " << message;
  throw Error(out.str());
}

}  // namespace loom::detail
