#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <string_view>

#include "core/base/check.h"
#include "data/input_stream.h"
#include "data/json.h"
#include "data/utf8.h"

namespace loom {

namespace {

namespace fs = std::filesystem;

constexpr size_t kReadChunk = size_t{1} << 20;

bool is_hidden(const fs::path& p) { return p.filename().string().starts_with("."); }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

bool is_blank(std::string_view text) { return std::all_of(text.begin(), text.end(), is_space); }

std::string where(const std::string& file, uint64_t line) { return file + ":" + std::to_string(line) + ":"; }

// The message for a bad byte at `offset` of line `line_no`, worded as train_sentencepiece words
// it, so that a file gets one message whether a tokenizer is trained on it or only uses it.
[[noreturn]] void fail_utf8(const std::string& file, uint64_t line_no, size_t offset) {
  fail_user(where(file, line_no), "not valid UTF-8 at byte offset", offset,
            "of the line; convert the file to UTF-8 or leave it out of the inputs");
}

void check_line_utf8(std::string_view line, const std::string& file, uint64_t line_no) {
  if (const size_t bad = utf8_find_invalid(line); bad != std::string_view::npos) fail_utf8(file, line_no, bad);
}

// Throws unless all of `text`, the whole of `file`, is valid UTF-8: the error names the line
// and the offset in it, as for a file read line by line.
void check_file_utf8(std::string_view text, const std::string& file) {
  const size_t bad = utf8_find_invalid(text);
  if (bad == std::string_view::npos) return;
  const size_t line_start = bad == 0 ? 0 : text.rfind('\n', bad - 1) + 1;  // npos + 1 == 0
  const auto newlines = std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(line_start), '\n');
  fail_utf8(file, static_cast<uint64_t>(newlines) + 1, bad - line_start);
}

// A Megatron dataset's files in an input directory would be read as text (ids of small values
// even pass as UTF-8): refused.
void check_not_megatron(const fs::path& file, const std::string& dir) {
  const std::string ext = file.extension().string();
  if (ext != ".bin" && ext != ".idx") return;
  fs::path other = file;
  other.replace_extension(ext == ".bin" ? ".idx" : ".bin");
  std::error_code ec;
  if (!fs::is_regular_file(other, ec)) return;
  fs::path prefix = file;
  prefix.replace_extension();
  fail_user("input directory", dir, "holds the Megatron dataset", prefix.string(), "(.bin and .idx), which would be",
            "read as text; give it as an --input of its own run, or move it out of the directory");
}

}  // namespace

std::vector<std::string> list_corpus_files(const std::vector<std::string>& inputs, const std::string& skip_dir) {
  if (inputs.empty()) fail_user("no input given: name text or JSONL files, or directories of them");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status status = fs::status(input, ec);
    if (!fs::exists(status)) fail_user("input", input, "does not exist");
    if (fs::is_regular_file(status)) {
      files.push_back(input);
      continue;
    }
    if (!fs::is_directory(status)) fail_user("input", input, "is not a regular file or a directory");
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(input, ec), end;
    if (ec) fail_user("cannot list input directory", input + ":", ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      const fs::directory_entry& entry = *it;
      std::error_code entry_ec;
      if (entry.is_directory(entry_ec)) {
        if (is_hidden(entry.path()) || (!skip_dir.empty() && fs::equivalent(entry.path(), skip_dir, entry_ec))) {
          it.disable_recursion_pending();
        }
        continue;
      }
      if (!is_hidden(entry.path()) && entry.is_regular_file(entry_ec)) {
        check_not_megatron(entry.path(), input);
        found.push_back(entry.path().string());
      }
    }
    if (ec) fail_user("cannot list input directory", input + ":", ec.message());
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

struct DocumentReader::Line {
  std::string_view text;  // without its '\n'; a '\r' before it is kept
  uint64_t number = 0;    // from 1
};

// One file read in chunks (decompressed as it streams) and cut into lines.
class DocumentReader::LineSource {
 public:
  explicit LineSource(std::string path) : input_(std::move(path)) {}

  const std::string& path() const { return input_.path(); }
  uint64_t file_bytes_read() const { return input_.file_bytes_read(); }

  // The next line, valid until the next call; false at the end of the file.
  bool next(Line& line) {
    while (true) {
      const size_t newline = buffer_.find('\n', scan_from_);
      if (newline != std::string::npos || (eof_ && pos_ < buffer_.size())) {
        const size_t end = newline != std::string::npos ? newline : buffer_.size();
        line.text = std::string_view(buffer_).substr(pos_, end - pos_);
        line.number = ++line_no_;
        pos_ = scan_from_ = end + (newline != std::string::npos ? 1 : 0);
        return true;
      }
      if (eof_) return false;
      buffer_.erase(0, pos_);
      pos_ = 0;
      scan_from_ = buffer_.size();
      eof_ = input_.read(buffer_, kReadChunk) == 0;
    }
  }

 private:
  InputStream input_;
  std::string buffer_;
  size_t pos_ = 0;        // start of the next line in buffer_
  size_t scan_from_ = 0;  // no '\n' in buffer_[pos_, scan_from_)
  bool eof_ = false;
  uint64_t line_no_ = 0;
};

CorpusFormat corpus_format_of(const std::string& file, const CorpusOptions& options) {
  return uncompressed_name(file).ends_with(".jsonl") ? CorpusFormat::kJsonl : options.format;
}

bool is_plain_text_corpus(const std::vector<std::string>& files, const CorpusOptions& options) {
  return std::all_of(files.begin(), files.end(), [&](const std::string& file) {
    return corpus_format_of(file, options) == CorpusFormat::kText && compression_of(file) == Compression::kNone;
  });
}

DocumentReader::DocumentReader(std::vector<std::string> files, CorpusOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  if (options_.jsonl_field.empty()) {
    fail_user("the JSONL field name is empty; name the field that holds each document's text");
  }
  for (const std::string& file : files_) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(file, ec);
    if (!ec) total_bytes_ += size;
  }
}

DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::bytes_read() const { return finished_bytes_ + (source_ ? source_->file_bytes_read() : 0); }

bool DocumentReader::next(std::string& text) {
  while (source_ || next_file_ < files_.size()) {
    const std::string& file = source_ ? source_->path() : files_[next_file_];
    bool got;
    if (corpus_format_of(file, options_) == CorpusFormat::kJsonl) {
      got = next_jsonl(text);
    } else if (options_.documents == DocumentBoundary::kBlankLine) {
      got = next_block(text);
    } else {
      got = next_whole_file(text);
    }
    if (!got) continue;  // the file ended
    if (!is_blank(text)) return true;
    ++skipped_;
  }
  return false;
}

bool DocumentReader::next_whole_file(std::string& text) {
  InputStream input(files_[next_file_++]);
  text.clear();
  std::error_code ec;
  const uintmax_t size = fs::file_size(input.path(), ec);
  // A plain file's size is its text's: one read takes it all, a second finds the end.
  if (!ec && input.compression() == Compression::kNone) text.reserve(static_cast<size_t>(size) + 1);
  while (true) {
    const size_t room = text.capacity() - text.size();
    if (input.read(text, room > 0 ? room : kReadChunk) == 0) break;
  }
  finished_bytes_ += input.file_bytes_read();
  check_file_utf8(text, input.path());
  return true;
}

bool DocumentReader::next_line(Line& line) {
  if (!source_) source_ = std::make_unique<LineSource>(files_[next_file_++]);
  if (source_->next(line)) return true;
  finished_bytes_ += source_->file_bytes_read();
  source_.reset();
  return false;
}

bool DocumentReader::next_block(std::string& text) {
  text.clear();
  bool in_block = false;
  Line line;
  while (next_line(line)) {
    if (is_blank(line.text)) {
      if (in_block) break;
      continue;
    }
    check_line_utf8(line.text, source_->path(), line.number);
    if (in_block) text += '\n';
    text += line.text;
    in_block = true;
  }
  if (!in_block) return false;  // the file ended before another block
  if (text.back() == '\r') text.pop_back();
  return true;
}

bool DocumentReader::next_jsonl(std::string& text) {
  Line line;
  while (next_line(line)) {
    if (is_blank(line.text)) continue;
    try {
      text = json_string_field(line.text, options_.jsonl_field);
    } catch (const JsonError& e) {
      fail_user(where(source_->path(), line.number), e.what());
    }
    return true;
  }
  return false;
}

}  // namespace loom
