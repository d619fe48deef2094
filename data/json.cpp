#include "data/json.h"

#include <charconv>
#include <cstdio>

#include "data/utf8.h"

namespace loom {

namespace {

// Deep enough for any real document, shallow enough that recursion cannot exhaust the stack.
constexpr int kMaxDepth = 512;

bool is_json_whitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string quoted_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02X", u);
  return buf;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  [[noreturn]] void fail(size_t at, const std::string& reason) const {
    throw JsonError(str_cat("invalid JSON at byte offset", at) + ": " + reason, at);
  }

  [[noreturn]] void fail_unexpected(const std::string& expected) const {
    if (at_end()) fail(pos_, "the text ends where " + expected + " should follow");
    fail(pos_, "expected " + expected + ", found " + quoted_char(s_[pos_]));
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return s_[pos_]; }
  size_t pos() const { return pos_; }

  void skip_whitespace() {
    while (pos_ < s_.size() && is_json_whitespace(s_[pos_])) ++pos_;
  }

  void expect_end() {
    skip_whitespace();
    if (!at_end()) fail(pos_, "unexpected " + quoted_char(s_[pos_]) + " after the JSON value");
  }

  void check_start() {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") fail(0, "the text starts with a byte order mark (remove it)");
  }

  // The kind of the value starting at pos() (after whitespace), judged by its first character.
  JsonValue::Kind kind_ahead() const {
    switch (s_[pos_]) {
      case '{': return JsonValue::Kind::kObject;
      case '[': return JsonValue::Kind::kArray;
      case '"': return JsonValue::Kind::kString;
      case 't': case 'f': return JsonValue::Kind::kBool;
      case 'n': return JsonValue::Kind::kNull;
      default: return JsonValue::Kind::kNumber;
    }
  }

  // Parses one value into `out`, or only checks it when out is null.
  void value(JsonValue* out, int depth) {
    skip_whitespace();
    if (at_end()) fail_unexpected("a value");
    if (out) out->offset = pos_;
    const char c = s_[pos_];
    if (c == '{') {
      object(out, depth + 1);
    } else if (c == '[') {
      array(out, depth + 1);
    } else if (c == '"') {
      if (out) out->kind = JsonValue::Kind::kString;
      string(out ? &out->text : nullptr);
    } else if (c == 't' || c == 'f' || c == 'n') {
      literal(out);
    } else if (c == '-' || is_digit(c)) {
      number(out);
    } else {
      fail_unexpected("a value");
    }
  }

  // Walks the object starting at pos() ('{') at nesting `depth`. For each member, `on_key(key)`
  // is called with the parser at the member's value (after whitespace); it either consumes the
  // value and returns true, or returns false and the value is checked and skipped here.
  template <typename OnKey>
  void for_each_member(int depth, OnKey&& on_key) {
    if (depth > kMaxDepth) fail(pos_, str_cat("objects and arrays nest deeper than", kMaxDepth, "levels"));
    ++pos_;
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return;
    }
    std::string key;
    while (true) {
      skip_whitespace();
      if (at_end() || peek() != '"') fail_unexpected("an object key (a string)");
      key.clear();
      string(&key);
      skip_whitespace();
      if (at_end() || peek() != ':') fail_unexpected("':' after an object key");
      ++pos_;
      skip_whitespace();
      if (at_end()) fail_unexpected("a value");
      if (!on_key(std::string_view(key))) value(nullptr, depth);
      skip_whitespace();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == '}') {
        ++pos_;
        return;
      }
      fail_unexpected("',' or '}' after an object member");
    }
  }

  // A string starting at the opening quote; decoded into `out` unless null.
  void string(std::string* out) {
    ++pos_;  // the opening quote
    while (true) {
      // A run of characters that need no attention is copied in one piece, checked as UTF-8.
      const size_t run = pos_;
      while (pos_ < s_.size()) {
        const auto u = static_cast<unsigned char>(s_[pos_]);
        if (u == '"' || u == '\\' || u < 0x20) break;
        ++pos_;
      }
      if (pos_ > run) {
        const std::string_view piece = s_.substr(run, pos_ - run);
        if (const size_t bad = utf8_find_invalid(piece); bad != std::string_view::npos) {
          fail(run + bad, "a string holds bytes that are not valid UTF-8");
        }
        if (out) out->append(piece);
      }
      if (at_end()) fail(pos_, "the text ends inside a string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return;
      }
      if (c != '\\') fail(pos_, "a control character (" + quoted_char(c) + ") inside a string must be escaped");
      escape(out);
    }
  }

 private:
  void object(JsonValue* out, int depth) {
    if (out) out->kind = JsonValue::Kind::kObject;
    for_each_member(depth, [&](std::string_view key) {
      if (!out) return false;
      out->members.emplace_back(std::string(key), JsonValue{});
      value(&out->members.back().second, depth);
      return true;
    });
  }

  void array(JsonValue* out, int depth) {
    if (depth > kMaxDepth) fail(pos_, str_cat("objects and arrays nest deeper than", kMaxDepth, "levels"));
    if (out) out->kind = JsonValue::Kind::kArray;
    ++pos_;
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return;
    }
    while (true) {
      if (out) {
        out->array.emplace_back();
        value(&out->array.back(), depth);
      } else {
        value(nullptr, depth);
      }
      skip_whitespace();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == ']') {
        ++pos_;
        return;
      }
      fail_unexpected("',' or ']' after an array element");
    }
  }

  void literal(JsonValue* out) {
    struct Word {
      std::string_view text;
      JsonValue::Kind kind;
      bool value;
    };
    for (const Word& w : {Word{"true", JsonValue::Kind::kBool, true},
                          Word{"false", JsonValue::Kind::kBool, false},
                          Word{"null", JsonValue::Kind::kNull, false}}) {
      if (s_.substr(pos_, w.text.size()) == w.text) {
        pos_ += w.text.size();
        if (out) {
          out->kind = w.kind;
          out->boolean = w.value;
        }
        return;
      }
    }
    fail_unexpected("a value (true, false and null are lowercase)");
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  void number(JsonValue* out) {
    const size_t start = pos_;
    const auto digits = [&](const char* what) {
      if (at_end() || !is_digit(peek())) fail_unexpected(what);
      while (!at_end() && is_digit(peek())) ++pos_;
    };
    if (peek() == '-') ++pos_;
    if (!at_end() && peek() == '0') {
      ++pos_;
      if (!at_end() && is_digit(peek())) fail(pos_, "a number has a leading zero");
    } else {
      digits("a digit");
    }
    if (!at_end() && peek() == '.') {
      ++pos_;
      digits("a digit after the decimal point");
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      digits("a digit in the exponent");
    }
    if (out) {
      out->kind = JsonValue::Kind::kNumber;
      out->text.assign(s_.substr(start, pos_ - start));
    }
  }

  unsigned hex4() {
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      if (at_end()) fail(pos_, "the text ends inside a \\u escape");
      const char c = s_[pos_];
      unsigned d;
      if (is_digit(c)) {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail(pos_, "a \\u escape needs four hex digits, found " + quoted_char(c));
      }
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  // An escape starting at the backslash.
  void escape(std::string* out) {
    const size_t start = pos_;
    ++pos_;
    if (at_end()) fail(start, "the text ends inside an escape");
    const char c = s_[pos_++];
    char plain = 0;
    switch (c) {
      case '"': plain = '"'; break;
      case '\\': plain = '\\'; break;
      case '/': plain = '/'; break;
      case 'b': plain = '\b'; break;
      case 'f': plain = '\f'; break;
      case 'n': plain = '\n'; break;
      case 'r': plain = '\r'; break;
      case 't': plain = '\t'; break;
      case 'u': break;
      default: fail(start, "unknown escape \\" + std::string(1, c) + " (valid: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
    }
    if (c != 'u') {
      if (out) out->push_back(plain);
      return;
    }
    char32_t cp = hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) fail(start, "a \\u escape is a low surrogate with no high surrogate before it");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (s_.substr(pos_, 2) != "\\u") fail(start, "a \\u escape is a high surrogate not followed by a low surrogate");
      pos_ += 2;
      const char32_t low = hex4();
      if (low < 0xDC00 || low > 0xDFFF) fail(start, "a \\u escape is a high surrogate not followed by a low surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (out) utf8_append(*out, cp);
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<int64_t> JsonValue::as_int64() const {
  if (kind != Kind::kNumber || text.find_first_of(".eE") != std::string::npos) return std::nullopt;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

const char* json_kind_name(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::kNull: return "null";
    case JsonValue::Kind::kBool: return "a boolean";
    case JsonValue::Kind::kNumber: return "a number";
    case JsonValue::Kind::kString: return "a string";
    case JsonValue::Kind::kArray: return "an array";
    case JsonValue::Kind::kObject: return "an object";
  }
  return "?";
}

JsonValue json_parse(std::string_view text) {
  Parser p(text);
  p.check_start();
  JsonValue root;
  p.value(&root, 0);
  p.expect_end();
  return root;
}

std::string json_string_field(std::string_view line, std::string_view field) {
  Parser p(line);
  p.check_start();
  p.skip_whitespace();
  if (p.at_end()) throw JsonError("the line is empty; expected a JSON object", p.pos());
  const size_t start = p.pos();
  if (p.peek() != '{') {
    const std::string wanted = "a JSON object with a field '" + std::string(field) + "'";
    JsonValue::Kind kind;
    try {
      kind = p.kind_ahead();
      p.value(nullptr, 0);
      p.expect_end();
    } catch (const JsonError& e) {  // a line of text, say
      throw JsonError("the line is not " + wanted + ": " + e.what(), e.offset());
    }
    throw JsonError(str_cat("the line is", json_kind_name(kind), "but should be a JSON object with a field '") +
                        std::string(field) + "'",
                    start);
  }
  // Walked without building the object: only the wanted string is kept. A value of the wrong
  // kind or a repeated field is reported after the whole line proved to be valid JSON.
  std::string result;
  size_t found_at = std::string_view::npos, repeat_at = std::string_view::npos;
  JsonValue::Kind found_kind = JsonValue::Kind::kString;
  std::string seen;  // the object's first keys, for the message when the field is missing
  int keys = 0;
  constexpr int kKeysShown = 8;
  p.for_each_member(1, [&](std::string_view name) {
    if (++keys <= kKeysShown) seen += (keys > 1 ? ", '" : "'") + std::string(name) + "'";
    if (name != field) return false;
    if (found_at != std::string_view::npos) {
      if (repeat_at == std::string_view::npos) repeat_at = p.pos();
      return false;
    }
    found_at = p.pos();
    found_kind = p.kind_ahead();
    if (found_kind != JsonValue::Kind::kString) return false;
    p.string(&result);
    return true;
  });
  p.expect_end();
  const std::string quoted = "'" + std::string(field) + "'";
  if (found_at == std::string_view::npos) {
    const std::string has = keys == 0 ? "it is empty"
                            : str_cat("its fields are", seen + (keys > kKeysShown ? str_cat(" and", keys - kKeysShown, "more") : ""));
    throw JsonError(str_cat("the JSON object at byte offset", start, "has no field") + " " + quoted + " (" + has + ")",
                    start);
  }
  if (repeat_at != std::string_view::npos) {
    throw JsonError(str_cat("the field", quoted, "appears twice in the JSON object (again at byte offset",
                            repeat_at) + ")",
                    repeat_at);
  }
  if (found_kind != JsonValue::Kind::kString) {
    throw JsonError(str_cat("the field", quoted, "at byte offset", found_at, "is", json_kind_name(found_kind),
                            "but should be a string"),
                    found_at);
  }
  return result;
}

}  // namespace loom
