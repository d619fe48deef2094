#include "data/utf8.h"

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace loom {

namespace {

struct Fault {
  size_t offset = std::string_view::npos;
  const char* reason = "";
};

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// The first malformed sequence of `text`, with why. Valid ASCII is skipped eight bytes at a time.
Fault find_fault(std::string_view text) {
  const size_t n = text.size();
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char lead = s[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int length;
    // The allowed range of the second byte is narrower than 80..BF for four leads: that is
    // where overlong forms, surrogates and values above U+10FFFF are excluded.
    unsigned char lo = 0x80, hi = 0xBF;
    if (lead < 0xC0) return {i, "is a continuation byte with no lead byte before it"};
    if (lead < 0xC2) return {i, "starts an overlong encoding"};
    if (lead < 0xE0) {
      length = 2;
    } else if (lead < 0xF0) {
      length = 3;
      if (lead == 0xE0) lo = 0xA0;
      if (lead == 0xED) hi = 0x9F;
    } else if (lead < 0xF5) {
      length = 4;
      if (lead == 0xF0) lo = 0x90;
      if (lead == 0xF4) hi = 0x8F;
    } else {
      return {i, lead < 0xF8 ? "starts a code point above U+10FFFF" : "never occurs in UTF-8"};
    }
    if (i + 1 >= n) return {i, "starts a sequence cut off by the end of the text"};
    const unsigned char second = s[i + 1];
    if (!is_continuation(second)) return {i, "is not followed by a continuation byte"};
    if (second < lo) return {i, "starts an overlong encoding"};
    if (second > hi) {
      return {i, lead == 0xED ? "starts a UTF-16 surrogate (U+D800..U+DFFF)"
                              : "starts a code point above U+10FFFF"};
    }
    for (int k = 2; k < length; ++k) {
      if (i + static_cast<size_t>(k) >= n) return {i, "starts a sequence cut off by the end of the text"};
      if (!is_continuation(s[i + static_cast<size_t>(k)])) {
        return {i, "is not followed by enough continuation bytes"};
      }
    }
    i += static_cast<size_t>(length);
  }
  return {};
}

}  // namespace

size_t utf8_find_invalid(std::string_view text) { return find_fault(text).offset; }

void utf8_check(std::string_view text, std::string_view what) {
  const Fault fault = find_fault(text);
  if (fault.offset == std::string_view::npos) return;
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[fault.offset]));
  throw InvalidUtf8(str_cat(what, "is not valid UTF-8 at byte offset", fault.offset) + ": byte " +
                        byte + " " + fault.reason,
                    fault.offset);
}

void utf8_append(std::string& out, char32_t code_point) {
  const auto cp = static_cast<uint32_t>(code_point);
  LOOM_CHECK(cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF), "code point", cp,
             "is not a Unicode scalar value");
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace loom
