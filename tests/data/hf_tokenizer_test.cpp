// The tokenizer.json reader on hand-made files: paths and the files behind them (a directory's
// tokenizer.json before its other files, tokenizer_config.json travelling with it into a
// dataset), eos from the config or the well-known names, and one clear sentence for what Loom
// does not read. Ids against Hugging Face `tokenizers`: hf_tokenizer_reference_test.cpp.
#include "data/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/gpt2_bpe.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// A byte-level tokenizer.json: the 256 byte tokens (id = byte), the merge "Ġ t" (256), the added
// tokens given, and `model_type` and `pre_tokenizer` as given.
std::string tokenizer_json(const std::string& added = R"([{"id": 257, "content": "<|endoftext|>", "special": true}])",
                           const std::string& model_type = "BPE",
                           const std::string& pre_tokenizer = R"({"type": "ByteLevel", "add_prefix_space": false})") {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    utf8_append(spelled, gpt2_byte_to_char(static_cast<uint8_t>(b)));
    if (spelled == "\"" || spelled == "\\") spelled = "\\" + spelled;
    vocab += "\"" + spelled + "\": " + std::to_string(b) + ", ";
  }
  vocab += "\"\xC4\xA0t\": 256";
  return R"({"added_tokens": )" + added + R"(, "normalizer": null, "pre_tokenizer": )" + pre_tokenizer +
         R"(, "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": {"type": ")" + model_type +
         R"(", "vocab": {)" + vocab + R"(}, "merges": [["\u0120", "t"]]}})";
}

std::string load_error(const std::string& path) {
  try {
    load_tokenizer(path);
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << path;
  return "";
}

TEST(HfTokenizerTest, DirectoryPrefersTokenizerJsonAndItsConfigTravels) {
  TempDir dir("hf_paths");
  std::ofstream(dir / "tokenizer.json") << tokenizer_json();
  std::ofstream(dir / "tokenizer.model") << "not read";
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": {"content": "<|endoftext|>"}, "bos_token": null})";
  const TokenizerFiles files = tokenizer_files(dir.str());
  EXPECT_EQ(files.kind, TokenizerFiles::Kind::kHuggingFace);
  EXPECT_EQ(files.paths, (std::vector<std::string>{dir / "tokenizer.json", dir / "tokenizer_config.json"}));
  EXPECT_EQ(files.names, (std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"}));
  const auto tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->vocab_size(), 258);
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->encode(" t<|endoftext|>a"), (std::vector<int32_t>{256, 257, 'a'}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{256, 257}), " t<|endoftext|>");

  // `loom prepare` copies both files into the dataset and finds the tokenizer there again.
  std::ofstream(dir / "corpus.txt") << "one document\n\nanother t\n";
  PrepareOptions options;
  options.inputs = {dir / "corpus.txt"};
  options.out_dir = dir / "dataset";
  options.tokenizer = dir.str();
  options.threads = 1;
  prepare_dataset(options, {});
  EXPECT_TRUE(fs::is_regular_file(dir / "dataset/tokenizer.json"));
  EXPECT_TRUE(fs::is_regular_file(dir / "dataset/tokenizer_config.json"));
  EXPECT_EQ(dataset_tokenizer_path(dir / "dataset"), dir / "dataset/tokenizer.json");
}

TEST(HfTokenizerTest, EosFromTheConfigElseWellKnownNames) {
  TempDir dir("hf_eos");
  fs::create_directories(dir.path() / "a");
  std::ofstream(dir / "a/tokenizer.json")
      << tokenizer_json(R"([{"id": 257, "content": "<|endoftext|>"}, {"id": 258, "content": "<|im_end|>"}])");
  EXPECT_EQ(load_tokenizer(dir / "a")->eos_id(), 257);
  std::ofstream(dir / "a/tokenizer_config.json") << R"({"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>"})";
  EXPECT_EQ(load_tokenizer(dir / "a")->eos_id(), 258);
  EXPECT_EQ(load_tokenizer(dir / "a")->bos_id(), 257);
  std::ofstream(dir / "a/tokenizer_config.json") << R"({"eos_token": "<missing>"})";
  EXPECT_NE(load_error(dir / "a").find(dir / "a/tokenizer_config.json" + ": eos_token '<missing>' is not a token of"),
            std::string::npos);
  fs::create_directories(dir.path() / "b");
  std::ofstream(dir / "b/tokenizer.json") << tokenizer_json(R"([{"id": 257, "content": "<pad>"}])");
  EXPECT_NE(load_error(dir / "b").find(dir / "b/tokenizer.json" + ": no end-of-document token"), std::string::npos);
}

TEST(HfTokenizerTest, WhatLoomDoesNotReadIsOneClearSentence) {
  TempDir dir("hf_refused");
  struct Case {
    std::string name, json, expected;
  };
  const std::vector<Case> cases = {
      {"wordpiece.json", tokenizer_json("[]", "WordPiece"), "model type WordPiece is not supported; Loom reads byte-level BPE"},
      {"unigram.json", tokenizer_json("[]", "Unigram"), "model type Unigram is not supported"},
      {"metaspace.json", tokenizer_json("[]", "BPE", R"({"type": "Metaspace", "replacement": "\u2581"})"),
       "pre_tokenizer Metaspace is not supported (Loom reads ByteLevel, Split with behavior Isolated, Digits and "
       "Sequence of these); this is a SentencePiece-style model: give its tokenizer.model instead"},
      {"no_byte_level.json", tokenizer_json("[]", "BPE", "null"), "this BPE tokenizer is not byte-level"},
      {"bad_regex.json",
       tokenizer_json("[]", "BPE", R"({"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated", "invert": false})"),
       "does not compile as a regular expression"},
      {"removed.json",
       tokenizer_json("[]", "BPE", R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed", "invert": false})"),
       "pre_tokenizer Split with behavior Removed"},
      {"not_json.json", "{\"model\": ", "invalid JSON at byte offset"},
  };
  for (const Case& c : cases) {
    std::ofstream(dir / c.name) << c.json;
    const std::string error = load_error(dir / c.name);
    EXPECT_EQ(error.rfind(dir / c.name, 0), 0u) << "the message names the file: " << error;
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.name << ": " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace loom
