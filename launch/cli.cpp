#include "launch/cli.h"

#include <sstream>

#include "core/base/check.h"

namespace loom {

std::string ParsedArgs::get(const std::string& name, const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second.back();
}

int ParsedArgs::get_int(const std::string& name, int fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name, "");
  size_t used = 0;
  int out = 0;
  try {
    out = std::stoi(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) fail_user("--" + name, "expects an integer, got '" + v + "'");
  return out;
}

float ParsedArgs::get_float(const std::string& name, float fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name, "");
  size_t used = 0;
  float out = 0;
  try {
    out = std::stof(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) fail_user("--" + name, "expects a number, got '" + v + "'");
  return out;
}

ParsedArgs parse_args(const std::string& command, const std::vector<std::string>& args,
                      const std::vector<FlagSpec>& specs) {
  ParsedArgs parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i] == "-h" ? std::string("--help") : args[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      parsed.positionals.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (!spec) fail_user("unknown option --" + name, "for `loom " + command + "`; see `loom", command, "--help`");
    if (spec->value.empty()) {
      if (inline_value) fail_user("--" + name, "takes no value");
      value = "1";
    } else if (!inline_value) {
      if (i + 1 >= args.size()) fail_user("--" + name, "expects a value (" + spec->value + ")");
      value = args[++i];
    }
    if (!spec->repeated && parsed.has(name)) fail_user("--" + name, "given twice");
    parsed.flags[name].push_back(value);
  }
  return parsed;
}

std::string usage_text(const std::string& synopsis, const std::string& about,
                       const std::vector<FlagSpec>& specs) {
  std::ostringstream out;
  out << "usage: " << synopsis << "\n\n" << about << "\n\noptions:\n";
  for (const FlagSpec& s : specs) {
    std::string left = "  --" + s.name + (s.value.empty() ? "" : " " + s.value);
    out << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << s.help
        << (s.repeated ? " (repeatable)" : "") << "\n";
  }
  return out.str();
}

}  // namespace loom
