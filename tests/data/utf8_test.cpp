// UTF-8 validation against the rules of RFC 3629 (every boundary of every lead byte), the offsets
// it reports, and decoding/encoding every scalar value both ways.
#include "data/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace loom {
namespace {

constexpr size_t kValid = std::string_view::npos;

TEST(Utf8Test, AcceptsValidTextOfEveryLength) {
  EXPECT_EQ(utf8_find_invalid(""), kValid);
  EXPECT_EQ(utf8_find_invalid("plain ASCII, long enough for the eight-byte fast path"), kValid);
  EXPECT_EQ(utf8_find_invalid("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), kValid);  // é € 😀
  EXPECT_EQ(utf8_find_invalid(std::string("nul \0 inside", 12)), kValid);
  // The edges of each length and of the excluded ranges.
  for (const char* s : {"\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                        "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"}) {
    EXPECT_EQ(utf8_find_invalid(s), kValid) << s;
  }
}

TEST(Utf8Test, RejectsEachMalformationAtTheFirstByteOfTheBadSequence) {
  struct Case {
    std::string text;
    size_t offset;
    std::string reason;
  };
  const Case cases[] = {
      {"ab\x80", 2, "continuation byte with no lead byte"},
      {"a\xC0\xAF", 1, "overlong"},                 // '/' in two bytes
      {"a\xC1\xBF", 1, "overlong"},
      {"\xE0\x9F\xBF", 0, "overlong"},               // U+07FF in three bytes
      {"\xF0\x8F\xBF\xBF", 0, "overlong"},           // U+FFFF in four bytes
      {"xy\xED\xA0\x80", 2, "surrogate"},             // U+D800
      {"\xED\xBF\xBF", 0, "surrogate"},               // U+DFFF
      {"\xF4\x90\x80\x80", 0, "above U+10FFFF"},      // U+110000
      {"\xF5\x80\x80\x80", 0, "above U+10FFFF"},
      {"\xFF", 0, "never occurs"},
      {"a\xC3(", 1, "not followed by a continuation byte"},
      {"a\xE2\x82(", 1, "not followed by enough continuation bytes"},
      {"0123456789\xC3", 10, "cut off by the end"},
      {"\xF0\x9F\x98", 0, "cut off by the end"},
      {"12345678\xE2\x82\xAC\xE2\x82", 11, "cut off by the end"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(utf8_find_invalid(c.text), c.offset) << "text of " << c.text.size() << " bytes";
    try {
      utf8_check(c.text, "line 3");
      ADD_FAILURE() << "no error for " << c.reason;
    } catch (const InvalidUtf8& e) {
      EXPECT_EQ(e.offset(), c.offset);
      const std::string message = e.what();
      EXPECT_EQ(message.rfind("line 3 is not valid UTF-8 at byte offset " + std::to_string(c.offset) + ": byte 0x", 0), 0u)
          << message;
      EXPECT_NE(message.find(c.reason), std::string::npos) << message;
    }
  }
}

TEST(Utf8Test, EveryScalarValueRoundTripsThroughAppendAndDecode) {
  std::string all;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    utf8_append(all, cp);
  }
  ASSERT_EQ(utf8_find_invalid(all), kValid);
  size_t pos = 0;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const size_t before = pos;
    const char32_t got = utf8_decode_valid(all, pos);
    ASSERT_EQ(uint32_t{got}, uint32_t{cp}) << "at byte " << before;
    ASSERT_EQ(static_cast<int>(pos - before), utf8_sequence_length(static_cast<unsigned char>(all[before])));
    ASSERT_EQ(pos - before, cp < 0x80 ? 1u : cp < 0x800 ? 2u : cp < 0x10000 ? 3u : 4u) << "U+" << std::hex << uint32_t{cp};
  }
  EXPECT_EQ(pos, all.size());
  std::string s;
  EXPECT_THROW(utf8_append(s, 0xD800), Error);
  EXPECT_THROW(utf8_append(s, 0x110000), Error);
}

}  // namespace
}  // namespace loom
