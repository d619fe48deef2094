// Errors and always-on checks.
//
// Library code never prints and never exits: a broken contract throws loom::Error whose message
// carries the offending values. Only launch/ decides to print the message and exit non-zero.
// LOOM_CHECK stays on in release builds; use it for every runtime contract (never `assert`).
//
//   LOOM_CHECK(C % NH == 0, "n_head", NH, "must divide n_embd", C);
//   -> "check failed (C % NH == 0): n_head 6 must divide n_embd 256", location "core/gpt.cpp:42"
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace loom {

// Thrown for every violated contract. `what()` is one readable sentence; launch/ prints it as is.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string location = "")
      : std::runtime_error(message), location_(std::move(location)) {}
  // "core/gpt.cpp:42" for a failed LOOM_CHECK, else "". Kept out of what(): a user reads what(),
  // a developer asks for the location (launch/main.cpp prints it under LOOM_DEBUG=1).
  const std::string& location() const { return location_; }

 private:
  std::string location_;
};

// A mistake in what the user gave us (config, flag, file). Printed without source location.
class UserError : public Error {
 public:
  explicit UserError(const std::string& message) : Error(message) {}
};

namespace detail {

template <typename... Parts>
std::string concat_spaced(const Parts&... parts) {
  std::ostringstream out;
  bool first = true;
  ((out << (first ? "" : " ") << parts, first = false), ...);
  return out.str();
}

[[noreturn]] void throw_check_failure(const char* file, int line, const char* condition,
                                      const std::string& message);

}  // namespace detail

// Builds a message from parts separated by spaces: str_cat("n_head", 6) == "n_head 6".
template <typename... Parts>
std::string str_cat(const Parts&... parts) {
  return detail::concat_spaced(parts...);
}

// Throws UserError with the parts joined by spaces.
template <typename... Parts>
[[noreturn]] void fail_user(const Parts&... parts) {
  throw UserError(detail::concat_spaced(parts...));
}

}  // namespace loom

#define LOOM_CHECK(condition, ...)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      ::loom::detail::throw_check_failure(__FILE__, __LINE__, #condition,                     \
                                          ::loom::detail::concat_spaced(__VA_ARGS__));        \
    }                                                                                         \
  } while (0)
