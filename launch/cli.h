// Command-line parsing shared by the subcommands: flags of the form --name value or
// --name=value, repeated --set, positionals; -h is --help; an unknown flag is a UserError naming
// it.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace loom {

struct FlagSpec {
  std::string name;      // without dashes
  std::string value;     // placeholder shown in help ("" for a switch)
  std::string help;
  bool repeated = false;
};

struct ParsedArgs {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>> flags;  // name -> values (switch: {"1"})
  bool has(const std::string& name) const { return flags.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback) const;
  int get_int(const std::string& name, int fallback) const;
  float get_float(const std::string& name, float fallback) const;
};

ParsedArgs parse_args(const std::string& command, const std::vector<std::string>& args,
                      const std::vector<FlagSpec>& specs);
std::string usage_text(const std::string& synopsis, const std::string& about,
                       const std::vector<FlagSpec>& specs);

}  // namespace loom
