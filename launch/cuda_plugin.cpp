// Finding and loading the CUDA plugin (cuda_plugin.h).
#include "launch/cuda_plugin.h"

#include <dlfcn.h>

#include <filesystem>
#include <system_error>
#include <vector>

#include "core/base/check.h"
#include "core/base/version.h"

// Defined where the CUDA code is linked in (the tests, the benchmarks, users of loom_lib); in
// `loom` nothing defines it, so this weak reference is null and the plugin is loaded instead.
extern "C" const loom::CudaPlugin* loom_cuda_plugin(const char* version_line, const char** built_from)
    __attribute__((weak));

namespace loom {

namespace {

namespace fs = std::filesystem;

#ifdef LOOM_HAS_CUDA
constexpr bool kCudaBuiltIn = true;
#else
constexpr bool kCudaBuiltIn = false;
#endif

// Where the plugin may be, in order: next to the executable (a build tree), then the library
// folder of an installation, relative to its bin/ (LOOM_CUDA_PLUGIN_LIBDIR, from CMake).
std::vector<fs::path> plugin_candidates() {
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  const fs::path dir = error ? fs::path(".") : exe.parent_path();
  return {dir / LOOM_CUDA_PLUGIN_FILE, (dir / LOOM_CUDA_PLUGIN_LIBDIR / LOOM_CUDA_PLUGIN_FILE).lexically_normal()};
}

// The plugin, or the sentence that says why there is none.
struct Loaded {
  const CudaPlugin* plugin = nullptr;
  std::string error;
};

constexpr const char* kNeeds = "a GPU run needs the CUDA plugin of this loom, but";
constexpr const char* kFix = "; rebuild or reinstall Loom with CUDA, or train on the CPU (train.device: DEVICE_CPU)";

Loaded checked(const std::string& what, decltype(&loom_cuda_plugin) entry) {
  const char* built_from = "";
  const CudaPlugin* plugin = entry(version_line().c_str(), &built_from);
  if (plugin != nullptr) return {plugin, ""};
  return {nullptr, str_cat(kNeeds, what, "was built from", std::string(built_from) + ", not from this",
                           version_line() + "; rebuild Loom, or install its loom and plugin together")};
}

Loaded load() {
  if (!kCudaBuiltIn) {
    return {nullptr, "this loom was built without CUDA, so it cannot train on a GPU (configure with -DLOOM_CUDA=ON on "
                     "a machine with the CUDA toolkit)"};
  }
  if (loom_cuda_plugin != nullptr) return checked("the CUDA code linked into this program", loom_cuda_plugin);
  const std::vector<fs::path> candidates = plugin_candidates();
  fs::path file = candidates.front();
  for (const fs::path& candidate : candidates) {
    if (fs::exists(candidate)) {
      file = candidate;
      break;
    }
  }
  void* library = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const std::string said = dlerror();
    if (!fs::exists(file)) {
      return {nullptr, str_cat(kNeeds, "neither", candidates[0].string(), "nor", candidates[1].string(),
                               "exists (dlopen:", said + ")" + kFix)};
    }
    return {nullptr, str_cat(kNeeds, "dlopen cannot load", file.string() + ":", said + kFix)};
  }
  auto* entry = reinterpret_cast<decltype(&loom_cuda_plugin)>(dlsym(library, "loom_cuda_plugin"));
  if (entry == nullptr) {
    return {nullptr, str_cat(kNeeds, file.string(), "is not one (dlsym:", std::string(dlerror()) + ")" + kFix)};
  }
  return checked(file.string(), entry);
}

}  // namespace

const CudaPlugin& cuda_plugin() {
  // Loaded once per process, as dlopen keeps a library once: the answer, plugin or error, stands.
  static const Loaded loaded = load();
  if (loaded.plugin == nullptr) throw UserError(loaded.error);
  return *loaded.plugin;
}

bool cuda_built_in() { return kCudaBuiltIn; }

std::string cuda_build_line() {
  if (!kCudaBuiltIn) return "CUDA: not built in";
  if (loom_cuda_plugin != nullptr) return "CUDA: built in, linked into this program";
  const std::vector<fs::path> candidates = plugin_candidates();
  for (const fs::path& candidate : candidates) {
    if (fs::exists(candidate)) return str_cat("CUDA: built in, loaded by GPU runs from", LOOM_CUDA_PLUGIN_FILE);
  }
  return str_cat("CUDA: built in, but its plugin is missing (neither", candidates[0].string(), "nor",
                 candidates[1].string(), "exists): GPU runs will fail");
}

}  // namespace loom
