// `loom --help` lists every command and `loom <command> --help` every option the command
// accepts (taken from the commands' FlagSpec tables, so a new flag cannot go unlisted); unknown
// commands, subcommands and flags are one sentence and exit code 2.
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "launch/loom_process.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;

struct CommandFlags {
  std::string command;  // as typed after `loom`
  std::vector<std::string> flags;
};

std::vector<std::string> names_of(const std::vector<FlagSpec>& specs) {
  std::vector<std::string> names;
  for (const FlagSpec& s : specs) names.push_back(s.name);
  return names;
}

std::vector<CommandFlags> every_command() {
  return {
      {"train", names_of(train_flags())},
      {"generate", names_of(generate_flags())},
      {"eval", names_of(eval_flags())},
      {"prepare", names_of(prepare_flags())},
      {"tokenizer train", names_of(tokenizer_train_flags())},
      {"tokenizer encode", names_of(tokenizer_encode_flags())},
      {"tokenizer decode", names_of(tokenizer_decode_flags())},
      {"tokenizer info", names_of(tokenizer_info_flags())},
      {"ckpt inspect", names_of(ckpt_inspect_flags())},
      {"ckpt export", names_of(ckpt_export_flags())},
      {"ckpt import", names_of(ckpt_import_flags())},
      {"plot", names_of(plot_flags())},
  };
}

// The options a help text lists: the "--name" that start its lines under "options:".
std::set<std::string> listed_options(const std::string& help) {
  std::set<std::string> names;
  const size_t options = help.find("\noptions:\n");
  if (options == std::string::npos) return names;
  static const std::regex line(R"(\n  --([a-z0-9-]+))");
  const std::string section = help.substr(options);
  for (auto it = std::sregex_iterator(section.begin(), section.end(), line); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
  }
  return names;
}

TEST(HelpCliTest, TopLevelHelpListsEveryCommand) {
  for (const std::string flag : {"--help", "-h", "help"}) {
    const RunResult r = run_loom(flag);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    for (const std::string command : {"train", "generate", "eval", "tokenizer", "prepare", "ckpt", "plot", "version"}) {
      EXPECT_NE(r.out.find("\n  " + command + " "), std::string::npos) << command << " not listed:\n" << r.out;
    }
  }
  const RunResult bare = run_loom("");
  EXPECT_EQ(bare.exit_code, 2) << "no command: the usage, on stderr";
  EXPECT_NE(bare.err.find("usage: loom <command>"), std::string::npos) << bare.err;
}

TEST(HelpCliTest, CommandsWithSubcommandsListThem) {
  const RunResult tokenizer = run_loom("tokenizer --help");
  ASSERT_EQ(tokenizer.exit_code, 0) << tokenizer.out;
  for (const std::string sub : {"train", "encode", "decode", "info"}) {
    EXPECT_NE(tokenizer.out.find("\n  " + sub + " "), std::string::npos) << sub << "\n" << tokenizer.out;
  }
  const RunResult ckpt = run_loom("ckpt --help");
  ASSERT_EQ(ckpt.exit_code, 0) << ckpt.out;
  for (const std::string sub : {"inspect", "export", "import"}) {
    EXPECT_NE(ckpt.out.find("\n  " + sub + " "), std::string::npos) << sub << "\n" << ckpt.out;
  }
}

TEST(HelpCliTest, EveryCommandsHelpListsExactlyTheOptionsItAccepts) {
  for (const CommandFlags& c : every_command()) {
    for (const std::string help : {"--help", "-h"}) {
      const RunResult r = run_loom(c.command + " " + help);
      ASSERT_EQ(r.exit_code, 0) << "loom " << c.command << " " << help << "\n" << r.out;
      EXPECT_EQ(r.err, "") << "help goes to stdout: loom " << c.command;
      EXPECT_EQ(r.out.rfind("usage: loom " + c.command, 0), 0u) << r.out;
      const std::set<std::string> listed = listed_options(r.out);
      EXPECT_EQ(listed, std::set<std::string>(c.flags.begin(), c.flags.end()))
          << "loom " << c.command << " --help lists other options than it accepts:\n" << r.out;
    }
  }
}

TEST(HelpCliTest, UnknownCommandsSubcommandsAndFlagsAreOneSentence) {
  expect_user_error("frobnicate", "unknown command 'frobnicate'");
  expect_user_error("tokenizer frobnicate", "unknown subcommand 'frobnicate' of loom tokenizer");
  expect_user_error("ckpt frobnicate", "unknown subcommand 'frobnicate' of loom ckpt");
  for (const CommandFlags& c : every_command()) {
    expect_user_error(c.command + " --frobnicate", "unknown option --frobnicate for `loom " + c.command + "`");
  }
}

}  // namespace
}  // namespace loom
