// Shared helpers for tests: random inputs, poisoned outputs, and comparisons that print where and
// by how much two arrays differ (index, got, expected, max error).
#pragma once

#include <gtest/gtest.h>

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/check.h"

namespace loom::testing {

// The what() of the UserError `call` throws, or "(no error)".
template <typename Call>
std::string user_error_of(Call&& call) {
  try {
    call();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// The what() of the loom::Error (a broken contract) `call` throws, or "(no error)".
template <typename Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A fresh directory under the system's temporary directory, unique per process and object,
// removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("loom_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string operator/(const std::string& name) const { return file(name); }

 private:
  std::filesystem::path path_;
};

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(n);
  for (float& x : out) x = dist(gen);
  return out;
}

inline std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi_exclusive) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi_exclusive - 1);
  std::vector<int32_t> out(n);
  for (int32_t& x : out) x = dist(gen);
  return out;
}

// A buffer filled with NaN: an element the kernel forgot to write makes the comparison fail.
inline std::vector<float> poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// Passes when |got - expected| <= atol + rtol * |expected| everywhere (NaN never passes).
template <typename Got, typename Expected>
::testing::AssertionResult all_close(const Got& got, const Expected& expected, double rtol,
                                     double atol) {
  if (got.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << " expected " << expected.size();
  }
  double max_err = 0;
  size_t worst = 0;
  size_t bad = 0;
  size_t first_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = static_cast<double>(got[i]);
    double e = static_cast<double>(expected[i]);
    double err = std::fabs(g - e);
    bool ok = err <= atol + rtol * std::fabs(e);  // false for NaN
    if (!ok) {
      if (bad == 0) first_bad = i;
      ++bad;
    }
    if (!(err <= max_err)) {
      max_err = err;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg << bad << " of " << got.size() << " elements differ; first at index " << first_bad
      << ": got " << got[first_bad] << " expected " << expected[first_bad]
      << "; max error " << max_err << " at index " << worst << " (got " << got[worst]
      << " expected " << expected[worst] << "), rtol " << rtol << " atol " << atol;
  return ::testing::AssertionFailure() << msg.str();
}

// Passes when every float of got has the bit pattern of expected's (so -0 != +0, NaN == same NaN).
inline ::testing::AssertionResult bitwise_equal(const std::vector<float>& got,
                                                const std::vector<float>& expected) {
  if (got.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << " expected " << expected.size();
  }
  size_t bad = 0;
  size_t first_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &expected[i], sizeof(float)) != 0 && bad++ == 0) first_bad = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg.precision(9);
  msg << bad << " of " << got.size() << " elements differ bitwise; first at index " << first_bad
      << ": got " << got[first_bad] << " expected " << expected[first_bad];
  return ::testing::AssertionFailure() << msg.str();
}

// Sets the OpenMP thread count for a scope and restores the previous one.
class ScopedThreadCount {
 public:
  explicit ScopedThreadCount(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedThreadCount() { omp_set_num_threads(saved_); }
  ScopedThreadCount(const ScopedThreadCount&) = delete;
  ScopedThreadCount& operator=(const ScopedThreadCount&) = delete;

 private:
  int saved_;
};

// ||got - expected|| / ||expected||, in double.
template <typename Got, typename Expected>
double relative_l2(const Got& got, const Expected& expected) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = static_cast<double>(got[i]) - static_cast<double>(expected[i]);
    num += d * d;
    den += static_cast<double>(expected[i]) * static_cast<double>(expected[i]);
  }
  return std::sqrt(num) / std::sqrt(den > 0 ? den : 1.0);
}

// Checks grad[i] against the central difference (loss(p + h) - loss(p - h)) / 2h for every
// `stride`-th element i of `param` (a double copy of the inputs that `loss` reads), within
// atol + rtol * |difference|. `param` is restored after each probe.
template <typename Loss>
void expect_finite_differences(std::vector<double>& param, const std::vector<float>& grad,
                               Loss&& loss, double h, size_t stride, double rtol, double atol,
                               const char* name) {
  for (size_t i = 0; i < param.size(); i += stride) {
    const double saved = param[i];
    param[i] = saved + h;
    const double plus = loss();
    param[i] = saved - h;
    const double minus = loss();
    param[i] = saved;
    const double difference = (plus - minus) / (2 * h);
    EXPECT_NEAR(grad[i], difference, atol + rtol * std::fabs(difference)) << name << " index " << i;
  }
}

}  // namespace loom::testing
