// The `loom` executable: dispatches to one subcommand and is the only place that turns an error
// into a printed sentence and an exit code (2: the user's input; 1: an internal failure).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "launch/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: loom <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train a GPT (default: the built-in addition demo)\n"
    "  generate   continue a prompt with a trained model\n"
    "\n"
    "`loom <command> --help` lists a command's options. Docs: docs/.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "train") return loom::run_train(args);
    if (command == "generate") return loom::run_generate(args);
    std::fprintf(stderr, "loom: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const loom::UserError& e) {
    std::fprintf(stderr, "loom %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom %s: internal error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
