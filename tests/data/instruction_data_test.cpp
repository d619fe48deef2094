// Instruction data: the three formats read into conversations (JSONL and Alpaca's JSON array),
// every bad example named by file and line (stopping, or skipped and counted), and the ids and
// loss mask of an example held to jinja2 rendering each family's canonical template and Hugging
// Face tokenizers encoding the whole text (tests/reference/sft_reference.py); Loom's plain
// template by hand.
#include "data/instruction_data.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "data/gpt2_test_files.h"
#include "data/reference_files.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

std::vector<std::vector<ChatMessage>> read_all(const std::vector<std::string>& files, InstructionFormat format,
                                               bool skip_bad = false, uint64_t* skipped = nullptr) {
  InstructionReader reader(files, format, skip_bad);
  std::vector<std::vector<ChatMessage>> out;
  for (std::vector<ChatMessage> m; reader.next(m);) out.push_back(m);
  if (skipped) *skipped = reader.skipped();
  return out;
}

TEST(InstructionDataTest, EveryFormatReadsIntoAConversation) {
  TempDir dir("instructions");
  std::ofstream(dir / "chat.jsonl")
      << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, )"
      << R"({"role": "assistant", "content": "Hello\nthere"}], "id": 7})" << "\n\n"
      << R"({"messages": [{"role": "user", "content": "caf\u00e9?"}, {"role": "assistant", "content": ""}]})" << "\r\n";
  std::ofstream(dir / "pc.jsonl") << R"({"prompt": "2+2=", "completion": "4"})" << "\n";
  std::ofstream(dir / "alpaca.jsonl") << R"({"instruction": "Add", "input": "2 and 2", "output": "4"})" << "\n"
                                      << R"({"instruction": "Greet", "input": "", "output": "Hi"})" << "\n"
                                      << R"({"instruction": "Wave", "output": "o/"})" << "\n";
  std::ofstream(dir / "alpaca.json") << "[\n  {\"instruction\": \"Add\", \"input\": \"1 and 1\", \"output\": \"2\"},\n"
                                     << "  {\"instruction\": \"Stop\", \"output\": \"ok\"}\n]\n";
  using M = std::vector<ChatMessage>;
  EXPECT_EQ(read_all({dir / "chat.jsonl"}, InstructionFormat::kChat),
            (std::vector<M>{{{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello\nthere"}},
                            {{"user", "caf\xC3\xA9?"}, {"assistant", ""}}}));
  EXPECT_EQ(read_all({dir / "pc.jsonl"}, InstructionFormat::kPromptCompletion),
            (std::vector<M>{{{"user", "2+2="}, {"assistant", "4"}}}));
  EXPECT_EQ(read_all({dir / "alpaca.jsonl", dir / "alpaca.json"}, InstructionFormat::kAlpaca),
            (std::vector<M>{{{"user", "Add\n\n2 and 2"}, {"assistant", "4"}},
                            {{"user", "Greet"}, {"assistant", "Hi"}},
                            {{"user", "Wave"}, {"assistant", "o/"}},
                            {{"user", "Add\n\n1 and 1"}, {"assistant", "2"}},
                            {{"user", "Stop"}, {"assistant", "ok"}}}));
}

TEST(InstructionDataTest, BadExamplesNameFileAndLineAndAreSkippedAndCountedWhenAsked) {
  TempDir dir("instructions_bad");
  const std::string file = dir / "bad.jsonl";
  std::ofstream(file) << R"({"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "a"}]})" << "\n"
                      << R"({"text": "no messages"})" << "\n"
                      << R"({"messages": [{"role": "robot", "content": "x"}]})" << "\n"
                      << R"({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]})" << "\n"
                      << R"({"messages": [{"role": "user", "content": "x"},)" << "\n"
                      << R"({"messages": [{"role": "user", "content": "only a question"}]})" << "\n"
                      << R"({"messages": "hello"})" << "\n"
                      << R"([1, 2])" << "\n"
                      << R"({"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "b"}]})" << "\n";
  const std::vector<std::string> expected = {
      file + ":2: the example has no \"messages\" field",
      file + ":3: message 0 has the role \"robot\" but the roles are system, user and assistant",
      file + ":4: message 0 has a \"content\" that is a number but must be a string",
      file + ":5: invalid JSON at byte offset",
      file + ":6: the example has no assistant message to train on",
      file + ":7: the example's \"messages\" is a string but must be a list of messages",
      file + ":8: the example is an array but must be a JSON object",
  };
  // Stopping: the first bad line, with the way out.
  const std::string first = testing::user_error_of([&] { read_all({file}, InstructionFormat::kChat); });
  EXPECT_NE(first.find(expected[0]), std::string::npos) << first;
  EXPECT_NE(first.find("--on-bad-example skip"), std::string::npos) << first;
  // Each bad line alone, stopping there.
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (size_t i = 0; i < expected.size(); ++i) {
    const std::string one = dir / ("one" + std::to_string(i) + ".jsonl");
    std::ofstream(one) << lines[0] << "\n" << lines[i + 1] << "\n";
    const std::string message = testing::user_error_of([&] { read_all({one}, InstructionFormat::kChat); });
    std::string want = expected[i];
    want.replace(0, file.size(), one);
    want.replace(one.size() + 1, 1, "2");
    EXPECT_NE(message.find(want), std::string::npos) << "want: " << want << "\ngot: " << message;
  }
  uint64_t skipped = 0;
  const auto kept = read_all({file}, InstructionFormat::kChat, /*skip_bad=*/true, &skipped);
  EXPECT_EQ(kept.size(), 2u);
  EXPECT_EQ(skipped, expected.size());
  InstructionReader reader({file}, InstructionFormat::kChat, true);
  for (std::vector<ChatMessage> m; reader.next(m);) {
  }
  EXPECT_NE(reader.first_skipped().find(expected[0]), std::string::npos) << reader.first_skipped();

  std::ofstream(dir / "pc.jsonl") << R"({"prompt": "x"})" << "\n";
  std::string message = testing::user_error_of([&] { read_all({dir / "pc.jsonl"}, InstructionFormat::kPromptCompletion); });
  EXPECT_NE(message.find(dir / "pc.jsonl" + ":1: the example has no \"completion\" field (it has 'prompt')"),
            std::string::npos) << message;
  std::ofstream(dir / "alpaca.json") << "[\n{\"instruction\": \"a\", \"output\": \"b\"},\n{\"instruction\": \"a\", \"output\": 3}\n]";
  message = testing::user_error_of([&] { read_all({dir / "alpaca.json"}, InstructionFormat::kAlpaca); });
  EXPECT_NE(message.find(dir / "alpaca.json" + ":3: the example's \"output\" is a number but must be a string"),
            std::string::npos) << message;
  std::ofstream(dir / "broken.json") << "[\n{\"instruction\": \"a\",\n \"output\": }\n]";
  message = testing::user_error_of([&] { read_all({dir / "broken.json"}, InstructionFormat::kAlpaca, true); });
  EXPECT_NE(message.find(dir / "broken.json" + ":3: invalid JSON at byte offset"), std::string::npos) << message;
}

TEST(InstructionDataTest, IdsAndMaskAreThoseOfJinja2AndTokenizersOnTheWholeText) {
  TempDir dir("instructions_reference");
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR + "/tests/reference/sft_reference.py make " +
                              dir.str();
  ASSERT_EQ(std::system(command.c_str()), 0) << "the Python reference failed (it needs jinja2 and tokenizers)";
  const std::vector<std::string> records = testing::read_records(dir / "conversations");
  std::vector<std::vector<ChatMessage>> conversations;
  for (size_t pos = 0; pos < records.size();) {
    const size_t n = std::stoul(records[pos]);
    std::vector<ChatMessage> messages;
    for (size_t i = 0; i < n; ++i) messages.push_back({records[pos + 1 + 2 * i], records[pos + 2 + 2 * i]});
    conversations.push_back(messages);
    pos += 1 + 2 * n;
  }
  for (const std::string family : {"chatml", "llama3"}) {
    const auto tokenizer = load_tokenizer(dir / (family + "/tokenizer.json"));
    const ChatTemplate chat = load_chat_template(dir / (family + "/tokenizer_config.json"));
    const std::vector<std::string> expected = testing::lines_of(dir / (family + "/expected"));
    ASSERT_EQ(expected.size(), 2 * conversations.size());
    for (size_t c = 0; c < conversations.size(); ++c) {
      std::vector<int32_t> ids;
      std::vector<uint8_t> mask;
      encode_example(*tokenizer, chat, conversations[c], false, ids, mask);
      EXPECT_EQ(ids, testing::ints_of(expected[2 * c])) << family << " conversation " << c;
      const std::vector<int32_t> want_mask = testing::ints_of(expected[2 * c + 1]);
      EXPECT_EQ(std::vector<int32_t>(mask.begin(), mask.end()), want_mask) << family << " conversation " << c;
      ids.clear();
      mask.clear();
      encode_example(*tokenizer, chat, conversations[c], /*train_on_all=*/true, ids, mask);
      EXPECT_EQ(mask, std::vector<uint8_t>(ids.size(), 1)) << family << " conversation " << c;
    }
  }
}

TEST(InstructionDataTest, ThePlainTemplateCountsTheAnswersAndTheEndOfDocument) {
  TempDir dir("instructions_plain");
  testing::write_tiny_gpt2(dir.path() / "gpt2");
  const auto tokenizer = load_tokenizer(dir.file("gpt2"));
  const ChatTemplate plain{ChatTemplateFamily::kPlain, ""};
  const std::vector<ChatMessage> messages = {{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"},
                                             {"user", "Q2"}, {"assistant", "A2"}};
  EXPECT_EQ(render_chat(plain, messages, false),
            "S\n\n### Instruction:\nQ1\n\n### Response:\nA1\n\n### Instruction:\nQ2\n\n### Response:\nA2");
  EXPECT_EQ(render_chat(plain, {{"user", "Q"}}, true), "### Instruction:\nQ\n\n### Response:\n");
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  encode_example(*tokenizer, plain, messages, false, ids, mask);
  ASSERT_EQ(ids.size(), mask.size());
  EXPECT_EQ(ids.back(), testing::kTinyGpt2Eos);
  EXPECT_EQ(mask.back(), 1);
  // The tiny tokenizer's ids are bytes here: the counted ones spell the two answers.
  std::string counted;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    if (mask[i]) counted += static_cast<char>(ids[i]);
  }
  EXPECT_EQ(counted, "A1A2");
  EXPECT_EQ(tokenizer->decode(std::vector<int32_t>(ids.begin(), ids.end() - 1)), render_chat(plain, messages, false));
  // A conversation that ends with the user's turn does not count its end.
  ids.clear();
  mask.clear();
  encode_example(*tokenizer, plain, {{"user", "Q"}, {"assistant", "A"}, {"user", "Q"}}, false, ids, mask);
  EXPECT_EQ(mask.back(), 0);
}

}  // namespace
}  // namespace loom
