// prepare_dataset with GPT-2's hand-made tokenizer: documents come back exactly from the shards of
// their split, the split follows is_validation_document, the files are the same for any thread
// count, both splits get a document, an existing dataset is refused unless forced, and a failed
// run leaves nothing behind.
#include "data/prepare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/megatron_writer.h"
#include "data/token_data_util.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::user_error_of;
using testing::write_bytes;
using Texts = std::vector<std::string>;

// Paragraphs of words, spaces, digits, punctuation and non-ASCII letters; no blank lines inside,
// no whitespace at either end, all different.
Texts generated_documents(int count, uint32_t seed) {
  const Texts words = {"the", "cat's", "12", "caf\xC3\xA9", "is", "\xE4\xB8\xAD", "(x)", "--", "\xF0\x9F\x98\x80"};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> word(0, words.size() - 1);
  std::uniform_int_distribution<int> length(1, 30), separator(0, 9);
  Texts docs(static_cast<size_t>(count));
  for (size_t i = 0; i < docs.size(); ++i) {
    std::string& doc = docs[i];
    doc = "doc" + std::to_string(i);
    for (int w = length(gen); w > 0; --w) {
      const int s = separator(gen);
      doc += s == 0 ? "\n" : s == 1 ? "  " : s == 2 ? "\t" : " ";
      doc += words[word(gen)];
    }
  }
  return docs;
}

std::string blank_line_file(const Texts& docs) {
  std::string text;
  for (const std::string& doc : docs) text += doc + "\n\n";
  return text;
}

// The documents of a split: its stream cut after each eos, decoded without the eos.
Texts split_documents(const std::string& dir, const std::string& split, const Tokenizer& tokenizer) {
  const TokenDataset dataset = TokenDataset::open_split(dir, split);
  std::vector<int32_t> stream(dataset.tokens());
  dataset.read(0, stream.size(), stream.data());
  EXPECT_FALSE(stream.empty());
  EXPECT_EQ(stream.back(), tokenizer.eos_id()) << "the stream ends with eos";
  Texts docs;
  auto begin = stream.begin();
  for (auto it = stream.begin(); it != stream.end(); ++it) {
    if (*it != tokenizer.eos_id()) continue;
    docs.push_back(tokenizer.decode(std::vector<int32_t>(begin, it)));
    begin = it + 1;
  }
  return docs;
}

std::map<std::string, std::string> files_of(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    files[e.path().filename().string()] = e.is_directory() ? "(directory)" : testing::read_bytes(e.path());
  }
  return files;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& [name, bytes] : files_of(dir)) names.push_back(name);
  return names;
}

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_tiny_gpt2(dir_.path() / "gpt2");
    tokenizer_ = load_tokenizer(dir_.file("gpt2"));
  }
  PrepareOptions options(const std::vector<std::string>& inputs, const std::string& out) const {
    PrepareOptions o;
    o.inputs = inputs;
    o.out_dir = out;
    o.tokenizer = dir_.file("gpt2");
    return o;
  }
  TempDir dir_{"prepare"};
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(PrepareTest, DocumentsComeBackFromTheirSplit) {
  const Texts docs = generated_documents(300, 1);
  // One document per file, in directories; sorted paths give document order.
  for (size_t i = 0; i < docs.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "in/%02zu/%03zu.txt", i / 100, i);
    fs::create_directories((dir_.path() / name).parent_path());
    write_bytes(dir_.file(name), docs[i]);
  }
  PrepareOptions o = options({dir_.file("in")}, dir_.file("out"));
  o.val_fraction = 0.2;
  o.seed = 7;
  o.max_shard_bytes = 4096;
  o.threads = 2;
  o.batch_bytes = 512;
  const PrepareSummary s = prepare_dataset(o);

  Texts train, val;
  for (size_t i = 0; i < docs.size(); ++i) {
    const bool last = i + 1 == docs.size();
    (is_validation_document(7, i, 0.2) && !last ? val : train).push_back(docs[i]);
  }
  // The last document follows the same rule unless a split would be empty (not the case here).
  if (is_validation_document(7, docs.size() - 1, 0.2)) {
    val.push_back(train.back());
    train.pop_back();
  }
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_), train);
  EXPECT_EQ(split_documents(o.out_dir, "val", *tokenizer_), val);
  EXPECT_GT(val.size(), 30u);
  EXPECT_LT(val.size(), 90u);

  EXPECT_EQ(s.files, 300u);
  EXPECT_EQ(s.documents, 300u);
  EXPECT_EQ(s.train.documents, train.size());
  EXPECT_EQ(s.val.documents, val.size());
  EXPECT_EQ(s.train.tokens + s.val.tokens, s.tokens);
  EXPECT_EQ(s.train.tokens, TokenDataset::open_split(o.out_dir, "train").tokens());
  EXPECT_GT(s.train.shards.size(), 3u);
  uint64_t bytes = 0;
  for (const std::string& doc : docs) bytes += doc.size();
  EXPECT_EQ(s.text_bytes, bytes);
  EXPECT_FALSE(s.trained_tokenizer);
  EXPECT_EQ(s.tokenizer, tokenizer_->description());

  // The tokenizer's files are copied: the directory is a dataset on its own.
  EXPECT_EQ(dataset_tokenizer_path(o.out_dir), o.out_dir);
  EXPECT_EQ(testing::read_bytes(dir_.file("out/encoder.json")), testing::read_bytes(dir_.file("gpt2/encoder.json")));
  EXPECT_EQ(testing::read_bytes(dir_.file("out/vocab.bpe")), testing::read_bytes(dir_.file("gpt2/vocab.bpe")));
  for (const std::string& name : names_in(o.out_dir)) {
    EXPECT_TRUE(name == "encoder.json" || name == "vocab.bpe" || name.ends_with(".split.pbtxt") ||
                name.ends_with(".tok"))
        << name;
  }
}

// Expects the documents of both splits, in order, to be `docs`, with the split of each following
// is_validation_document (the last document's too, when both splits have others).
void expect_documents(const std::string& dir, const Texts& docs, uint64_t seed, double val_fraction,
                      const Tokenizer& tokenizer) {
  Texts train, val;
  for (size_t i = 0; i < docs.size(); ++i) (is_validation_document(seed, i, val_fraction) ? val : train).push_back(docs[i]);
  EXPECT_TRUE(split_documents(dir, "train", tokenizer) == train) << dir;
  EXPECT_TRUE(split_documents(dir, "val", tokenizer) == val) << dir;
}

TEST_F(PrepareTest, SameFilesForAnyThreadCount) {
  Texts docs = generated_documents(2000, 2);
  // Every 100th document is long: cut into pieces that go to different batches and threads.
  const Texts parts = generated_documents(60, 6);
  for (size_t i = 50; i < docs.size(); i += 100) {
    for (const std::string& part : parts) docs[i] += "\n" + part;
  }
  write_bytes(dir_.file("corpus.txt"), blank_line_file(docs));
  std::map<std::string, std::string> first;
  for (const int threads : {1, 2, 4}) {
    PrepareOptions o = options({dir_.file("corpus.txt")}, dir_.file("out" + std::to_string(threads)));
    o.corpus.documents = DocumentBoundary::kBlankLine;
    o.val_fraction = 0.1;
    o.max_shard_bytes = 8192;
    o.threads = threads;
    o.batch_bytes = 1000;
    const PrepareSummary s = prepare_dataset(o);
    EXPECT_EQ(s.documents, 2000u);
    expect_documents(o.out_dir, docs, o.seed, o.val_fraction, *tokenizer_);
    const std::map<std::string, std::string> files = files_of(o.out_dir);
    if (first.empty()) {
      first = files;
      EXPECT_GT(first.size(), 10u);
      continue;
    }
    ASSERT_EQ(files.size(), first.size()) << threads << " threads";
    for (const auto& [name, bytes] : first) {
      EXPECT_TRUE(files.count(name) && files.at(name) == bytes) << name << " differs with " << threads << " threads";
    }
  }
}

TEST_F(PrepareTest, JsonlValFractionIsRespected) {
  std::string jsonl;
  for (int i = 0; i < 4000; ++i) jsonl += "{\"text\": \"line " + std::to_string(i) + "\\n\"}\n";
  write_bytes(dir_.file("c.jsonl"), jsonl);
  PrepareOptions o = options({dir_.file("c.jsonl")}, dir_.file("out"));
  o.corpus.format = CorpusFormat::kJsonl;
  o.val_fraction = 0.05;
  const PrepareSummary s = prepare_dataset(o);
  EXPECT_EQ(s.documents, 4000u);
  EXPECT_GT(s.val.documents, 150u);  // 200 expected, standard deviation 14
  EXPECT_LT(s.val.documents, 250u);
  const Texts val = split_documents(o.out_dir, "val", *tokenizer_);
  ASSERT_EQ(val.size(), s.val.documents);
  EXPECT_EQ(val[0].substr(0, 5), "line ");

  o.out_dir = dir_.file("no_val");
  o.val_fraction = 0;
  EXPECT_EQ(prepare_dataset(o).val.documents, 0u);
  EXPECT_FALSE(fs::exists(split_descriptor_path(o.out_dir, "val")));
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_).size(), 4000u);
}

TEST_F(PrepareTest, BothSplitsGetADocumentWhenTheyCan) {
  write_bytes(dir_.file("two.txt"), "first\n\nsecond\n");
  PrepareOptions o = options({dir_.file("two.txt")}, dir_.file("rare_val"));
  o.corpus.documents = DocumentBoundary::kBlankLine;
  o.val_fraction = 1e-9;
  PrepareSummary s = prepare_dataset(o);
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_), Texts{"first"});
  EXPECT_EQ(split_documents(o.out_dir, "val", *tokenizer_), Texts{"second"});

  o.out_dir = dir_.file("rare_train");
  o.val_fraction = 1 - 1e-9;
  s = prepare_dataset(o);
  EXPECT_EQ(split_documents(o.out_dir, "val", *tokenizer_), Texts{"first"});
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_), Texts{"second"});

  write_bytes(dir_.file("one.txt"), "alone");
  o = options({dir_.file("one.txt")}, dir_.file("single"));
  o.val_fraction = 0.5;
  s = prepare_dataset(o);
  EXPECT_EQ(s.train.documents, 1u);
  EXPECT_EQ(s.val.documents, 0u);
  EXPECT_FALSE(fs::exists(split_descriptor_path(o.out_dir, "val"))) << "no val split of one document";
}

TEST_F(PrepareTest, AnExistingDatasetIsRefusedUnlessForced) {
  write_bytes(dir_.file("big.txt"), blank_line_file(generated_documents(400, 3)));
  write_bytes(dir_.file("small.txt"), blank_line_file(generated_documents(20, 4)));
  PrepareOptions o = options({dir_.file("big.txt")}, dir_.file("out"));
  o.corpus.documents = DocumentBoundary::kBlankLine;
  o.max_shard_bytes = 2048;
  prepare_dataset(o);
  fs::create_directories(dir_.path() / "out/notes");
  write_bytes(dir_.file("out/README"), "mine");
  const auto before = files_of(o.out_dir);

  o.inputs = {dir_.file("small.txt")};
  EXPECT_EQ(user_error_of([&] { prepare_dataset(o); }),
            "output directory " + o.out_dir +
                " already holds a dataset (train.split.pbtxt); choose another --out, or pass --force to replace it");
  EXPECT_EQ(files_of(o.out_dir), before) << "a refused run touches nothing";

  o.force = true;
  const PrepareSummary s = prepare_dataset(o);
  EXPECT_EQ(s.documents, 20u);
  const auto after = files_of(o.out_dir);
  EXPECT_LT(after.size(), before.size()) << "the old, longer dataset's shards are gone";
  EXPECT_EQ(after.at("README"), "mine") << "what is not the dataset's stays";
  EXPECT_TRUE(fs::is_directory(dir_.path() / "out/notes"));
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_).size() + s.val.documents, 20u);

  write_bytes(dir_.file("file_out"), "x");
  o.out_dir = dir_.file("file_out");
  EXPECT_EQ(user_error_of([&] { prepare_dataset(o); }),
            "output directory " + o.out_dir + " exists and is not a directory; choose another --out");
}

TEST_F(PrepareTest, AFailedRunLeavesNothingBehind) {
  // Enough good documents for several shards before the bad byte.
  fs::create_directories(dir_.path() / "in");
  write_bytes(dir_.file("in/a.txt"), blank_line_file(generated_documents(300, 5)));
  write_bytes(dir_.file("in/b.txt"), "fine\n\nnot \xFF fine\n");
  PrepareOptions o = options({dir_.file("in")}, dir_.file("new/out"));
  o.corpus.documents = DocumentBoundary::kBlankLine;
  o.max_shard_bytes = 1024;
  o.threads = 2;
  o.batch_bytes = 256;
  EXPECT_EQ(user_error_of([&] { prepare_dataset(o); }),
            dir_.file("in/b.txt") +
                ":3: not valid UTF-8 at byte offset 4 of the line; convert the file to UTF-8 or leave it out of the inputs");
  EXPECT_FALSE(fs::exists(o.out_dir)) << "the directory it made is removed";

  fs::create_directories(dir_.path() / "existing");
  write_bytes(dir_.file("existing/notes.txt"), "keep");
  o.out_dir = dir_.file("existing");
  EXPECT_THROW(prepare_dataset(o), UserError);
  EXPECT_EQ(names_in(o.out_dir), std::vector<std::string>{"notes.txt"});

  // No documents at all.
  write_bytes(dir_.file("blank.txt"), "\n \n\t\n");
  o = options({dir_.file("blank.txt"), dir_.file("empty")}, dir_.file("none"));
  fs::create_directories(dir_.path() / "empty");
  o.corpus.documents = DocumentBoundary::kBlankLine;
  EXPECT_EQ(user_error_of([&] { prepare_dataset(o); }),
            "found no documents in the inputs " + dir_.file("blank.txt") + ", " + dir_.file("empty") +
                " (1 file; empty and whitespace-only documents are skipped)");
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST_F(PrepareTest, ATokenizerInsideTheOutputDirectoryIsUsedInPlace) {
  testing::write_tiny_gpt2(dir_.path() / "out");
  write_bytes(dir_.file("a.txt"), "the cat's 12");
  PrepareOptions o = options({dir_.file("a.txt")}, dir_.file("out"));
  o.tokenizer = dir_.file("out/encoder.json");
  EXPECT_EQ(prepare_dataset(o).documents, 1u);
  EXPECT_EQ(split_documents(o.out_dir, "train", *tokenizer_), Texts{"the cat's 12"});
  EXPECT_EQ(dataset_tokenizer_path(o.out_dir), o.out_dir);
  o.force = true;  // replaces the dataset, keeps the tokenizer it reads
  EXPECT_EQ(prepare_dataset(o).documents, 1u);
  EXPECT_TRUE(fs::exists(dir_.path() / "out/vocab.bpe"));
}

TEST_F(PrepareTest, OptionErrors) {
  write_bytes(dir_.file("a.txt"), "text");
  PrepareOptions o = options({dir_.file("a.txt")}, dir_.file("out"));
  const auto error = [&](const std::function<void(PrepareOptions&)>& change) {
    PrepareOptions bad = o;
    change(bad);
    return user_error_of([&] { prepare_dataset(bad); });
  };
  EXPECT_EQ(error([](PrepareOptions& b) { b.vocab_size = 8000; }),
            "give either a tokenizer to use or a vocabulary size to train one with, not both");
  EXPECT_EQ(error([](PrepareOptions& b) { b.tokenizer.clear(); }),
            "give either a tokenizer to use or a vocabulary size to train one with, not neither");
  EXPECT_NE(error([](PrepareOptions& b) {
              b.tokenizer.clear();
              b.vocab_size = 100;
            }).find("vocab size 100 is too small"),
            std::string::npos);
  EXPECT_EQ(error([](PrepareOptions& b) { b.val_fraction = 1; }),
            "validation fraction 1 must be at least 0 and below 1 (e.g. 0.01)");
  EXPECT_EQ(error([&](PrepareOptions& b) { b.tokenizer = dir_.file("missing.model"); }).rfind("tokenizer " + dir_.file("missing.model") + " does not exist", 0), 0u);
  EXPECT_FALSE(fs::exists(o.out_dir)) << "no option error creates the directory";
}

// The documents of a one-shard split, by its document index.
std::vector<std::vector<int32_t>> shard_documents(const std::string& dir, const std::string& split) {
  const TokenDataset dataset = TokenDataset::open_split(dir, split);
  EXPECT_EQ(dataset.shard_count(), 1u);
  const TokenShard& shard = dataset.shard(0);
  std::vector<std::vector<int32_t>> docs;
  for (uint64_t d = 0, begin = 0; d < shard.documents(); ++d) {
    docs.emplace_back(shard.document_end(d) - begin);
    shard.read(begin, docs.back().size(), docs.back().data());
    begin = shard.document_end(d);
  }
  return docs;
}

TEST_F(PrepareTest, MegatronDatasetsBecomeShardsDocumentForDocument) {
  // Two datasets; documents of one or more sequences (read as one), one document empty.
  const auto vocab = static_cast<int64_t>(tokenizer_->vocab_size());
  testing::MegatronDocuments first, second;
  std::vector<std::vector<int32_t>> expected;
  std::mt19937 gen(5);
  std::uniform_int_distribution<int64_t> id(0, vocab - 1);
  for (int d = 0; d < 60; ++d) {
    testing::MegatronDocuments& docs = d < 40 ? first : second;
    docs.emplace_back(static_cast<size_t>(1 + d % 3));
    std::vector<int32_t> whole;
    for (auto& sequence : docs.back()) {
      sequence.resize(static_cast<size_t>(d == 7 ? 0 : 1 + (d * 7) % 23));
      for (int64_t& t : sequence) t = id(gen);
      whole.insert(whole.end(), sequence.begin(), sequence.end());
    }
    if (!whole.empty()) expected.push_back(whole);
  }
  testing::write_megatron_dataset(dir_.file("first_text_document"), "uint16", first);
  testing::write_megatron_dataset(dir_.file("second_text_document"), "int32", second);
  PrepareOptions o = options({dir_.file("first_text_document"), dir_.file("second_text_document.idx")}, dir_.file("out"));
  o.val_fraction = 0.25;
  const PrepareSummary s = prepare_dataset(o);
  EXPECT_TRUE(s.megatron);
  EXPECT_EQ(s.files, 2u);
  EXPECT_EQ(s.documents, expected.size());
  EXPECT_EQ(s.skipped_documents, 1u) << "the empty document";
  const auto train = shard_documents(o.out_dir, "train"), val = shard_documents(o.out_dir, "val");
  EXPECT_EQ(train.size() + val.size(), expected.size());
  EXPECT_GE(val.size(), 5u);
  size_t t = 0, v = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const bool in_val = v < val.size() && val[v] == expected[i];
    ASSERT_TRUE(in_val || (t < train.size() && train[t] == expected[i])) << "document " << i << " is next in neither split";
    ++(in_val ? v : t);
  }
  EXPECT_EQ(dataset_tokenizer_path(o.out_dir), o.out_dir) << "the given tokenizer is copied, for samples";
  EXPECT_EQ(TokenDataset::open_split(o.out_dir, "train").vocab_size(), static_cast<uint32_t>(vocab));

  // No tokenizer: the vocabulary given, else the largest id + 1.
  o.tokenizer.clear();
  o.force = true;
  o.vocab_size = 70000;
  prepare_dataset(o);
  EXPECT_EQ(TokenDataset::open_split(o.out_dir, "train").vocab_size(), 70000u);
  EXPECT_EQ(dataset_tokenizer_path(o.out_dir), "") << "the old tokenizer went with the old dataset";
  o.vocab_size = 0;
  int32_t largest = 0;
  for (const auto& doc : expected) largest = std::max(largest, *std::max_element(doc.begin(), doc.end()));
  EXPECT_NE(prepare_dataset(o).tokenizer.find("vocabulary " + std::to_string(largest + 1)), std::string::npos);
  EXPECT_EQ(TokenDataset::open_split(o.out_dir, "train").vocab_size(), static_cast<uint32_t>(largest + 1));

  write_bytes(dir_.file("a.txt"), "text");
  o.inputs = {dir_.file("first_text_document"), dir_.file("a.txt")};
  EXPECT_EQ(user_error_of([&] { prepare_dataset(o); }),
            "input " + dir_.file("first_text_document") + " is a Megatron dataset but " + dir_.file("a.txt") +
                " is not; convert Megatron datasets in a run of their own");
  o.inputs = {dir_.file("second_text_document")};
  o.vocab_size = 3;
  EXPECT_NE(user_error_of([&] { prepare_dataset(o); }).find("Megatron data file " + dir_.file("second_text_document.bin") +
                                                           " holds token id"),
            std::string::npos);
}

// Instruction data with the plain template (the tiny tokenizer has no chat template): one
// document per example, with its loss mask, in version 2 shards of both splits.
TEST_F(PrepareTest, InstructionDataBecomesMaskedExamples) {
  std::string jsonl;
  for (int i = 0; i < 40; ++i) {
    // Two letters that the tiny tokenizer never merges: its ids are the bytes.
    const std::string tag = {static_cast<char>('a' + i / 26), static_cast<char>('a' + i % 26)};
    jsonl += "{\"prompt\": \"Q" + tag + "\", \"completion\": \"A" + tag + "\"}\n";
  }
  write_bytes(dir_.file("pc.jsonl"), jsonl);
  PrepareOptions o = options({dir_.file("pc.jsonl")}, dir_.file("out"));
  o.val_fraction = 0.2;
  o.instructions = InstructionOptions{InstructionFormat::kPromptCompletion, /*plain_template=*/true, false, false};
  const PrepareSummary s = prepare_dataset(o);
  EXPECT_TRUE(s.instructions);
  EXPECT_EQ(s.documents, 40u);
  EXPECT_GT(s.val.documents, 0u);
  EXPECT_EQ(s.train.documents + s.val.documents, 40u);
  uint64_t counted = 0;
  for (const std::string split : {"train", "val"}) {
    const TokenDataset d = TokenDataset::open_split(o.out_dir, split);
    ASSERT_TRUE(d.has_loss_mask()) << split;
    d.verify();
    std::vector<int32_t> ids(d.tokens());
    std::vector<uint8_t> mask(d.tokens());
    d.read(0, ids.size(), ids.data());
    d.read_loss_mask(0, mask.size(), mask.data());
    uint64_t begin = 0;
    for (const uint64_t end : d.document_ends()) {
      const std::string text = tokenizer_->decode(std::vector<int32_t>(ids.begin() + static_cast<ptrdiff_t>(begin),
                                                                       ids.begin() + static_cast<ptrdiff_t>(end) - 1));
      ASSERT_TRUE(text.starts_with("### Instruction:\nQ")) << text;
      std::string answer;
      for (uint64_t t = begin; t + 1 < end; ++t) {
        if (mask[t]) answer += static_cast<char>(ids[t]);
      }
      // Q<tag> and A<tag> share the tag: the counted tokens are exactly the answer.
      EXPECT_EQ("A" + text.substr(text.find('Q') + 1, text.find('\n', text.find('Q')) - text.find('Q') - 1), answer);
      EXPECT_EQ(ids[end - 1], tokenizer_->eos_id());
      EXPECT_EQ(mask[end - 1], 1);
      begin = end;
    }
    for (uint8_t m : mask) counted += m;
  }
  EXPECT_EQ(counted, s.counted_tokens);
}

TEST_F(PrepareTest, BadInstructionDataStopsWithNothingWrittenOrIsSkippedAndCounted) {
  write_bytes(dir_.file("chat.jsonl"),
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n"
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"bot\", \"content\": \"A\"}]}\n");
  PrepareOptions o = options({dir_.file("chat.jsonl")}, dir_.file("out"));
  o.max_shard_bytes = 128;
  o.instructions = InstructionOptions{InstructionFormat::kChat, true, false, false};
  std::string message = user_error_of([&] { prepare_dataset(o); });
  EXPECT_NE(message.find(dir_.file("chat.jsonl") + ":2: message 1 has the role \"bot\""), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir)) << "nothing half written";
  o.instructions->skip_bad_examples = true;
  const PrepareSummary s = prepare_dataset(o);
  EXPECT_EQ(s.documents, 1u);
  EXPECT_EQ(s.bad_examples, 1u);
  EXPECT_NE(s.first_bad_example.find(":2: message 1"), std::string::npos) << s.first_bad_example;
  // The tiny GPT-2 tokenizer has no tokenizer_config.json: the model's template is one clear error.
  o.instructions->plain_template = false;
  o.out_dir = dir_.file("out2");
  message = user_error_of([&] { prepare_dataset(o); });
  EXPECT_EQ(message, "the tokenizer " + dir_.file("gpt2") + " has no chat template (no tokenizer_config.json with a "
                     "chat_template); pass --template plain to render the examples with Loom's plain instruction template");
  EXPECT_FALSE(fs::exists(o.out_dir));
  // All bad: no examples.
  write_bytes(dir_.file("bad.jsonl"), "{\"x\": 1}\n");
  o = options({dir_.file("bad.jsonl")}, dir_.file("out3"));
  o.instructions = InstructionOptions{InstructionFormat::kChat, true, false, true};
  message = user_error_of([&] { prepare_dataset(o); });
  EXPECT_NE(message.find("found no examples in the inputs " + dir_.file("bad.jsonl") + " (all 1 were bad; the first: "),
            std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST(DatasetTokenizerPathTest, SentencePieceThenGpt2ThenNothing) {
  TempDir dir("dataset_tokenizer");
  EXPECT_EQ(dataset_tokenizer_path(dir.str()), "");
  write_bytes(dir.file("encoder.json"), "{}");
  EXPECT_EQ(dataset_tokenizer_path(dir.str()), "") << "vocab.bpe is missing";
  write_bytes(dir.file("vocab.bpe"), "");
  EXPECT_EQ(dataset_tokenizer_path(dir.str()), dir.str());
  write_bytes(dir.file("tokenizer.model"), "");
  EXPECT_EQ(dataset_tokenizer_path(dir.str()), dir.file("tokenizer.model"));
}

TEST(IsValidationDocumentTest, AFunctionOfSeedAndIndexWithTheGivenRate) {
  int in_val = 0, differ = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    in_val += is_validation_document(3, i, 0.1);
    differ += is_validation_document(3, i, 0.1) != is_validation_document(4, i, 0.1);
    EXPECT_FALSE(is_validation_document(3, i, 0));
    EXPECT_TRUE(!is_validation_document(3, i, 0.05) || is_validation_document(3, i, 0.1)) << "nested in the rate";
  }
  EXPECT_NEAR(in_val, 2000, 150);  // standard deviation 42
  EXPECT_NEAR(differ, 3600, 250);  // 2 * 0.1 * 0.9 of them
}

}  // namespace
}  // namespace loom
