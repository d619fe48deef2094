// A corpus: the input files of `loom prepare` and the documents read from them, in order.
//
// Inputs are files, or directories read recursively (regular files only, hidden files and
// directories skipped, sorted by path), each input's files in that order and the inputs in the
// order given. A file may be gzip- or zstd-compressed (data/input_stream.h: told by its first
// bytes, its name must agree); it is decompressed as it is read. A file is JSONL when its name,
// less a compression suffix, ends in `.jsonl` (`a.jsonl`, `a.jsonl.gz`, `a.jsonl.zst`), whatever
// CorpusOptions::format says, so a JSONL file is never read as text; any other file is read in
// CorpusOptions::format. A document is
//   - plain text, DocumentBoundary::kFile: the whole file, byte for byte;
//   - plain text, DocumentBoundary::kBlankLine: a block of lines between blank lines (lines of
//     spaces, tabs and '\r' only), without the line break after its last line;
//   - JSONL: the string value of one field of the JSON object on each non-blank line; a line that
//     is not a JSON object, or an object without that field (the message lists the fields it
//     has), is an error, never a document.
// Documents of whitespace only (spaces, tabs, '\r', '\n') are skipped, so that every document
// read holds text. Every document is checked to be UTF-8 as it is read; a problem stops reading
// with a UserError naming the file and line ("corpus/a.txt:3: not valid UTF-8 at byte offset 4
// of the line ..."), so the first bad place in input order is the one reported.
//
// Reading streams: text in lines or JSONL holds one block or line in memory at a time (plus a
// read buffer); a document that is a whole file is read whole.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace loom {

enum class CorpusFormat { kText, kJsonl };
enum class DocumentBoundary { kFile, kBlankLine };  // plain text only

struct CorpusOptions {
  CorpusFormat format = CorpusFormat::kText;  // of files whose name does not say .jsonl
  DocumentBoundary documents = DocumentBoundary::kFile;
  std::string jsonl_field = "text";
};

// The files of `inputs` in reading order (see above). A directory equivalent to `skip_dir` (the
// output directory, when it sits inside an input directory) is not entered. Throws UserError for
// no inputs, an input that does not exist or is neither a regular file nor a directory, or a
// directory that cannot be listed.
std::vector<std::string> list_corpus_files(const std::vector<std::string>& inputs, const std::string& skip_dir = "");

// JSONL when `file`'s name, without .gz/.zst/.zstd, ends in .jsonl; else options.format.
CorpusFormat corpus_format_of(const std::string& file, const CorpusOptions& options);

// Whether every file is uncompressed text (a tokenizer trainer can read them as they are).
// Reads each file's first bytes; UserError as compression_of (data/input_stream.h).
bool is_plain_text_corpus(const std::vector<std::string>& files, const CorpusOptions& options);

class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, CorpusOptions options);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // Replaces `text` with the next document; false after the last. Throws UserError naming the
  // file (and line) for a file that cannot be read, invalid UTF-8, or a bad JSONL line.
  bool next(std::string& text);

  // Bytes of the input files consumed so far (compressed bytes of a compressed file, read
  // ahead by up to a chunk), and their total size when listed.
  uint64_t bytes_read() const;
  uint64_t total_bytes() const { return total_bytes_; }
  // Documents of whitespace only passed over.
  uint64_t skipped_documents() const { return skipped_; }

 private:
  struct Line;
  class LineSource;
  bool next_whole_file(std::string& text);
  bool next_block(std::string& text);
  bool next_jsonl(std::string& text);
  // The next line of the current file (opening the next file if none is open); false at the
  // end of that file. Each next_* reads from one file and returns false when it ends first.
  bool next_line(Line& line);

  std::vector<std::string> files_;
  CorpusOptions options_;
  size_t next_file_ = 0;
  std::unique_ptr<LineSource> source_;  // the file being read line by line
  uint64_t finished_bytes_ = 0;  // of the files read to their end
  uint64_t total_bytes_ = 0;
  uint64_t skipped_ = 0;
};

}  // namespace loom
