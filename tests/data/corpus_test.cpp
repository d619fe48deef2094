// Corpus: which files a list of inputs stands for and in which order, the documents of each
// format and boundary (byte for byte), and each bad input named by file, line and byte offset.
#include "data/corpus.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "data/token_data_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_bytes;
using Texts = std::vector<std::string>;

Texts read_all(const std::vector<std::string>& files, CorpusOptions options, uint64_t* skipped = nullptr) {
  DocumentReader reader(files, options);
  Texts docs;
  for (std::string text; reader.next(text);) docs.push_back(text);
  EXPECT_EQ(reader.bytes_read(), reader.total_bytes()) << "every byte read";
  if (skipped) *skipped = reader.skipped_documents();
  return docs;
}

CorpusOptions text_options(DocumentBoundary boundary) {
  CorpusOptions o;
  o.documents = boundary;
  return o;
}

CorpusOptions jsonl_options(const std::string& field = "text") {
  CorpusOptions o;
  o.format = CorpusFormat::kJsonl;
  o.jsonl_field = field;
  return o;
}

TEST(CorpusTest, DirectoriesAreReadRecursivelySortedWithoutHiddenFiles) {
  TempDir dir("corpus_list");
  for (const char* name : {"b/z.txt", "b/a.txt", "a.txt", "c/d/e.txt", ".hidden.txt", "b/.git/config", "out/x.tok"}) {
    fs::create_directories((dir.path() / name).parent_path());
    write_bytes(dir.file(name), "x");
  }
  const Texts files = list_corpus_files({dir.str(), dir.file(".hidden.txt"), dir.file("a.txt")}, dir.file("out"));
  EXPECT_EQ(files, (Texts{dir.file("a.txt"), dir.file("b/a.txt"), dir.file("b/z.txt"), dir.file("c/d/e.txt"),
                          dir.file(".hidden.txt"), dir.file("a.txt")}))
      << "named files are taken as given; the output directory is skipped";
  EXPECT_EQ(list_corpus_files({dir.str()}).size(), 5u) << "without skip_dir, out/ is read";

  using testing::user_error_of;
  EXPECT_EQ(user_error_of([&] { list_corpus_files({dir.file("nope")}); }), "input " + dir.file("nope") + " does not exist");
  EXPECT_NE(user_error_of([&] { list_corpus_files({}); }).find("no input given"), std::string::npos);
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0600), 0);
  EXPECT_EQ(user_error_of([&] { list_corpus_files({dir.file("fifo")}); }),
            "input " + dir.file("fifo") + " is not a regular file or a directory");
}

TEST(CorpusTest, AMegatronDatasetInADirectoryIsNotReadAsText) {
  TempDir dir("corpus_megatron");
  write_bytes(dir.file("a.txt"), "x");
  write_bytes(dir.file("notes.bin"), "a .bin alone is just a file");
  EXPECT_EQ(list_corpus_files({dir.str()}).size(), 2u);
  fs::create_directories(dir.path() / "sub");
  write_bytes(dir.file("sub/web_text_document.bin"), std::string(4, '\0'));
  write_bytes(dir.file("sub/web_text_document.idx"), "MMIDIDX");
  EXPECT_EQ(testing::user_error_of([&] { list_corpus_files({dir.str()}); }),
            "input directory " + dir.str() + " holds the Megatron dataset " + dir.file("sub/web_text_document") +
                " (.bin and .idx), which would be read as text; give it as an --input of its own run, or move it out "
                "of the directory");
}

TEST(CorpusTest, WholeFilesAreDocumentsByteForByte) {
  TempDir dir("corpus_files");
  const Texts texts = {"first file\n", "  second\r\n\n\nwith blank lines, no final newline", "", " \n\t\n",
                       "caf\xC3\xA9 \xF0\x9F\x98\x80\n"};
  std::vector<std::string> files;
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back(dir.file("f" + std::to_string(i)));
    write_bytes(files.back(), texts[i]);
  }
  uint64_t skipped = 0;
  EXPECT_EQ(read_all(files, text_options(DocumentBoundary::kFile), &skipped), (Texts{texts[0], texts[1], texts[4]}));
  EXPECT_EQ(skipped, 2u) << "the empty and the whitespace-only file";
}

TEST(CorpusTest, BlankLinesSeparateDocuments) {
  TempDir dir("corpus_blocks");
  write_bytes(dir.file("a.txt"), "\n\none\ntwo\n\n  \t\nthree  \n  four\r\nfive\r\n\r\nsix");
  write_bytes(dir.file("b.txt"), "seven\n");
  write_bytes(dir.file("c.txt"), "\n \n");
  write_bytes(dir.file("d.txt"), "eight\n\n\n");
  const Texts docs = read_all({dir.file("a.txt"), dir.file("b.txt"), dir.file("c.txt"), dir.file("d.txt")},
                              text_options(DocumentBoundary::kBlankLine));
  EXPECT_EQ(docs, (Texts{"one\ntwo", "three  \n  four\r\nfive", "six", "seven", "eight"}))
      << "a file's end ends a document; the line break after a block is not part of it";
}

TEST(CorpusTest, JsonlLinesGiveTheirField) {
  TempDir dir("corpus_jsonl");
  write_bytes(dir.file("a.jsonl"),
              "{\"id\": 1, \"text\": \"caf\\u00e9\\n\\\"quoted\\\"\\ttab\"}\n"
              "\n"
              "  \r\n"
              "{\"text\": \"\\ud83d\\ude00 emoji\", \"other\": [1, {\"text\": 2}]}\r\n"
              "{\"text\": \"   \"}\n"
              "{\"body\": \"in another field\", \"text\": \"last\"}");
  uint64_t skipped = 0;
  EXPECT_EQ(read_all({dir.file("a.jsonl")}, jsonl_options(), &skipped),
            (Texts{"caf\xC3\xA9\n\"quoted\"\ttab", "\xF0\x9F\x98\x80 emoji", "last"}));
  EXPECT_EQ(skipped, 1u) << "a text of spaces only";
  EXPECT_EQ(testing::user_error_of([&] { read_all({dir.file("a.jsonl")}, jsonl_options("body")); }),
            dir.file("a.jsonl") + ":1: the JSON object at byte offset 0 has no field 'body' (its fields are 'id', 'text')");
}

TEST(CorpusTest, BadJsonlLinesAreNamedByFileLineAndOffset) {
  TempDir dir("corpus_jsonl_bad");
  const auto error_of = [&](const std::string& content, const std::string& field = "text") {
    write_bytes(dir.file("c.jsonl"), "{\"text\": \"fine\"}\n\n" + content + "\n");
    return testing::user_error_of([&] { read_all({dir.file("c.jsonl")}, jsonl_options(field)); });
  };
  const std::string at = dir.file("c.jsonl") + ":3: ";
  EXPECT_EQ(error_of("{\"text\": \"unterminated}"), at + "invalid JSON at byte offset 23: the text ends inside a string");
  EXPECT_EQ(error_of("{\"txt\": \"x\"}"), at + "the JSON object at byte offset 0 has no field 'text' (its fields are 'txt')");
  EXPECT_EQ(error_of("{}"), at + "the JSON object at byte offset 0 has no field 'text' (it is empty)");
  EXPECT_EQ(error_of("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":0}"),
            at + "the JSON object at byte offset 0 has no field 'text' (its fields are 'a', 'b', 'c', 'd', 'e', 'f', "
                 "'g', 'h' and 2 more)");
  EXPECT_EQ(error_of("plain text, not JSON"), at + "the line is not a JSON object with a field 'text': invalid JSON at byte offset 0: expected a value, found 'p'");
  EXPECT_EQ(error_of("{\"text\": 5}"), at + "the field 'text' at byte offset 9 is a number but should be a string");
  EXPECT_EQ(error_of("[\"text\"]"), at + "the line is an array but should be a JSON object with a field 'text'");
  EXPECT_NE(error_of("{\"text\": \"bad \xFF byte\"}").find(at + "invalid JSON at byte offset 14"), std::string::npos);
  EXPECT_EQ(testing::user_error_of([&] { DocumentReader({}, jsonl_options("")); }),
            "the JSONL field name is empty; name the field that holds each document's text");
}

TEST(CorpusTest, AJsonlFileIsJsonlWhateverTheFormatSays) {
  TempDir dir("corpus_jsonl_name");
  write_bytes(dir.file("a.jsonl"), "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
  write_bytes(dir.file("b.txt"), "three\n\nfour\n");
  EXPECT_EQ(corpus_format_of(dir.file("a.jsonl"), text_options(DocumentBoundary::kFile)), CorpusFormat::kJsonl);
  EXPECT_EQ(corpus_format_of("x.jsonl.zst", text_options(DocumentBoundary::kFile)), CorpusFormat::kJsonl);
  EXPECT_EQ(corpus_format_of("x.json", text_options(DocumentBoundary::kFile)), CorpusFormat::kText);
  EXPECT_EQ(corpus_format_of("x.txt", jsonl_options()), CorpusFormat::kJsonl) << "other names: the option";
  EXPECT_EQ(read_all({dir.file("a.jsonl"), dir.file("b.txt")}, text_options(DocumentBoundary::kBlankLine)),
            (Texts{"one", "two", "three", "four"}))
      << "JSONL and text files mix, each read in its own format";
  EXPECT_EQ(read_all({dir.file("b.txt"), dir.file("a.jsonl")}, text_options(DocumentBoundary::kFile)),
            (Texts{"three\n\nfour\n", "one", "two"}));
  write_bytes(dir.file("c.jsonl"), "{\"text\": \"fine\"}\nJust a line of text.\n");
  EXPECT_EQ(testing::user_error_of([&] { read_all({dir.file("c.jsonl")}, text_options(DocumentBoundary::kFile)); }),
            dir.file("c.jsonl") + ":2: the line is not a JSON object with a field 'text': invalid JSON at byte offset 0: "
                                  "expected a value, found 'J'");
}

TEST(CorpusTest, CompressedFilesAreReadAsTheirContent) {
  TempDir dir("corpus_compressed");
  const std::string jsonl = "{\"text\": \"alpha\"}\n{\"text\": \"beta\"}\n", text = "gamma\n\ndelta";
  write_bytes(dir.file("a.jsonl"), jsonl);
  write_bytes(dir.file("b.txt"), text);
  const auto compress = [&](const std::string& command) {
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  };
  compress("gzip -k -n " + dir.file("a.jsonl") + " && zstd -q " + dir.file("a.jsonl") + " -o " + dir.file("a.jsonl.zst"));
  compress("gzip -k -n " + dir.file("b.txt") + " && zstd -q " + dir.file("b.txt") + " -o " + dir.file("b.txt.zst"));
  const std::vector<std::string> files = {dir.file("a.jsonl.gz"), dir.file("a.jsonl.zst"), dir.file("b.txt.gz"),
                                          dir.file("b.txt.zst")};
  EXPECT_EQ(read_all(files, text_options(DocumentBoundary::kBlankLine)),
            (Texts{"alpha", "beta", "alpha", "beta", "gamma", "delta", "gamma", "delta"}));
  EXPECT_EQ(read_all({dir.file("b.txt.gz")}, text_options(DocumentBoundary::kFile)), Texts{text});
  EXPECT_TRUE(is_plain_text_corpus({dir.file("b.txt")}, text_options(DocumentBoundary::kFile)));
  EXPECT_FALSE(is_plain_text_corpus({dir.file("b.txt"), dir.file("b.txt.gz")}, text_options(DocumentBoundary::kFile)));
  EXPECT_FALSE(is_plain_text_corpus({dir.file("a.jsonl")}, text_options(DocumentBoundary::kFile)));

  const std::string gz = testing::read_bytes(dir.file("a.jsonl.gz"));
  write_bytes(dir.file("cut.jsonl.gz"), gz.substr(0, gz.size() - 4));
  EXPECT_EQ(testing::user_error_of([&] { read_all({dir.file("cut.jsonl.gz")}, text_options(DocumentBoundary::kFile)); }),
            "input file " + dir.file("cut.jsonl.gz") + " ends inside its gzip data after " +
                std::to_string(gz.size() - 4) + " bytes (a truncated file); fetch or compress it again, or leave it out");
}

TEST(CorpusTest, InvalidUtf8IsNamedByFileLineAndOffset) {
  TempDir dir("corpus_utf8");
  write_bytes(dir.file("a.txt"), "good line\nsecond \xC3( line\n");
  const std::string expected = dir.file("a.txt") +
                               ":2: not valid UTF-8 at byte offset 7 of the line; convert the file to UTF-8 or "
                               "leave it out of the inputs";
  for (const DocumentBoundary boundary : {DocumentBoundary::kFile, DocumentBoundary::kBlankLine}) {
    EXPECT_EQ(testing::user_error_of([&] { read_all({dir.file("a.txt")}, text_options(boundary)); }), expected);
  }
  write_bytes(dir.file("b.txt"), "\xFF");
  EXPECT_EQ(testing::user_error_of([&] { read_all({dir.file("b.txt")}, text_options(DocumentBoundary::kFile)); }),
            dir.file("b.txt") +
                ":1: not valid UTF-8 at byte offset 0 of the line; convert the file to UTF-8 or leave it out of the "
                "inputs");
}

TEST(CorpusTest, LongLinesAndFilesCrossReadChunks) {
  TempDir dir("corpus_long");
  // Lines longer than the 1 MiB read chunk, and a block boundary right at it.
  const std::string long_line(size_t{3} << 19, 'x');
  const std::string text = long_line + "\n" + std::string((size_t{1} << 20) - long_line.size() % (size_t{1} << 20) - 1, 'y') +
                           "\n\n" + long_line + "z";
  write_bytes(dir.file("a.txt"), text);
  const Texts blocks = read_all({dir.file("a.txt")}, text_options(DocumentBoundary::kBlankLine));
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[0], text.substr(0, text.find("\n\n")));
  EXPECT_EQ(blocks[1], long_line + "z");
  EXPECT_EQ(read_all({dir.file("a.txt")}, text_options(DocumentBoundary::kFile)), Texts{text});
}

}  // namespace
}  // namespace loom
