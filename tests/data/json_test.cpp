// The strict JSON parser: values of every kind, escapes (surrogate pairs included), each kind of
// malformed text rejected at the right byte offset, and one string field taken from JSONL lines.
#include "data/json.h"

#include <gtest/gtest.h>

#include <string>

namespace loom {
namespace {

// The offset and message of the JsonError that parsing `text` throws.
std::pair<size_t, std::string> parse_error(std::string_view text) {
  try {
    json_parse(text);
  } catch (const JsonError& e) {
    return {e.offset(), e.what()};
  }
  ADD_FAILURE() << "no error for: " << text;
  return {0, ""};
}

std::pair<size_t, std::string> field_error(std::string_view line, std::string_view field = "text") {
  try {
    json_string_field(line, field);
  } catch (const JsonError& e) {
    return {e.offset(), e.what()};
  }
  ADD_FAILURE() << "no error for: " << line;
  return {0, ""};
}

TEST(JsonTest, ParsesEveryKindOfValue) {
  const JsonValue v = json_parse(
      " {\"a\": [1, -0.5e+2, 0, 12345678901234], \"b\": {\"c\": true, \"d\": false}, \"e\": null,"
      " \"f\": \"x\", \"a\": []}\r\n");
  ASSERT_EQ(v.kind, JsonValue::Kind::kObject);
  EXPECT_EQ(v.offset, 1u);
  ASSERT_EQ(v.members.size(), 5u);
  const JsonValue& a = v.members[0].second;
  ASSERT_EQ(a.kind, JsonValue::Kind::kArray);
  ASSERT_EQ(a.array.size(), 4u);
  EXPECT_EQ(a.array[0].as_int64(), 1);
  EXPECT_EQ(a.array[1].text, "-0.5e+2");
  EXPECT_EQ(a.array[1].as_int64(), std::nullopt);
  EXPECT_EQ(a.array[3].as_int64(), 12345678901234);
  EXPECT_EQ(a.array[3].offset, 23u);
  EXPECT_EQ(v.find("b")->find("c")->boolean, true);
  EXPECT_EQ(v.find("b")->find("d")->kind, JsonValue::Kind::kBool);
  EXPECT_EQ(v.find("e")->kind, JsonValue::Kind::kNull);
  EXPECT_EQ(v.find("f")->text, "x");
  EXPECT_EQ(v.find("a")->array.size(), 0u) << "the last of repeated keys wins";
  EXPECT_EQ(v.find("zz"), nullptr);
  EXPECT_EQ(json_parse("\"top\"").text, "top");
  EXPECT_EQ(json_parse("99999999999999999999").as_int64(), std::nullopt) << "does not fit int64";
  EXPECT_EQ(json_parse("-7").as_int64(), -7);
}

TEST(JsonTest, DecodesEscapesAndUtf8) {
  EXPECT_EQ(json_parse(R"("a\"b\\c\/d\be\ff\ng\rh\ti")").text, "a\"b\\c/d\be\ff\ng\rh\ti");
  EXPECT_EQ(json_parse(R"("\u0041\u00e9\u20AC")").text, "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(json_parse(R"("\ud83d\ude00")").text, "\xF0\x9F\x98\x80");  // U+1F600 from a surrogate pair
  EXPECT_EQ(json_parse(R"("\u0000")").text, std::string(1, '\0'));
  EXPECT_EQ(json_parse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").text, "caf\xC3\xA9 \xF0\x9F\x98\x80");
  EXPECT_EQ(json_parse(R"({"\u0120the": 262})").members[0].first, "\xC4\xA0the");  // GPT-2's "Ġthe"
}

TEST(JsonTest, RejectsMalformedTextAtTheRightOffset) {
  struct Case {
    std::string text;
    size_t offset;
    std::string phrase;
  };
  const Case cases[] = {
      {"", 0, "ends where a value should follow"},
      {"   ", 3, "ends where a value should follow"},
      {"{\"a\": 1,}", 8, "expected an object key"},
      {"[1, 2,]", 6, "expected a value"},
      {"{\"a\" 1}", 5, "expected ':' after an object key"},
      {"{\"a\": 1 \"b\": 2}", 8, "expected ',' or '}'"},
      {"[1 2]", 3, "expected ',' or ']'"},
      {"{'a': 1}", 1, "expected an object key"},
      {"[01]", 2, "leading zero"},
      {"[1.]", 3, "digit after the decimal point"},
      {"[1e]", 3, "digit in the exponent"},
      {"[-]", 2, "expected a digit"},
      {"[+1]", 1, "expected a value"},
      {"[NaN]", 1, "expected a value"},
      {"[True]", 1, "expected a value"},
      {"[tru]", 1, "lowercase"},
      {"1 2", 2, "after the JSON value"},
      {"{} // comment", 3, "after the JSON value"},
      {"\"abc", 4, "ends inside a string"},
      {"\"a\tb\"", 2, "control character"},
      {"\"a\\x\"", 2, "unknown escape \\x"},
      {"\"\\u12G4\"", 5, "four hex digits"},
      {"\"ab\\udc00\"", 3, "low surrogate"},
      {"\"ab\\ud800\"", 3, "high surrogate not followed"},
      {"\"ab\\ud800\\u0041\"", 3, "high surrogate not followed"},
      {"\"ok \xC3(\"", 4, "not valid UTF-8"},
      {"\"\xED\xA0\x80\"", 1, "not valid UTF-8"},
      {"\xEF\xBB\xBF{}", 0, "byte order mark"},
      {std::string(600, '[') + std::string(600, ']'), 512, "nest deeper than 512"},
  };
  for (const Case& c : cases) {
    const auto [offset, message] = parse_error(c.text);
    EXPECT_EQ(offset, c.offset) << c.text << "\n" << message;
    EXPECT_NE(message.find(c.phrase), std::string::npos) << c.text << "\n" << message;
    EXPECT_NE(message.find("byte offset " + std::to_string(c.offset)), std::string::npos) << message;
  }
}

TEST(JsonTest, StringFieldOfJsonlLines) {
  EXPECT_EQ(json_string_field(R"({"id": 7, "text": "Hello\nworld", "meta": {"text": 1}})", "text"), "Hello\nworld");
  EXPECT_EQ(json_string_field("{\"text\":\"\\u00e9t\\u00e9\"}\r", "text"), "\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(json_string_field(R"(  {"a": [1, {"b": null}], "body": ""}  )", "body"), "");

  auto [offset, message] = field_error(R"({"id": 7})");
  EXPECT_EQ(offset, 0u);
  EXPECT_NE(message.find("has no field 'text'"), std::string::npos) << message;
  std::tie(offset, message) = field_error(R"({"text": 42})");
  EXPECT_EQ(offset, 9u);
  EXPECT_NE(message.find("the field 'text' at byte offset 9 is a number but should be a string"), std::string::npos)
      << message;
  std::tie(offset, message) = field_error(R"({"text": null})");
  EXPECT_NE(message.find("is null but should be a string"), std::string::npos) << message;
  std::tie(offset, message) = field_error(R"({"text": "a", "text": "b"})");
  EXPECT_EQ(offset, 22u);
  EXPECT_NE(message.find("appears twice"), std::string::npos) << message;
  std::tie(offset, message) = field_error(R"(["text", "x"])");
  EXPECT_EQ(offset, 0u);
  EXPECT_NE(message.find("the line is an array but should be a JSON object"), std::string::npos) << message;
  std::tie(offset, message) = field_error("  ");
  EXPECT_NE(message.find("empty"), std::string::npos) << message;
  // Malformed JSON is reported as such, even after the field was found.
  std::tie(offset, message) = field_error(R"({"text": "ok", "n": 01})");
  EXPECT_EQ(offset, 21u);
  EXPECT_NE(message.find("invalid JSON at byte offset 21: a number has a leading zero"), std::string::npos) << message;
  std::tie(offset, message) = field_error(R"({"text": "ok"} x)");
  EXPECT_EQ(offset, 15u);
  std::tie(offset, message) = field_error(R"({"text": "ok")");
  EXPECT_EQ(offset, 13u);
  EXPECT_NE(message.find("the text ends where ',' or '}'"), std::string::npos) << message;
  std::tie(offset, message) = field_error(R"([1, 2)");
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

}  // namespace
}  // namespace loom
