// The `loom` subcommands. Each returns the process exit code; errors are thrown (UserError for
// the user's mistakes) and turned into one printed sentence by main.
#pragma once

#include <string>
#include <vector>

namespace loom {

int run_train(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);

}  // namespace loom
