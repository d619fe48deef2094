// Which Loom this is: the release version (the CMake project version) and the git commit the
// build's sources were at, as `loom --version` prints them. In core/base so that anything that
// records where its output came from (a checkpoint, a metrics file) may include it.
#pragma once

#include <string>

namespace loom {

// "0.1.0": major.minor.patch of CMakeLists.txt's project().
const char* version();
// The short hash of the commit the sources were built at, with "-dirty" when tracked files
// differed from it; "unknown commit" for sources without git (a tarball) or a build without git.
const char* build_commit();
// "loom 0.1.0 (1a2b3c4)", what `loom --version` prints first.
std::string version_line();
// The same line for another version and commit (the CUDA plugin states its own with it).
std::string version_line(const char* number, const char* commit);

}  // namespace loom
