// Chat templates against jinja2 rendering the ChatML and Llama 3 families' canonical templates
// (tests/reference/chat_template_reference.py, with transformers' environment and options): the
// family read from tokenizer_config.json, and the prompt text of conversations with and without
// the generation prompt, including contents with surrounding whitespace that Llama 3 trims.
#include "data/chat_template.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "data/reference_files.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

std::string python_command(const std::string& args) {
  return std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR + "/tests/reference/chat_template_reference.py " + args;
}

std::vector<std::vector<ChatMessage>> conversations() {
  return {
      {{"user", "Hello!"}},
      {{"system", "You are terse."}, {"user", "What is 2+2?"}, {"assistant", "4"}, {"user", "And 3+3?"}},
      {{"user", "  padded content \n\n"}, {"assistant", "\t caf\xC3\xA9 \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87\r\n"}},
      {{"user", "\xE3\x80\x80wide space\xC2\xA0"}, {"assistant", "\x1Cseparators\x1F"}},
      {{"user", ""}, {"assistant", "   "}},
      {{"tool", "{\"result\": 42}"}, {"user", "<|im_start|> inside <|eot_id|>"}},
      {},
  };
}

TEST(ChatTemplateTest, RendersAsJinja2RendersTheFamilysTemplate) {
  TempDir dir("chat_template");
  ASSERT_EQ(std::system(python_command("templates " + dir.str()).c_str()), 0)
      << "the Python reference failed (it needs python3-jinja2: run scripts/setup.sh)";
  const auto convs = conversations();
  {
    std::ofstream out(dir / "conversations", std::ios::binary);
    auto record = [&](const std::string& s) { out << s.size() << "\n" << s << "\n"; };
    for (const auto& messages : convs) {
      record(std::to_string(messages.size()));
      for (const ChatMessage& m : messages) {
        record(m.role);
        record(m.content);
      }
    }
  }
  ASSERT_EQ(std::system(python_command("render " + dir.str() + " " + dir / "conversations").c_str()), 0);
  for (const std::string family : {"chatml", "llama3"}) {
    const ChatTemplate tmpl = load_chat_template(dir / (family + "/tokenizer_config.json"));
    EXPECT_EQ(tmpl.family, family == "chatml" ? ChatTemplateFamily::kChatML : ChatTemplateFamily::kLlama3);
    const std::vector<std::string> expected = testing::read_records(dir / (family + ".rendered"));
    ASSERT_EQ(expected.size(), 2 * convs.size());
    for (size_t i = 0; i < convs.size(); ++i) {
      for (int generation = 0; generation < 2; ++generation) {
        EXPECT_EQ(render_chat(tmpl, convs[i], generation == 1), expected[2 * i + static_cast<size_t>(generation)])
            << family << " conversation " << i << (generation ? " with" : " without") << " the generation prompt";
      }
    }
  }
}

TEST(ChatTemplateTest, ATemplateOfNeitherFamilyIsOneClearSentence) {
  TempDir dir("chat_template_bad");
  std::ofstream(dir / "mistral.json") << R"({"chat_template": "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"})";
  std::ofstream(dir / "none.json") << R"({"bos_token": "<s>"})";
  std::ofstream(dir / "named.json") << R"({"chat_template": [{"name": "default", "template": "<|im_start|>{{ x }}"}]})";
  try {
    load_chat_template(dir / "mistral.json");
    ADD_FAILURE() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(dir / "mistral.json" + ": the chat_template is of neither family Loom renders"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(load_chat_template(dir / "none.json"), UserError);
  EXPECT_EQ(load_chat_template(dir / "named.json").family, ChatTemplateFamily::kChatML);
}

}  // namespace
}  // namespace loom
