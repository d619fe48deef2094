#include "core/base/version.h"

#include "core/base/version_info.h"

namespace loom {

const char* version() { return kVersionNumber; }

const char* build_commit() { return kBuildCommit; }

std::string version_line() { return version_line(version(), build_commit()); }

std::string version_line(const char* number, const char* commit) {
  return std::string("loom ") + number + " (" + commit + ")";
}

}  // namespace loom
