#include "core/base/version.h"

#include "core/base/version_info.h"

namespace loom {

const char* version() { return kVersionNumber; }

const char* build_commit() { return kBuildCommit; }

std::string version_line() { return std::string("loom ") + version() + " (" + build_commit() + ")"; }

}  // namespace loom
