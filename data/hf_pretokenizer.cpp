#include "data/hf_pretokenizer.h"

#include <unicode/uchar.h>
#include <unicode/uregex.h>
#include <unicode/utext.h>

#include "core/base/check.h"
#include "data/gpt2_pretokenizer.h"
#include "data/utf8.h"

namespace loom {

namespace {

const JsonValue* member(const JsonValue& object, std::string_view key) {
  return object.kind == JsonValue::Kind::kObject ? object.find(key) : nullptr;
}

bool flag(const JsonValue& object, std::string_view key, bool otherwise) {
  const JsonValue* v = member(object, key);
  return v && v->kind == JsonValue::Kind::kBool ? v->boolean : otherwise;
}

std::string string_member(const JsonValue& object, std::string_view key) {
  const JsonValue* v = member(object, key);
  return v && v->kind == JsonValue::Kind::kString ? v->text : "";
}

bool is_number_char(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0;
}

// An ICU regular expression and the UText it reads; one per thread (ICU's matchers hold state).
class Matcher {
 public:
  explicit Matcher(const URegularExpression* compiled) {
    UErrorCode status = U_ZERO_ERROR;
    re_ = uregex_clone(compiled, &status);
    LOOM_CHECK(U_SUCCESS(status), "uregex_clone failed:", u_errorName(status));
  }
  ~Matcher() {
    uregex_close(re_);
    utext_close(text_);
  }
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  // Every non-empty match of the pattern and the text between matches, in order.
  void cut(std::string_view piece, std::vector<std::string_view>& out) {
    UErrorCode status = U_ZERO_ERROR;
    text_ = utext_openUTF8(text_, piece.data(), static_cast<int64_t>(piece.size()), &status);
    uregex_setUText(re_, text_, &status);
    LOOM_CHECK(U_SUCCESS(status), "ICU regex setup failed:", u_errorName(status));
    size_t last = 0;
    while (uregex_findNext(re_, &status)) {
      const auto start = static_cast<size_t>(uregex_start64(re_, 0, &status));
      const auto end = static_cast<size_t>(uregex_end64(re_, 0, &status));
      if (end == start) continue;
      if (start > last) out.push_back(piece.substr(last, start - last));
      out.push_back(piece.substr(start, end - start));
      last = end;
    }
    LOOM_CHECK(U_SUCCESS(status), "ICU regex search failed:", u_errorName(status));
    if (last < piece.size()) out.push_back(piece.substr(last));
  }

 private:
  URegularExpression* re_ = nullptr;
  UText* text_ = nullptr;
};

}  // namespace

struct HfPreTokenizer::Step {
  enum class Kind { kGpt2, kPattern, kDigits } kind;
  URegularExpression* compiled = nullptr;  // kPattern
  bool individual_digits = false;          // kDigits
  std::string name;

  ~Step() {
    if (compiled) uregex_close(compiled);
  }

  void cut(std::string_view piece, std::vector<std::string_view>& out, Matcher* matcher) const {
    switch (kind) {
      case Kind::kGpt2: {
        Gpt2Pretokenizer pieces(piece);
        for (std::string_view p; pieces.next(p);) out.push_back(p);
        return;
      }
      case Kind::kPattern:
        matcher->cut(piece, out);
        return;
      case Kind::kDigits: {
        // Number characters isolated (one by one, or in runs); the text between them as it is.
        size_t run = 0;
        bool run_is_number = false;
        for (size_t pos = 0; pos < piece.size();) {
          const size_t at = pos;
          const bool number = is_number_char(utf8_decode_valid(piece, pos));
          if (at > run && (number != run_is_number || (number && individual_digits))) {
            out.push_back(piece.substr(run, at - run));
            run = at;
          }
          run_is_number = number;
        }
        if (run < piece.size()) out.push_back(piece.substr(run));
        return;
      }
    }
  }
};

HfPreTokenizer::HfPreTokenizer(const JsonValue& config, const std::string& file) {
  if (config.kind != JsonValue::Kind::kNull) add_step(config, file, true);
}

HfPreTokenizer::~HfPreTokenizer() = default;
HfPreTokenizer::HfPreTokenizer(HfPreTokenizer&&) noexcept = default;

void HfPreTokenizer::add_step(const JsonValue& config, const std::string& file, bool first) {
  const std::string type = string_member(config, "type");
  const std::string supported = "(Loom reads ByteLevel, Split with behavior Isolated, Digits and Sequence of these)";
  if (type == "Sequence") {
    const JsonValue* list = member(config, "pretokenizers");
    if (!list || list->kind != JsonValue::Kind::kArray) {
      fail_user(file + ": pre_tokenizer Sequence at byte offset", config.offset, "has no \"pretokenizers\" list");
    }
    for (size_t i = 0; i < list->array.size(); ++i) add_step(list->array[i], file, first && i == 0);
    return;
  }
  auto step = std::make_unique<Step>();
  if (type == "ByteLevel") {
    byte_level_ = true;
    if (flag(config, "add_prefix_space", false)) {
      // Hugging Face adds the space to every piece that reaches this step; Loom only to the text.
      if (!first) {
        fail_user(file + ": pre_tokenizer ByteLevel with add_prefix_space after another step is not supported",
                  "(only as the first step)");
      }
      prefix_space_ = true;
    }
    if (!flag(config, "use_regex", true)) return;
    step->kind = Step::Kind::kGpt2;
    step->name = "ByteLevel";
  } else if (type == "Split") {
    const std::string behavior = string_member(config, "behavior");
    if (behavior != "Isolated" || flag(config, "invert", false)) {
      fail_user(file + ": pre_tokenizer Split with behavior", behavior.empty() ? "(none)" : behavior,
                flag(config, "invert", false) ? "inverted" : "", "is not supported (Loom reads behavior Isolated, not inverted)");
    }
    const JsonValue* pattern = member(config, "pattern");
    const std::string regex = pattern ? string_member(*pattern, "Regex") : "";
    const std::string literal = pattern ? string_member(*pattern, "String") : "";
    if (regex.empty() && literal.empty()) {
      fail_user(file + ": pre_tokenizer Split at byte offset", config.offset,
                "needs a pattern {\"Regex\": ...} or {\"String\": ...}");
    }
    UParseError where{};
    UErrorCode status = U_ZERO_ERROR;
    const std::string& text = regex.empty() ? literal : regex;
    UText* pattern_text = utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &status);
    step->compiled = uregex_openUText(pattern_text, regex.empty() ? UREGEX_LITERAL : 0, &where, &status);
    utext_close(pattern_text);
    if (U_FAILURE(status)) {
      fail_user(file + ": the Split pattern", "'" + text + "'", "does not compile as a regular expression (",
                std::string(u_errorName(status)) + " at offset", std::to_string(where.offset) + ")");
    }
    step->kind = Step::Kind::kPattern;
    step->name = "Split";
  } else if (type == "Digits") {
    step->kind = Step::Kind::kDigits;
    step->individual_digits = flag(config, "individual_digits", false);
    step->name = step->individual_digits ? "Digits(individual)" : "Digits";
  } else {
    fail_user(file + ": pre_tokenizer", type.empty() ? "(no type)" : type, "is not supported",
              supported + (type == "Metaspace" ? "; this is a SentencePiece-style model: give its tokenizer.model instead" : ""));
  }
  steps_.push_back(std::move(step));
}

bool HfPreTokenizer::cuts_after_newlines() const {
  // Digits only ever cut, next to number characters, so around such a newline it changes nothing.
  bool gpt2 = false;
  for (const auto& step : steps_) {
    if (step->kind == Step::Kind::kPattern) return false;
    gpt2 = gpt2 || step->kind == Step::Kind::kGpt2;
  }
  return gpt2 && !prefix_space_;
}

std::string HfPreTokenizer::summary() const {
  std::string s;
  for (const auto& step : steps_) s += (s.empty() ? "" : " + ") + step->name;
  if (prefix_space_) s += " (prefix space)";
  return s.empty() ? "none" : s;
}

void HfPreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  std::vector<std::unique_ptr<Matcher>> matchers(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (steps_[i]->compiled) matchers[i] = std::make_unique<Matcher>(steps_[i]->compiled);
  }
  std::vector<std::string_view> current{text}, next;
  for (size_t i = 0; i < steps_.size(); ++i) {
    next.clear();
    for (std::string_view piece : current) steps_[i]->cut(piece, next, matchers[i].get());
    current.swap(next);
  }
  pieces.insert(pieces.end(), current.begin(), current.end());
}

}  // namespace loom
