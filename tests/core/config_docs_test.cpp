// docs/config.md documents every field of the run config with its default: the schema
// (core/config.proto) is walked field by field, and each needs a row `| `path` | default | ... |`
// in the section of docs/config.md named after its top-level message, whose default cell states
// the schema's default.
#include <google/protobuf/descriptor.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.pb.h"
#include "test_util.h"

namespace loom {
namespace {

namespace pb = google::protobuf;

std::string read_docs() {
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/docs/config.md");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// section ("model") -> field path within it ("n_layer", "tokens.source.weight") -> default cell.
std::map<std::string, std::map<std::string, std::string>> documented_fields(const std::string& docs) {
  std::map<std::string, std::map<std::string, std::string>> out;
  static const std::regex heading(R"(^## ([a-z_]+)\s*$)");
  static const std::regex row(R"(^\| `([a-z_.0-9]+)` \| ([^|]*) \|)");
  std::istringstream lines(docs);
  std::string line, section;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_match(line, m, heading)) {
      section = m[1];
    } else if (!section.empty() && std::regex_search(line, m, row)) {
      out[section][m[1]] = m[2];
    }
  }
  return out;
}

// Leaf fields under `message`, as paths relative to it.
void leaf_fields(const pb::Descriptor* message, const std::string& prefix,
                 std::vector<std::pair<std::string, const pb::FieldDescriptor*>>* out) {
  for (int i = 0; i < message->field_count(); ++i) {
    const pb::FieldDescriptor* field = message->field(i);
    const std::string path = prefix.empty() ? field->name() : prefix + "." + field->name();
    if (field->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      leaf_fields(field->message_type(), path, out);
    } else {
      out->emplace_back(path, field);
    }
  }
}

std::string trim(std::string s) {
  const size_t begin = s.find_first_not_of(" `");
  const size_t end = s.find_last_not_of(" `");
  return begin == std::string::npos ? "" : s.substr(begin, end - begin + 1);
}

// Whether the cell states `field`'s declared default.
bool states_default(const pb::FieldDescriptor* field, const std::string& raw_cell, std::string* expected) {
  const std::string cell = trim(raw_cell);
  auto number = [&](double value) {
    std::ostringstream text;
    text << value;
    *expected = text.str();
    char* end = nullptr;
    const double got = std::strtod(cell.c_str(), &end);
    return end != cell.c_str() && *end == '\0' && std::abs(got - value) <= 1e-6 * std::max(1.0, std::abs(value));
  };
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: return number(field->default_value_int32());
    case pb::FieldDescriptor::CPPTYPE_INT64: return number(static_cast<double>(field->default_value_int64()));
    case pb::FieldDescriptor::CPPTYPE_UINT32: return number(field->default_value_uint32());
    case pb::FieldDescriptor::CPPTYPE_UINT64: return number(static_cast<double>(field->default_value_uint64()));
    case pb::FieldDescriptor::CPPTYPE_FLOAT: return number(field->default_value_float());
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: return number(field->default_value_double());
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      *expected = field->default_value_bool() ? "true" : "false";
      return cell == *expected;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      *expected = field->default_value_enum()->name();
      return cell == *expected;
    case pb::FieldDescriptor::CPPTYPE_STRING:
      *expected = field->default_value_string();
      return cell == *expected;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: break;
  }
  return false;
}

TEST(ConfigDocsTest, EveryFieldIsDocumentedWithItsDefault) {
  const std::string docs = read_docs();
  ASSERT_FALSE(docs.empty()) << "cannot read docs/config.md";
  const auto documented = documented_fields(docs);
  const pb::Descriptor* run = config::RunConfig::descriptor();
  int checked = 0;
  for (int i = 0; i < run->field_count(); ++i) {
    const pb::FieldDescriptor* section = run->field(i);
    ASSERT_EQ(section->type(), pb::FieldDescriptor::TYPE_MESSAGE) << section->name();
    auto rows = documented.find(section->name());
    ASSERT_NE(rows, documented.end()) << "docs/config.md has no section '## " << section->name() << "'";
    std::vector<std::pair<std::string, const pb::FieldDescriptor*>> fields;
    leaf_fields(section->message_type(), "", &fields);
    for (const auto& [path, field] : fields) {
      auto row = rows->second.find(path);
      if (row == rows->second.end()) {
        ADD_FAILURE() << "docs/config.md, section " << section->name() << ", has no row for `" << path << "` ("
                      << section->name() << "." << path << ")";
        continue;
      }
      ++checked;
      if (field->has_default_value()) {
        std::string expected;
        EXPECT_TRUE(states_default(field, row->second, &expected))
            << section->name() << "." << path << ": docs/config.md says '" << trim(row->second)
            << "' but the default in core/config.proto is '" << expected << "'";
      } else {
        EXPECT_FALSE(trim(row->second).empty())
            << section->name() << "." << path << ": say what an unset value means in its default cell";
      }
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(ConfigDocsTest, EveryExampleConfigIsMentioned) {
  const std::string docs = read_docs();
  int configs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LOOM_SOURCE_DIR) + "/configs")) {
    const std::string name = "configs/" + entry.path().filename().string();
    EXPECT_NE(docs.find("`" + name + "`"), std::string::npos) << name << " is not in docs/config.md";
    ++configs;
  }
  EXPECT_GE(configs, 5);
}

}  // namespace
}  // namespace loom
