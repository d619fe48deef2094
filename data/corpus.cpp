#include "data/corpus.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "core/base/check.h"
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

int open_input(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_user("cannot read input file", path + ":", std::strerror(errno));
  return fd;
}

// Appends up to `n` bytes of `fd` to `out`; returns how many (0 at the end).
size_t read_some(int fd, std::string& out, size_t n, const std::string& path) {
  const size_t at = out.size();
  out.resize(at + n);
  ssize_t got;
  do {
    got = ::read(fd, out.data() + at, n);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    const int error = errno;
    out.resize(at);
    fail_user("error while reading input file", path + ":", std::strerror(error));
  }
  out.resize(at + static_cast<size_t>(got));
  return static_cast<size_t>(got);
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
      if (!is_hidden(entry.path()) && entry.is_regular_file(entry_ec)) found.push_back(entry.path().string());
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

// One file read in chunks and cut into lines.
class DocumentReader::LineSource {
 public:
  explicit LineSource(std::string path) : path_(std::move(path)), fd_(open_input(path_)) {}
  ~LineSource() { ::close(fd_); }
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;

  const std::string& path() const { return path_; }

  // The next line, valid until the next call; false at the end of the file. `consumed`: bytes
  // of the file it took, its '\n' included.
  bool next(Line& line, uint64_t& consumed) {
    while (true) {
      const size_t newline = buffer_.find('\n', scan_from_);
      if (newline != std::string::npos || (eof_ && pos_ < buffer_.size())) {
        const size_t end = newline != std::string::npos ? newline : buffer_.size();
        line.text = std::string_view(buffer_).substr(pos_, end - pos_);
        line.number = ++line_no_;
        consumed = end - pos_ + (newline != std::string::npos ? 1 : 0);
        pos_ = scan_from_ = end + (newline != std::string::npos ? 1 : 0);
        return true;
      }
      if (eof_) return false;
      buffer_.erase(0, pos_);
      pos_ = 0;
      scan_from_ = buffer_.size();
      eof_ = read_some(fd_, buffer_, kReadChunk, path_) == 0;
    }
  }

 private:
  std::string path_;
  int fd_;
  std::string buffer_;
  size_t pos_ = 0;        // start of the next line in buffer_
  size_t scan_from_ = 0;  // no '\n' in buffer_[pos_, scan_from_)
  bool eof_ = false;
  uint64_t line_no_ = 0;
};

DocumentReader::DocumentReader(std::vector<std::string> files, CorpusOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  if (options_.format == CorpusFormat::kJsonl && options_.jsonl_field.empty()) {
    fail_user("the JSONL field name is empty; name the field that holds each document's text");
  }
  for (const std::string& file : files_) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(file, ec);
    if (!ec) total_bytes_ += size;
  }
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::next(std::string& text) {
  while (true) {
    bool got;
    if (options_.format == CorpusFormat::kJsonl) {
      got = next_jsonl(text);
    } else if (options_.documents == DocumentBoundary::kBlankLine) {
      got = next_block(text);
    } else {
      got = next_whole_file(text);
    }
    if (!got) return false;
    if (!is_blank(text)) return true;
    ++skipped_;
  }
}

bool DocumentReader::next_whole_file(std::string& text) {
  if (next_file_ == files_.size()) return false;
  const std::string& path = files_[next_file_++];
  const int fd = open_input(path);
  text.clear();
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec) text.reserve(static_cast<size_t>(size) + 1);
  try {
    // The reserved room first: one read takes the whole file, a second finds its end.
    while (true) {
      const size_t room = text.capacity() - text.size();
      if (read_some(fd, text, room > 0 ? room : kReadChunk, path) == 0) break;
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  bytes_read_ += text.size();
  check_file_utf8(text, path);
  return true;
}

bool DocumentReader::next_line(Line& line) {
  while (true) {
    if (!source_) {
      if (next_file_ == files_.size()) return false;
      source_ = std::make_unique<LineSource>(files_[next_file_++]);
    }
    uint64_t consumed = 0;
    if (source_->next(line, consumed)) {
      bytes_read_ += consumed;
      return true;
    }
    source_.reset();
    return false;  // a file ends: whatever was being gathered ends with it
  }
}

bool DocumentReader::next_block(std::string& text) {
  text.clear();
  bool in_block = false;
  Line line;
  while (true) {
    if (!next_line(line)) {
      if (in_block) break;
      if (next_file_ == files_.size()) return false;
      continue;
    }
    if (is_blank(line.text)) {
      if (in_block) break;
      continue;
    }
    check_line_utf8(line.text, source_->path(), line.number);
    if (in_block) text += '\n';
    text += line.text;
    in_block = true;
  }
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return true;
}

bool DocumentReader::next_jsonl(std::string& text) {
  Line line;
  while (true) {
    if (!next_line(line)) {
      if (next_file_ == files_.size()) return false;
      continue;
    }
    if (is_blank(line.text)) continue;
    try {
      text = json_string_field(line.text, options_.jsonl_field);
    } catch (const JsonError& e) {
      fail_user(where(source_->path(), line.number), e.what());
    }
    return true;
  }
}

}  // namespace loom
