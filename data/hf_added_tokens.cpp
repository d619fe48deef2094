#include "data/hf_added_tokens.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "data/utf8.h"

namespace loom {

namespace {

bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  const auto u = static_cast<UChar32>(c);
  const uint32_t category = U_GET_GC_MASK(u);
  return u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || (category & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL);
}

bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

// The code point that ends just before byte `pos` of valid UTF-8 `text`, and where it starts.
char32_t char_before(std::string_view text, size_t pos, size_t& start) {
  start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t at = start;
  return utf8_decode_valid(text, at);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(static_cast<int>(i));
  }
  for (std::vector<int>& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](int a, int b) { return tokens_[static_cast<size_t>(a)].content.size() > tokens_[static_cast<size_t>(b)].content.size(); });
  }
}

int AddedTokenMatcher::match_at(std::string_view text, size_t pos) const {
  for (int i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
    const AddedToken& t = tokens_[static_cast<size_t>(i)];
    if (text.compare(pos, t.content.size(), t.content) != 0) continue;
    // Hugging Face finds the leftmost-longest match first and only then drops it when single_word
    // forbids it there; it does not fall back to a shorter token at the same place.
    if (t.single_word) {
      const size_t end = pos + t.content.size();
      size_t start = 0, at = end;
      if (pos > 0 && is_word_char(char_before(text, pos, start))) return -1;
      if (end < text.size() && is_word_char(utf8_decode_valid(text, at))) return -1;
    }
    return i;
  }
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSpan>& out) const {
  size_t done = 0;  // the end of the last match
  for (size_t pos = 0; pos < text.size(); ++pos) {
    if (by_first_byte_[static_cast<unsigned char>(text[pos])].empty()) continue;
    const int i = match_at(text, pos);
    if (i < 0) continue;
    const AddedToken& t = tokens_[static_cast<size_t>(i)];
    size_t begin = pos, end = pos + t.content.size();
    if (t.lstrip) {
      while (begin > done) {
        size_t start = 0;
        if (!is_white_space(char_before(text, begin, start))) break;
        begin = start;
      }
    }
    if (t.rstrip) {
      while (end < text.size()) {
        size_t at = end;
        if (!is_white_space(utf8_decode_valid(text, at))) break;
        end = at;
      }
    }
    if (begin > done) out.push_back({done, begin, -1});
    out.push_back({begin, end, t.id});
    done = end;
    pos = end - 1;
  }
  if (done < text.size()) out.push_back({done, text.size(), -1});
}

}  // namespace loom
