// UTF-8: strict validation that names the first bad byte, and the decoding and encoding steps
// the tokenizers and the JSON parser share.
//
// Strict means RFC 3629: no overlong forms (C0 80 for NUL), no surrogates (ED A0 80 .. ED BF BF),
// nothing above U+10FFFF (F4 90 .. and F5 .. FF), no truncated or stray continuation bytes. Text
// that passes may be decoded with utf8_decode_valid, which then needs no checks of its own.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/base/check.h"

namespace loom {

// Thrown by utf8_check (and so by Tokenizer::encode) for text that is not valid UTF-8.
// offset() is the byte offset of the first byte that cannot start or continue a character.
class InvalidUtf8 : public UserError {
 public:
  InvalidUtf8(const std::string& message, size_t offset) : UserError(message), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

// Byte offset of the first byte of `text` that is not part of a valid UTF-8 character, or
// std::string_view::npos when all of `text` is valid. A malformed or truncated sequence is
// reported at its first byte, as Python's decoder does ("a\xC3(" -> 1).
size_t utf8_find_invalid(std::string_view text);

// Throws InvalidUtf8 unless `text` is valid, e.g. "line 3 is not valid UTF-8 at byte offset 1:
// byte 0xC3 is not followed by a continuation byte" for what = "line 3".
void utf8_check(std::string_view text, std::string_view what);

// Length in bytes of the character that starts with `lead` in valid UTF-8 (1 .. 4).
inline int utf8_sequence_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Decodes the character at text[pos] of text already validated and advances pos past it.
inline char32_t utf8_decode_valid(std::string_view text, size_t& pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[pos + i]); };
  const unsigned char lead = byte(0);
  char32_t cp;
  if (lead < 0x80) {
    cp = lead;
    pos += 1;
  } else if (lead < 0xE0) {
    cp = (char32_t{lead} & 0x1F) << 6 | (char32_t{byte(1)} & 0x3F);
    pos += 2;
  } else if (lead < 0xF0) {
    cp = (char32_t{lead} & 0x0F) << 12 | (char32_t{byte(1)} & 0x3F) << 6 | (char32_t{byte(2)} & 0x3F);
    pos += 3;
  } else {
    cp = (char32_t{lead} & 0x07) << 18 | (char32_t{byte(1)} & 0x3F) << 12 |
         (char32_t{byte(2)} & 0x3F) << 6 | (char32_t{byte(3)} & 0x3F);
    pos += 4;
  }
  return cp;
}

// Appends the UTF-8 form of a Unicode scalar value (LOOM_CHECK: not a surrogate, <= U+10FFFF).
void utf8_append(std::string& out, char32_t code_point);

}  // namespace loom
