#include "launch/eval_tasks.h"

#include <cmath>
#include <fstream>
#include <functional>
#include <initializer_list>

#include "core/base/check.h"
#include "data/json.h"

namespace loom {

namespace {

// "FILE:LINE:", the start of every message about a line.
std::string where(const std::string& path, int line) { return path + ":" + std::to_string(line) + ":"; }

// The first of `names` that the object has; UserError naming them and the object's keys when
// it has none.
const JsonValue& field(const JsonValue& object, std::initializer_list<const char*> names, const std::string& at,
                       const char* expected) {
  for (const char* name : names) {
    if (const JsonValue* v = object.find(name)) return *v;
  }
  std::string wanted, keys;
  for (const char* name : names) wanted += std::string(wanted.empty() ? "\"" : " or \"") + name + "\"";
  for (const auto& [key, value] : object.members) keys += std::string(keys.empty() ? "" : ", ") + "\"" + key + "\"";
  fail_user(at, "no field", wanted, "(" + std::string(expected) + ");", "the object has",
            keys.empty() ? "no fields" : keys);
}

std::string string_of(const JsonValue& v, const std::string& at, const char* name) {
  if (v.kind != JsonValue::Kind::kString) {
    fail_user(at, "\"" + std::string(name) + "\" is", json_kind_name(v.kind), "but must be a string");
  }
  return v.text;
}

// The gold index: an integer, or a string of decimal digits.
int64_t index_of(const JsonValue& v, const std::string& at) {
  if (v.kind == JsonValue::Kind::kNumber) {
    if (const std::optional<int64_t> i = v.as_int64()) return *i;
    fail_user(at, "the gold index", v.text, "is not an integer");
  }
  if (v.kind == JsonValue::Kind::kString && !v.text.empty() && v.text.size() <= 9 &&
      v.text.find_first_not_of("0123456789") == std::string::npos) {
    return std::stoll(v.text);
  }
  fail_user(at, "the gold index is", json_kind_name(v.kind),
            v.kind == JsonValue::Kind::kString ? "'" + v.text + "'" : "", "but must be an integer (or a string of digits)");
}

// Calls `read` with each non-blank line's parsed object and its location.
void for_each_object(const std::string& path, const std::function<void(const JsonValue&, const std::string&, int)>& read) {
  std::ifstream in(path);
  if (!in) fail_user("cannot read the task file", path, "(does it exist?)");
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = where(path, line);
    JsonValue object;
    try {
      object = json_parse(text);
    } catch (const JsonError& e) {
      fail_user(at, e.what());
    }
    if (object.kind != JsonValue::Kind::kObject) {
      fail_user(at, "the line is", json_kind_name(object.kind), "but must be a JSON object");
    }
    read(object, at, line);
  }
  if (in.bad()) fail_user("reading the task file", path, "failed");
}

template <typename Doc>
std::vector<Doc> first(std::vector<Doc> docs, const std::string& path, int limit) {
  if (docs.empty()) fail_user("the task file", path, "holds no document (one JSON object per line)");
  if (limit > 0 && static_cast<size_t>(limit) < docs.size()) docs.resize(static_cast<size_t>(limit));
  return docs;
}

}  // namespace

std::vector<ChoiceDoc> read_choice_docs(const std::string& path, int limit) {
  std::vector<ChoiceDoc> docs;
  for_each_object(path, [&](const JsonValue& object, const std::string& at, int line) {
    ChoiceDoc doc;
    doc.line = line;
    doc.context = string_of(field(object, {"context", "query", "ctx"}, at, "a string"), at, "context");
    const JsonValue& choices = field(object, {"choices", "endings"}, at, "a list of strings");
    if (choices.kind != JsonValue::Kind::kArray) {
      fail_user(at, "\"choices\" is", json_kind_name(choices.kind), "but must be a list of strings");
    }
    if (choices.array.empty()) fail_user(at, "\"choices\" is empty; a document needs at least one choice");
    for (size_t i = 0; i < choices.array.size(); ++i) {
      const JsonValue& c = choices.array[i];
      if (c.kind != JsonValue::Kind::kString) {
        fail_user(at, "choice", i, "is", json_kind_name(c.kind), "but must be a string");
      }
      if (c.text.empty()) fail_user(at, "choice", i, "is empty; every choice needs some text to score");
      doc.choices.push_back(c.text);
    }
    const int64_t gold = index_of(field(object, {"gold", "label"}, at, "the index of the right choice"), at);
    if (gold < 0 || gold >= static_cast<int64_t>(doc.choices.size())) {
      fail_user(at, "the gold index", gold, "is out of range: the document has", doc.choices.size(),
                doc.choices.size() == 1 ? "choice (index 0)"
                                        : "choices (indices 0 .. " + std::to_string(doc.choices.size() - 1) + ")");
    }
    doc.gold = static_cast<int>(gold);
    docs.push_back(std::move(doc));
  });
  return first(std::move(docs), path, limit);
}

std::vector<AnswerDoc> read_answer_docs(const std::string& path, int limit) {
  std::vector<AnswerDoc> docs;
  for_each_object(path, [&](const JsonValue& object, const std::string& at, int line) {
    AnswerDoc doc;
    doc.line = line;
    doc.prompt = string_of(field(object, {"prompt"}, at, "a string"), at, "prompt");
    doc.answer = string_of(field(object, {"answer"}, at, "a string"), at, "answer");
    if (doc.prompt.empty()) fail_user(at, "\"prompt\" is empty; the model needs a prompt to continue");
    if (trim_whitespace(doc.answer).empty()) fail_user(at, "\"answer\" is empty (or only whitespace)");
    docs.push_back(std::move(doc));
  });
  return first(std::move(docs), path, limit);
}

int best_choice(const std::vector<double>& scores) {
  int best = 0;
  for (size_t i = 1; i < scores.size(); ++i) {
    if (scores[i] > scores[static_cast<size_t>(best)]) best = static_cast<int>(i);
  }
  return best;
}

int64_t utf8_characters(const std::string& text) {
  int64_t n = 0;
  for (const char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;  // not a continuation byte
  return n;
}

std::string trim_whitespace(const std::string& text) {
  const char* space = " \t\n\r";
  const size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) - begin + 1);
}

MeanScore mean_score(const std::vector<double>& per_document) {
  MeanScore s;
  s.n = static_cast<int64_t>(per_document.size());
  if (s.n == 0) return s;
  for (const double x : per_document) s.mean += x;
  s.mean /= static_cast<double>(s.n);
  if (s.n < 2) return s;
  double squares = 0;
  for (const double x : per_document) squares += (x - s.mean) * (x - s.mean);
  s.stderr_of_mean = std::sqrt(squares / static_cast<double>(s.n - 1)) / std::sqrt(static_cast<double>(s.n));
  return s;
}

}  // namespace loom
