#include "data/gpt2_pretokenizer.h"

#include <unicode/uchar.h>

#include <array>

#include "data/utf8.h"

namespace loom {

namespace {

constexpr std::array<Gpt2CharClass, 128> make_ascii_classes() {
  std::array<Gpt2CharClass, 128> table{};
  for (int c = 0; c < 128; ++c) {
    Gpt2CharClass k = Gpt2CharClass::kOther;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = Gpt2CharClass::kLetter;
    if (c >= '0' && c <= '9') k = Gpt2CharClass::kNumber;
    if (c == ' ' || (c >= '\t' && c <= '\r')) k = Gpt2CharClass::kSpace;
    table[static_cast<size_t>(c)] = k;
  }
  return table;
}

constexpr std::array<Gpt2CharClass, 128> kAsciiClasses = make_ascii_classes();

struct CharAt {
  Gpt2CharClass cls;
  size_t length;
};

inline CharAt char_at(std::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return {kAsciiClasses[lead], 1};
  size_t end = pos;
  const char32_t cp = utf8_decode_valid(text, end);
  return {gpt2_char_class(cp), end - pos};
}

// Length of the contraction ('s 't 'm 'd 're 've 'll) starting at text[pos] == '\'', or 0.
size_t contraction_length(std::string_view text, size_t pos) {
  const std::string_view rest = text.substr(pos + 1);
  if (rest.empty()) return 0;
  const char c = rest[0];
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
  if (rest.size() >= 2 && (rest.substr(0, 2) == "re" || rest.substr(0, 2) == "ve" || rest.substr(0, 2) == "ll")) {
    return 3;
  }
  return 0;
}

}  // namespace

Gpt2CharClass gpt2_char_class(char32_t code_point) {
  if (code_point < 0x80) return kAsciiClasses[code_point];
  const auto c = static_cast<UChar32>(code_point);
  const uint32_t category = U_GET_GC_MASK(c);
  if (category & U_GC_L_MASK) return Gpt2CharClass::kLetter;
  if (category & U_GC_N_MASK) return Gpt2CharClass::kNumber;
  if (u_isUWhiteSpace(c)) return Gpt2CharClass::kSpace;
  return Gpt2CharClass::kOther;
}

bool Gpt2Pretokenizer::next(std::string_view& piece) {
  const size_t n = text_.size();
  if (pos_ >= n) return false;
  const size_t start = pos_;
  if (text_[start] == '\'') {
    if (const size_t length = contraction_length(text_, start); length > 0) {
      piece = text_.substr(start, length);
      pos_ += length;
      return true;
    }
  }
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a run of one class, after an optional space.
  size_t run = start;
  Gpt2CharClass cls = char_at(text_, start).cls;
  if (text_[start] == ' ' && start + 1 < n) {
    const Gpt2CharClass after = char_at(text_, start + 1).cls;
    if (after != Gpt2CharClass::kSpace) {
      cls = after;
      run = start + 1;
    }
  }
  if (cls != Gpt2CharClass::kSpace) {
    size_t end = run;
    while (end < n) {
      const CharAt c = char_at(text_, end);
      if (c.cls != cls) break;
      end += c.length;
    }
    piece = text_.substr(start, end - start);
    pos_ = end;
    return true;
  }
  // `\s+(?!\S)|\s+`: the whole run at the end of the text or when it is one character, else
  // all of it but its last character, which then starts the next piece.
  size_t end = start, last = start;
  while (end < n) {
    const CharAt c = char_at(text_, end);
    if (c.cls != Gpt2CharClass::kSpace) break;
    last = end;
    end += c.length;
  }
  if (end < n && last > start) end = last;
  piece = text_.substr(start, end - start);
  pos_ = end;
  return true;
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  Gpt2Pretokenizer splitter(text);
  for (std::string_view piece; splitter.next(piece);) pieces.push_back(piece);
  return pieces;
}

}  // namespace loom
