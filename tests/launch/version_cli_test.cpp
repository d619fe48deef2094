// `loom --version` and `loom version`: "loom <version> (<commit>)", where the version is
// CMakeLists.txt's project version and the commit a short git hash (with "-dirty" when tracked
// files had changes) or "unknown commit" for sources without git; then whether the build has CUDA
// (and, in a CUDA build, that the plugin GPU runs load is there).
#include <regex>
#include <string>

#include "core/base/version.h"
#include "launch/loom_process.h"

namespace loom {
namespace {

using testing::run_loom;
using testing::RunResult;

TEST(VersionCliTest, PrintsTheProjectVersionTheCommitAndCuda) {
  static const std::regex line(R"(loom ([0-9]+\.[0-9]+\.[0-9]+) \(([0-9a-f]{7,40}(-dirty)?|unknown commit)\)\n.*\n)");
#ifdef LOOM_HAS_CUDA
  const std::string cuda = "CUDA: built in, loaded by GPU runs from libloom_cuda.so";
#else
  const std::string cuda = "CUDA: not built in";
#endif
  for (const std::string flag : {"--version", "version"}) {
    const RunResult r = run_loom(flag);
    ASSERT_EQ(r.exit_code, 0) << "loom " << flag << "\n" << r.out;
    EXPECT_EQ(r.err, "") << "the version goes to stdout: loom " << flag;
    std::smatch match;
    ASSERT_TRUE(std::regex_match(r.out, match, line)) << "loom " << flag << " printed: " << r.out;
    EXPECT_EQ(match[1].str(), LOOM_PROJECT_VERSION) << "CMake's project version";
    EXPECT_EQ(r.out, version_line() + "\n" + cuda + "\n") << "the executable and the library it was linked with";
  }
}

TEST(VersionCliTest, TheLibraryAnswersThePartsOfTheLine) {
  EXPECT_EQ(std::string(version()), LOOM_PROJECT_VERSION);
  EXPECT_EQ(version_line(), std::string("loom ") + version() + " (" + build_commit() + ")");
}

}  // namespace
}  // namespace loom
