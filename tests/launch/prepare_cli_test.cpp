// End-to-end runs of `loom prepare`: a generated corpus (text files, blank-line paragraphs, JSONL)
// with a tokenizer trained on it, read back through TokenDataset and the dataset's own tokenizer
// (every document and eos separator exactly), the same files for 1 and 3 threads, and every kind
// of bad input answered with one line naming the file and exit code 2.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/megatron_writer.h"
#include "data/prepare.h"
#include "data/token_data_util.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "launch/loom_process.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;
using testing::TempDir;
using testing::write_bytes;
using Texts = std::vector<std::string>;

// Documents of made-up words with spaces, tabs, newlines, digits and non-ASCII letters; no blank
// line inside and no whitespace at either end (so that they survive --documents blank-line).
Texts generated_documents(int count, uint32_t seed) {
  const Texts syllables = {"ka", "lo", "mi", "ne", "ru", "sta", "ter", "vo", "qu", "in", "ex", "pre", "caf\xC3\xA9",
                           "\xC3\xBC" "ber", "42", "\xE4\xB8\xAD"};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> syllable(0, syllables.size() - 1);
  std::uniform_int_distribution<int> words(3, 40), parts(1, 3), separator(0, 11);
  Texts docs(static_cast<size_t>(count));
  for (std::string& doc : docs) {
    for (int w = words(gen); w > 0; --w) {
      for (int k = parts(gen); k > 0; --k) doc += syllables[syllable(gen)];
      if (w == 1) break;
      const int s = separator(gen);
      doc += s == 0 ? "\n" : s == 1 ? "\t" : s == 2 ? "  " : s == 3 ? ", " : " ";
    }
  }
  return docs;
}

std::string json_escaped(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The documents of a split: the stream cut at each eos (which must end it), decoded.
Texts split_documents(const std::string& dir, const std::string& split, const Tokenizer& tokenizer) {
  const TokenDataset dataset = TokenDataset::open_split(dir, split);
  std::vector<int32_t> stream(dataset.tokens());
  dataset.read(0, stream.size(), stream.data());
  EXPECT_TRUE(!stream.empty() && stream.back() == tokenizer.eos_id()) << split << " ends with eos";
  Texts docs;
  size_t begin = 0;
  for (size_t i = 0; i < stream.size(); ++i) {
    if (stream[i] != tokenizer.eos_id()) continue;
    docs.push_back(tokenizer.decode(std::span<const int32_t>(stream).subspan(begin, i - begin)));
    begin = i + 1;
  }
  return docs;
}

// Checks that the dataset in `dir` holds exactly `docs`, in order, split between train and val;
// returns how many went to val.
size_t expect_round_trip(const std::string& dir, const Texts& docs) {
  const std::string tokenizer_path = dataset_tokenizer_path(dir);
  EXPECT_EQ(tokenizer_path, (fs::path(dir) / "tokenizer.model").string());
  const auto tokenizer = load_tokenizer(tokenizer_path);
  const Texts train = split_documents(dir, "train", *tokenizer), val = split_documents(dir, "val", *tokenizer);
  EXPECT_EQ(train.size() + val.size(), docs.size());
  size_t t = 0, v = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (t < train.size() && train[t] == docs[i]) {
      ++t;
    } else if (v < val.size() && val[v] == docs[i]) {
      ++v;
    } else {
      ADD_FAILURE() << "document " << i << " is not next in either split:\n" << docs[i];
      break;
    }
  }
  EXPECT_EQ(t, train.size());
  EXPECT_EQ(v, val.size());
  return val.size();
}

std::map<std::string, std::string> files_of(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files[e.path().filename().string()] = testing::read_bytes(e.path());
  return files;
}

TEST(PrepareCliTest, TextFilesRoundTripAndAnyThreadCountWritesTheSameFiles) {
  TempDir dir("prepare_cli_text");
  const Texts docs = generated_documents(400, 1);
  fs::create_directories(dir.path() / "texts/part2");
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string name = (i < 200 ? "texts/doc" : "texts/part2/doc") + std::to_string(1000 + i) + ".txt";
    write_bytes(dir.file(name), docs[i]);
  }
  write_bytes(dir.file("texts/.notes"), "hidden files are skipped");
  const std::string common = "prepare --input " + dir.file("texts") + " --vocab-size 400 --val-fraction 0.1";
  RunResult r = run_loom(common + " --threads 1 --shard-mb 0.01 --out " + dir.file("one"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(r.err.empty()) << "no progress bar when stderr is not a terminal: " << r.err;
  EXPECT_NE(r.out.find("tokenizer: SentencePiece, 400 pieces, byte fallback, eos </s> = 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prepared 400 documents"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("in 400 files"), std::string::npos) << r.out;
  const size_t val = expect_round_trip(dir.file("one"), docs);
  EXPECT_GT(val, 20u);  // 40 expected
  EXPECT_LT(val, 60u);
  EXPECT_NE(r.out.find("val " + std::to_string(val) + " documents"), std::string::npos) << r.out;

  // The tokenizer trained above, used on 3 threads. (A model trained on 3 threads would differ in
  // one byte: SentencePiece records the thread count of its training in the model.)
  r = run_loom("prepare --input " + dir.file("texts") + " --tokenizer " + dir.file("one/tokenizer.model") +
               " --val-fraction 0.1 --threads 3 --shard-mb 0.01 --out " + dir.file("three"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto one = files_of(dir.file("one")), three = files_of(dir.file("three"));
  EXPECT_GT(one.size(), 6u) << "several shards";
  EXPECT_TRUE(one == three) << "the same files, byte for byte, for 1 and 3 threads";
}

TEST(PrepareCliTest, BlankLineParagraphsAndJsonlRoundTrip) {
  TempDir dir("prepare_cli_blocks");
  const Texts docs = generated_documents(300, 2);
  std::string text, jsonl;
  for (const std::string& doc : docs) {
    text += doc + "\n\n\n";
    jsonl += "{\"id\": 7, \"body\": " + json_escaped(doc) + "}\n";
  }
  write_bytes(dir.file("paragraphs.txt"), text);
  write_bytes(dir.file("docs.jsonl"), jsonl);
  RunResult r = run_loom("prepare --input " + dir.file("paragraphs.txt") + " --documents blank-line --vocab-size 400 --out " +
                         dir.file("blocks"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("prepared 300 documents"), std::string::npos) << r.out;
  EXPECT_GE(expect_round_trip(dir.file("blocks"), docs), 1u) << "at least one val document";

  // JSONL, tokenized with the model trained above; then with one trained on the JSONL text.
  r = run_loom("prepare --input " + dir.file("docs.jsonl") + " --format jsonl --jsonl-field body --tokenizer " +
               dir.file("blocks/tokenizer.model") + " --out " + dir.file("jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_round_trip(dir.file("jsonl"), docs);
  EXPECT_EQ(testing::read_bytes(dir.file("jsonl/tokenizer.model")), testing::read_bytes(dir.file("blocks/tokenizer.model")));
  EXPECT_EQ(testing::read_bytes(dir.file("jsonl/train-00000.tok")), testing::read_bytes(dir.file("blocks/train-00000.tok")))
      << "the same documents, tokenizer and seed: the same shards";

  // Compressed, and named .jsonl: no --format needed; the same shards.
  ASSERT_EQ(std::system(("gzip -k -n " + dir.file("docs.jsonl") + " && zstd -q -k " + dir.file("paragraphs.txt")).c_str()), 0);
  r = run_loom("prepare --input " + dir.file("docs.jsonl.gz") + " --jsonl-field body --tokenizer " +
               dir.file("blocks/tokenizer.model") + " --out " + dir.file("jsonl_gz"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::read_bytes(dir.file("jsonl_gz/train-00000.tok")), testing::read_bytes(dir.file("jsonl/train-00000.tok")));
  r = run_loom("prepare --input " + dir.file("paragraphs.txt.zst") + " --documents blank-line --tokenizer " +
               dir.file("blocks/tokenizer.model") + " --out " + dir.file("text_zst"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::read_bytes(dir.file("text_zst/train-00000.tok")), testing::read_bytes(dir.file("blocks/train-00000.tok")));

  r = run_loom("prepare --input " + dir.file("docs.jsonl") + " --format jsonl --jsonl-field body --vocab-size 400 --out " +
               dir.file("jsonl_trained"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("trained the tokenizer on"), std::string::npos) << r.out;
  expect_round_trip(dir.file("jsonl_trained"), docs);
  for (const auto& [name, bytes] : files_of(dir.file("jsonl_trained"))) {
    EXPECT_TRUE(name == "tokenizer.model" || name.ends_with(".tok") || name.ends_with(".split.pbtxt"))
        << "left behind: " << name;
  }
}

TEST(PrepareCliTest, BadInputIsOneClearSentence) {
  TempDir dir("prepare_cli_bad");
  write_bytes(dir.file("good.txt"), generated_documents(1, 3)[0]);
  std::string corpus;
  for (const std::string& doc : generated_documents(200, 4)) corpus += doc + "\n";
  write_bytes(dir.file("corpus.txt"), corpus);
  ASSERT_EQ(run_loom("prepare --input " + dir.file("corpus.txt") + " --vocab-size 300 --out " + dir.file("ds")).exit_code, 0);
  const std::string tok = " --tokenizer " + dir.file("ds/tokenizer.model");
  const std::string out = " --out " + dir.file("out");

  expect_user_error("prepare" + tok + out, "loom prepare needs --input PATH");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok, "loom prepare needs --out DIR");
  expect_user_error("prepare --input " + dir.file("good.txt") + out,
                    "needs either --tokenizer PATH or --vocab-size N (to train one), and got neither");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + " --vocab-size 300" + out, "not both");
  expect_user_error("prepare --input " + dir.file("nope.txt") + tok + out, "input " + dir.file("nope.txt") + " does not exist");
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0600), 0);
  expect_user_error("prepare --input " + dir.file("fifo") + tok + out,
                    "input " + dir.file("fifo") + " is not a regular file or a directory");
  if (::geteuid() != 0) {  // root reads anything
    write_bytes(dir.file("locked.txt"), "secret");
    fs::permissions(dir.file("locked.txt"), fs::perms::none);
    expect_user_error("prepare --input " + dir.file("locked.txt") + tok + out,
                      "cannot read input file " + dir.file("locked.txt") + ": Permission denied");
  }

  write_bytes(dir.file("latin1.txt"), "fine line\ncaf\xE9 au lait\n");
  const std::string utf8 = dir.file("latin1.txt") + ":2: not valid UTF-8 at byte offset 3 of the line";
  expect_user_error("prepare --input " + dir.file("latin1.txt") + tok + out, utf8);
  expect_user_error("prepare --input " + dir.file("latin1.txt") + " --documents blank-line" + tok + out, utf8);
  expect_user_error("prepare --input " + dir.file("latin1.txt") + " --vocab-size 300" + out, utf8);

  write_bytes(dir.file("blank.txt"), "\n\n  \n");
  expect_user_error("prepare --input " + dir.file("blank.txt") + tok + out,
                    "found no documents in the inputs " + dir.file("blank.txt"));
  fs::create_directories(dir.path() / "empty_dir");
  expect_user_error("prepare --input " + dir.file("empty_dir") + tok + out,
                    "found no documents in the inputs " + dir.file("empty_dir") + " (0 files");

  const std::string jsonl = " --format jsonl" + tok + out;
  write_bytes(dir.file("a.jsonl"), "{\"text\": \"ok\"}\nnot json\n");
  expect_user_error("prepare --input " + dir.file("a.jsonl") + jsonl,
                    dir.file("a.jsonl") + ":2: the line is not a JSON object with a field 'text': invalid JSON at byte offset 0");
  write_bytes(dir.file("b.jsonl"), "\n{\"title\": \"no text\"}\n");
  expect_user_error("prepare --input " + dir.file("b.jsonl") + jsonl,
                    dir.file("b.jsonl") + ":2: the JSON object at byte offset 0 has no field 'text'");
  write_bytes(dir.file("c.jsonl"), "{\"text\": [\"a\"]}\n");
  expect_user_error("prepare --input " + dir.file("c.jsonl") + jsonl,
                    dir.file("c.jsonl") + ":1: the field 'text' at byte offset 9 is an array but should be a string");
  expect_user_error("prepare --input " + dir.file("b.jsonl") + " --format jsonl --vocab-size 300" + out,
                    dir.file("b.jsonl") + ":2: the JSON object at byte offset 0 has no field 'text'");

  const std::string text_gz = dir.file("corpus.txt.gz");
  ASSERT_EQ(std::system(("gzip -k -n " + dir.file("corpus.txt")).c_str()), 0);
  const std::string gz = testing::read_bytes(text_gz);
  write_bytes(text_gz, gz.substr(0, gz.size() / 2));
  expect_user_error("prepare --input " + text_gz + tok + out,
                    "input file " + text_gz + " ends inside its gzip data after " + std::to_string(gz.size() / 2) + " bytes");
  expect_user_error("prepare --input " + text_gz + " --vocab-size 300" + out, "input file " + text_gz + " ends inside");
  write_bytes(dir.file("not.jsonl.gz"), "{\"text\": \"ok\"}\n");
  expect_user_error("prepare --input " + dir.file("not.jsonl.gz") + tok + out,
                    "input file " + dir.file("not.jsonl.gz") + " is named as gzip data but does not start with");
  write_bytes(dir.file("d.jsonl"), "{\"text\": \"ok\"}\nplain text\n");
  expect_user_error("prepare --input " + dir.file("d.jsonl") + tok + out,
                    dir.file("d.jsonl") + ":2: the line is not a JSON object with a field 'text'");

  expect_user_error("prepare --input " + dir.file("corpus.txt") + " --vocab-size 200" + out, "vocab size 200 is too small");
  expect_user_error("prepare --input " + dir.file("good.txt") + " --vocab-size 5000" + out,
                    "vocab size 5000 is more than these inputs can fill");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + " --out " + dir.file("good.txt"),
                    "output directory " + dir.file("good.txt") + " exists and is not a directory");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + " --out " + dir.file("ds"),
                    "output directory " + dir.file("ds") + " already holds a dataset (train.split.pbtxt); choose another "
                    "--out, or pass --force to replace it");
  expect_user_error("prepare --input " + dir.file("good.txt") + " --tokenizer " + dir.file("good.txt") + out,
                    dir.file("good.txt") + " is not a SentencePiece model");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + out + " --format xml",
                    "--format is 'xml' but must be text, jsonl, chat, prompt-completion or alpaca");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + out + " --documents lines",
                    "--documents is 'lines' but must be file or blank-line");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + out + " --val-fraction 1", "--val-fraction is 1 but must be");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + out + " --val-fraction lots",
                    "--val-fraction expects a number, got 'lots'");
  expect_user_error("prepare --input " + dir.file("good.txt") + tok + out + " --shard-mb 0", "--shard-mb is 0 but must be");
  expect_user_error("prepare --input " + dir.file("a.jsonl") + jsonl + " --documents blank-line",
                    "--documents applies to --format text");
  expect_user_error("prepare " + dir.file("good.txt") + tok + out, "unexpected argument '" + dir.file("good.txt") + "'");
  testing::write_megatron_dataset(dir.file("web_text_document"), "uint16", {{{1, 2, 3}}});
  expect_user_error("prepare --input " + dir.file("web_text_document") + " --format jsonl" + out,
                    "--format applies to text and JSONL inputs, not to a Megatron dataset");
  expect_user_error("prepare --input " + dir.file("web_text_document.bin") + tok + " --vocab-size 300" + out,
                    "--tokenizer and --vocab-size both give a Megatron dataset's vocabulary; give one, or neither");
  expect_user_error("prepare --input " + dir.file("web_text_document") + " --input " + dir.file("good.txt") + out,
                    "input " + dir.file("web_text_document") + " is a Megatron dataset but " + dir.file("good.txt") +
                        " is not; convert Megatron datasets in a run of their own");
  EXPECT_FALSE(fs::exists(dir.file("out"))) << "no failed run leaves its output directory";

  const RunResult r = run_loom("prepare --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--documents file|blank-line"), std::string::npos) << r.out;
}

TEST(PrepareCliTest, InstructionFlagsAndBadExamplesAreOneClearSentence) {
  TempDir dir("prepare_cli_sft");
  const std::string gpt2 = testing::write_tiny_gpt2(dir.path() / "gpt2").string();
  write_bytes(dir.file("chat.jsonl"),
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n"
              "{\"messages\": [{\"role\": \"user\", \"content\": [\"Q\"]}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n");
  const std::string in = "prepare --input " + dir.file("chat.jsonl") + " --out " + dir.file("out");
  const std::string tok = " --tokenizer " + gpt2;
  expect_user_error(in + " --format chat", "--format chat needs the model's tokenizer: --tokenizer PATH");
  expect_user_error(in + " --format dialog" + tok,
                    "--format is 'dialog' but must be text, jsonl, chat, prompt-completion or alpaca");
  expect_user_error(in + " --format chat --template jinja" + tok, "--template is 'jinja' but must be model or plain");
  expect_user_error(in + " --format chat --train-on user" + tok, "--train-on is 'user' but must be assistant or all");
  expect_user_error(in + " --format chat --on-bad-example ignore" + tok,
                    "--on-bad-example is 'ignore' but must be stop or skip");
  expect_user_error(in + " --format jsonl --template plain" + tok,
                    "--template applies to instruction data (--format chat, prompt-completion or alpaca)");
  expect_user_error(in + " --format chat --jsonl-field text" + tok, "--jsonl-field does not apply to --format chat");
  expect_user_error(in + " --format chat" + tok, "has no chat template (no tokenizer_config.json with a chat_template); "
                                                 "pass --template plain");
  expect_user_error(in + " --format chat --template plain" + tok,
                    dir.file("chat.jsonl") + ":2: message 0 has a \"content\" that is an array but must be a string");
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
  const RunResult r = run_loom(in + " --format chat --template plain --on-bad-example skip --val-fraction 0" + tok);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("skipped 1 bad example; the first: " + dir.file("chat.jsonl") + ":2: message 0"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prepared 1 examples"), std::string::npos) << r.out;
  EXPECT_TRUE(TokenDataset::open_split(dir.file("out"), "train").has_loss_mask());
}

}  // namespace
}  // namespace loom
