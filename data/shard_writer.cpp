#include "data/shard_writer.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/token_dataset.h"
#include "data/token_split.pb.h"

namespace loom {

namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;

std::string temporary_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

// fsync, close and rename `tmp` to `path`; the caller unlinks `tmp` on failure.
void commit(int fd, const std::string& tmp, const std::string& path) {
  if (::fsync(fd) != 0) fail_user("flushing", tmp, "to disk failed:", std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    fail_user("renaming", tmp, "to", path, "failed:", std::strerror(errno));
  }
}

}  // namespace

struct ShardWriter::OpenShard {
  std::string path;  // final name
  std::string tmp;
  int fd = -1;
  uint64_t tokens = 0;
  std::vector<uint64_t> ends;  // the document index so far
  std::vector<uint8_t> buffer;
  std::vector<uint8_t> mask;  // the loss mask so far, when the split has one
  XXH64_state_t* hash = nullptr;

  ~OpenShard() {
    if (hash != nullptr) XXH64_freeState(hash);
    if (fd >= 0) ::close(fd);
    if (!tmp.empty()) ::unlink(tmp.c_str());
  }
};

ShardWriter::ShardWriter(std::string dir, std::string split, uint32_t vocab_size, uint64_t max_shard_bytes,
                         bool loss_mask)
    : dir_(std::move(dir)), split_(std::move(split)), vocab_size_(vocab_size),
      dtype_(token_type_for(vocab_size)), max_shard_bytes_(max_shard_bytes), loss_mask_(loss_mask) {
  if (split_.empty() || split_.find('/') != std::string::npos) {
    fail_user("split name '" + split_ + "' must be non-empty and contain no '/'");
  }
  if (vocab_size == 0 || vocab_size > uint32_t{std::numeric_limits<int32_t>::max()}) {
    fail_user("vocabulary size", vocab_size, "for split", split_, "must be in 1 ..",
              std::numeric_limits<int32_t>::max());
  }
  if (max_shard_bytes < kMinShardBytes) {
    fail_user("maximum shard size", max_shard_bytes, "bytes is below the", kMinShardBytes, "byte minimum");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) fail_user("cannot create directory", dir_, ":", ec.message());
}

ShardWriter::~ShardWriter() = default;

std::string ShardWriter::descriptor_path() const { return split_descriptor_path(dir_, split_); }

void ShardWriter::open_shard() {
  char name[32];
  std::snprintf(name, sizeof(name), "-%05zu.tok", shard_files_.size());
  auto shard = std::make_unique<OpenShard>();
  shard->path = (std::filesystem::path(dir_) / (split_ + name)).string();
  const std::string tmp = temporary_name(shard->path);
  shard->fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (shard->fd < 0) fail_user("cannot write", tmp, ":", std::strerror(errno));
  shard->tmp = tmp;
  shard->hash = XXH64_createState();
  LOOM_CHECK(shard->hash != nullptr, "out of memory for a hash state");
  XXH64_reset(shard->hash, 0);
  shard->buffer.reserve(kBufferBytes);
  const std::array<uint8_t, kShardHeaderBytes> placeholder{};  // the real header goes in at the end
  write_fully(shard->fd, placeholder.data(), placeholder.size(), tmp);
  open_ = std::move(shard);
}

// Tokens the open shard can still take, with the current document's index entry counted.
uint64_t ShardWriter::room() const {
  const uint64_t fixed = kShardHeaderBytes + 8 * (open_->ends.size() + 1);
  if (max_shard_bytes_ < fixed + (loss_mask_ ? 16 : 0)) return 0;
  // A token takes its id's bytes, and a mask byte; each section is padded to 8 bytes.
  const uint64_t per_token = static_cast<uint64_t>(dtype_) + (loss_mask_ ? 1 : 0);
  const uint64_t capacity = ((max_shard_bytes_ - fixed) / 8 * 8 - (loss_mask_ ? 16 : 0)) / per_token;
  return capacity > open_->tokens ? capacity - open_->tokens : 0;
}

void ShardWriter::add_document(std::span<const int32_t> tokens, std::span<const uint8_t> mask) {
  LOOM_CHECK(!finished_, "add_document after finish on split", split_);
  LOOM_CHECK(loss_mask_ ? mask.size() == tokens.size() : mask.empty(), "a loss mask of", mask.size(),
             "bytes for a document of", tokens.size(), "tokens of split", split_, "(mask written:", loss_mask_, ")");
  for (size_t i = 0; i < mask.size(); ++i) {
    LOOM_CHECK(mask[i] <= 1, "loss mask byte", int{mask[i]}, "at position", i, "of split", split_);
  }
  if (tokens.empty()) {
    fail_user("document", total_documents_, "of split", split_,
              "has no tokens (each document ends with the end-of-document token)");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || static_cast<uint32_t>(tokens[i]) >= vocab_size_) {
      fail_user("document", total_documents_, "of split", split_, "has token id", tokens[i], "at position", i,
                "outside the vocabulary of", vocab_size_);
    }
  }
  uint64_t done = 0;
  while (true) {
    if (!open_) open_shard();
    const uint64_t take = std::min<uint64_t>(room(), tokens.size() - done);
    if (take == 0) {  // full before this document began: it starts the next shard
      close_shard(false);
      continue;
    }
    append(tokens.data() + done, mask.empty() ? nullptr : mask.data() + done, take);
    done += take;
    open_->ends.push_back(open_->tokens);
    if (done == tokens.size()) break;
    close_shard(true);
  }
  total_tokens_ += tokens.size();
  ++total_documents_;
}

void ShardWriter::append(const int32_t* tokens, const uint8_t* mask, uint64_t n) {
  if (mask != nullptr) open_->mask.insert(open_->mask.end(), mask, mask + n);
  const size_t width = static_cast<size_t>(dtype_);
  std::vector<uint8_t>& buffer = open_->buffer;
  for (uint64_t done = 0; done < n;) {
    if (buffer.size() + width > kBufferBytes) flush_buffer();
    const uint64_t count = std::min<uint64_t>((kBufferBytes - buffer.size()) / width, n - done);
    const size_t at = buffer.size();
    buffer.resize(at + count * width);
    uint8_t* out = buffer.data() + at;
    if (dtype_ == TokenType::kU16) {
      for (uint64_t i = 0; i < count; ++i) {
        const uint16_t narrow = static_cast<uint16_t>(tokens[done + i]);
        std::memcpy(out + 2 * i, &narrow, 2);
      }
    } else {
      std::memcpy(out, tokens + done, count * 4);  // ids are checked non-negative
    }
    done += count;
  }
  open_->tokens += n;
}

void ShardWriter::flush_buffer() {
  XXH64_update(open_->hash, open_->buffer.data(), open_->buffer.size());
  write_fully(open_->fd, open_->buffer.data(), open_->buffer.size(), open_->tmp);
  open_->buffer.clear();
}

void ShardWriter::close_shard(bool last_document_continues) {
  OpenShard& shard = *open_;
  flush_buffer();
  ShardHeader header;
  header.version = loss_mask_ ? kShardMaskedVersion : kShardVersion;
  header.dtype = dtype_;
  header.vocab_size = vocab_size_;
  header.flags = (last_document_continues ? kShardLastDocumentContinues : 0) | (loss_mask_ ? kShardHasLossMask : 0);
  header.tokens = shard.tokens;
  header.documents = shard.ends.size();
  header.tokens_xxh64 = XXH64_digest(shard.hash);
  if (loss_mask_) header.mask_xxh64 = XXH64(shard.mask.data(), shard.mask.size(), 0);
  header.meta_xxh64 = shard_meta_checksum(encode_shard_header(header), shard.ends);
  const uint64_t data_end = kShardHeaderBytes + shard.tokens * static_cast<uint64_t>(dtype_);
  const std::array<uint8_t, 8> zeros{};
  write_fully(shard.fd, zeros.data(), shard_index_offset(dtype_, shard.tokens) - data_end, shard.tmp);
  write_fully(shard.fd, shard.ends.data(), 8 * shard.ends.size(), shard.tmp);
  if (loss_mask_) {
    write_fully(shard.fd, shard.mask.data(), shard.mask.size(), shard.tmp);
    write_fully(shard.fd, zeros.data(), shard_mask_bytes(shard.tokens) - shard.tokens, shard.tmp);
  }
  const std::array<uint8_t, kShardHeaderBytes> bytes = encode_shard_header(header);
  if (::pwrite(shard.fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    fail_user("writing the header of", shard.tmp, "failed:", std::strerror(errno));
  }
  commit(shard.fd, shard.tmp, shard.path);
  shard.tmp.clear();  // renamed: nothing to remove
  shard_files_.push_back(std::filesystem::path(shard.path).filename().string());
  shard_headers_.push_back(header);
  open_.reset();
}

std::vector<std::string> ShardWriter::finish() {
  LOOM_CHECK(!finished_, "finish called twice on split", split_);
  if (total_documents_ == 0) fail_user("split", split_, "in", dir_, "received no documents");
  if (open_) close_shard(false);
  finished_ = true;
  sync_directory(dir_);

  data::TokenSplit descriptor;
  descriptor.set_format_version(loss_mask_ ? kShardMaskedVersion : kShardVersion);
  descriptor.set_split(split_);
  descriptor.set_vocab_size(vocab_size_);
  descriptor.set_tokens(total_tokens_);
  descriptor.set_documents(total_documents_);
  std::vector<std::string> paths;
  for (size_t i = 0; i < shard_files_.size(); ++i) {
    data::TokenShardEntry* entry = descriptor.add_shards();
    entry->set_file(shard_files_[i]);
    entry->set_tokens(shard_headers_[i].tokens);
    entry->set_documents(shard_headers_[i].documents);
    entry->set_fingerprint(shard_headers_[i].meta_xxh64);
    paths.push_back((std::filesystem::path(dir_) / shard_files_[i]).string());
  }
  std::string text;
  const bool printed = google::protobuf::TextFormat::PrintToString(descriptor, &text);
  LOOM_CHECK(printed, "printing the descriptor of split", split_);
  const std::string path = descriptor_path(), tmp = temporary_name(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_user("cannot write", tmp, ":", std::strerror(errno));
  try {
    write_fully(fd, text.data(), text.size(), tmp);
    commit(fd, tmp, path);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  sync_directory(dir_);
  return paths;
}

}  // namespace loom
