#include "checkpoints/hf_tokenizer_files.h"

#include <algorithm>
#include <filesystem>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/json.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

std::optional<JsonValue> read_json(const fs::path& path) {
  if (!fs::is_regular_file(path)) return std::nullopt;
  try {
    return json_parse(read_file(path.string(), "tokenizer file"));
  } catch (const JsonError& e) {
    fail_user("tokenizer file", path.string(), "is not valid JSON:", e.what());
  }
}

// The largest id among the integer values of an object ({"token": id, ...}); -1 when none.
int64_t largest_id_value(const JsonValue& object) {
  int64_t largest = -1;
  if (object.kind != JsonValue::Kind::kObject) return largest;
  for (const auto& [token, id] : object.members) {
    if (const std::optional<int64_t> v = id.as_int64()) largest = std::max(largest, *v);
  }
  return largest;
}

std::optional<int> first_id(const JsonValue* v) {
  if (v != nullptr && v->kind == JsonValue::Kind::kArray && !v->array.empty()) v = &v->array[0];
  const std::optional<int64_t> n = v != nullptr ? v->as_int64() : std::nullopt;
  if (!n || *n < 0 || *n > (int64_t{1} << 30)) return std::nullopt;
  return static_cast<int>(*n);
}

}  // namespace

const std::vector<std::string>& hf_tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.json",          "tokenizer_config.json",   "vocab.json",        "merges.txt",
      "tokenizer.model",         "special_tokens_map.json", "generation_config.json", "added_tokens.json",
  };
  return names;
}

std::vector<std::string> hf_tokenizer_files_in(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const std::string& name : hf_tokenizer_file_names()) {
    if (fs::is_regular_file(fs::path(dir) / name, ec)) found.push_back(name);
  }
  return found;
}

std::optional<int64_t> hf_tokenizer_vocab_size(const std::string& dir) {
  int64_t largest = -1;
  bool counted = false;
  if (const std::optional<JsonValue> t = read_json(fs::path(dir) / "tokenizer.json")) {
    counted = true;
    const JsonValue* model = t->find("model");
    if (model != nullptr && model->kind == JsonValue::Kind::kObject) {
      const JsonValue* vocab = model->find("vocab");
      if (vocab != nullptr && vocab->kind == JsonValue::Kind::kObject) largest = largest_id_value(*vocab);
      // A unigram model's vocab is a list of [piece, score]: the ids are the positions.
      if (vocab != nullptr && vocab->kind == JsonValue::Kind::kArray) largest = static_cast<int64_t>(vocab->array.size()) - 1;
    }
    const JsonValue* added = t->find("added_tokens");
    if (added != nullptr && added->kind == JsonValue::Kind::kArray) {
      for (const JsonValue& a : added->array) {
        const JsonValue* id = a.find("id");
        if (const std::optional<int64_t> v = id != nullptr ? id->as_int64() : std::nullopt) largest = std::max(largest, *v);
      }
    }
  } else if (const std::optional<JsonValue> v = read_json(fs::path(dir) / "vocab.json")) {
    counted = true;
    largest = largest_id_value(*v);
  }
  if (const std::optional<JsonValue> a = read_json(fs::path(dir) / "added_tokens.json")) {
    counted = true;
    largest = std::max(largest, largest_id_value(*a));
  }
  if (!counted) return std::nullopt;
  return largest + 1;
}

void copy_hf_tokenizer_files(const std::string& from, const std::vector<std::string>& names, const std::string& to) {
  for (const std::string& name : names) {
    const std::string src = (fs::path(from) / name).string();
    write_file_durably((fs::path(to) / name).string(), read_file(src, "tokenizer file"));
  }
}

TokenIds hf_generation_token_ids(const std::string& dir) {
  TokenIds ids;
  std::optional<JsonValue> g;
  try {
    g = read_json(fs::path(dir) / "generation_config.json");
  } catch (const UserError&) {
    return ids;  // informational only: a broken file just gives no ids
  }
  if (!g || g->kind != JsonValue::Kind::kObject) return ids;
  ids.bos = first_id(g->find("bos_token_id"));
  ids.eos = first_id(g->find("eos_token_id"));
  return ids;
}

}  // namespace loom
