#include "data/token_dataset.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "core/base/check.h"
#include "data/token_split.pb.h"

namespace loom {

namespace {

namespace pb = google::protobuf;

// Keeps the first parse error with its position (protobuf would otherwise log it to stderr).
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) first_ = std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

data::TokenSplit read_descriptor(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_user("cannot read the split descriptor", path, "(prepare the split first, or check the path)");
  std::stringstream text;
  text << in.rdbuf();
  data::TokenSplit descriptor;
  FirstErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text.str(), &descriptor)) {
    fail_user(path + ":" + errors.first(), "(the schema is data/token_split.proto)");
  }
  if (descriptor.format_version() != kShardVersion && descriptor.format_version() != kShardMaskedVersion) {
    fail_user("split descriptor", path, "has format_version", descriptor.format_version(),
              "but this Loom reads versions", kShardVersion, "and", kShardMaskedVersion);
  }
  if (descriptor.shards_size() == 0) fail_user("split descriptor", path, "lists no shards");
  return descriptor;
}

}  // namespace

std::string split_descriptor_path(const std::string& dir, const std::string& split) {
  return (std::filesystem::path(dir) / (split + ".split.pbtxt")).string();
}

TokenDataset TokenDataset::open_split(const std::string& dir, const std::string& split) {
  const std::string path = split_descriptor_path(dir, split);
  const data::TokenSplit descriptor = read_descriptor(path);
  std::vector<TokenShard> shards;
  uint64_t total = 0;
  for (const data::TokenShardEntry& entry : descriptor.shards()) {
    TokenShard shard((std::filesystem::path(dir) / entry.file()).string());
    const ShardHeader& h = shard.header();
    if (h.tokens != entry.tokens() || h.documents != entry.documents() ||
        h.meta_xxh64 != entry.fingerprint() || h.vocab_size != descriptor.vocab_size()) {
      fail_user("token shard", shard.path(), "does not match its entry in", path,
                "(it was rewritten after the descriptor, or belongs to another run; prepare the split again)");
    }
    total += h.tokens;
    shards.push_back(std::move(shard));
  }
  if (total != descriptor.tokens()) {
    fail_user("split descriptor", path, "lists", descriptor.tokens(), "tokens but its shards hold", total);
  }
  if (shards.back().header().flags & kShardLastDocumentContinues) {
    fail_user("split descriptor", path, "ends with shard", shards.back().path(),
              "whose last document continues in a shard it does not list");
  }
  return TokenDataset(path, std::move(shards));
}

TokenDataset::TokenDataset(const std::vector<std::string>& shard_paths)
    : TokenDataset(shard_paths.empty() ? std::string() : shard_paths.front(), [&] {
        std::vector<TokenShard> shards;
        for (const std::string& p : shard_paths) shards.emplace_back(p);
        return shards;
      }()) {}

TokenDataset::TokenDataset(std::string name, std::vector<TokenShard> shards)
    : name_(std::move(name)), shards_(std::move(shards)) {
  if (shards_.empty()) fail_user("a token dataset needs at least one shard");
  starts_.push_back(0);
  for (const TokenShard& s : shards_) {
    if (s.header().vocab_size != shards_.front().header().vocab_size) {
      fail_user("token shard", s.path(), "has vocabulary size", s.header().vocab_size, "but",
                shards_.front().path(), "of the same dataset has", shards_.front().header().vocab_size);
    }
    if (s.has_loss_mask() != shards_.front().has_loss_mask()) {
      fail_user("token shard", s.path(), s.has_loss_mask() ? "has a loss mask but" : "has no loss mask but",
                shards_.front().path(), "of the same dataset", shards_.front().has_loss_mask() ? "has" : "has none",
                "(prepare the split again)");
    }
    starts_.push_back(starts_.back() + s.tokens());
  }
}

void TokenDataset::read(uint64_t begin, uint64_t n, int32_t* out) const {
  LOOM_CHECK(begin <= tokens() && n <= tokens() - begin, "tokens [", begin, ",", begin + n, ") of dataset",
             name_, "with", tokens());
  // The shard holding `begin`: the last whose start is <= begin.
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  while (n > 0) {
    const uint64_t offset = begin - starts_[i];
    const uint64_t take = std::min(n, shards_[i].tokens() - offset);
    shards_[i].read(offset, take, out);
    out += take;
    begin += take;
    n -= take;
    ++i;
  }
}

void TokenDataset::read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const {
  LOOM_CHECK(begin <= tokens() && n <= tokens() - begin, "mask of tokens [", begin, ",", begin + n, ") of dataset",
             name_, "with", tokens());
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  while (n > 0) {
    const uint64_t offset = begin - starts_[i];
    const uint64_t take = std::min(n, shards_[i].tokens() - offset);
    shards_[i].read_loss_mask(offset, take, out);
    out += take;
    begin += take;
    n -= take;
    ++i;
  }
}

std::vector<uint64_t> TokenDataset::document_ends() const {
  std::vector<uint64_t> ends;
  for (size_t i = 0; i < shards_.size(); ++i) {
    const TokenShard& s = shards_[i];
    for (uint64_t d = 0; d < s.documents(); ++d) {
      const bool continues = d + 1 == s.documents() && (s.header().flags & kShardLastDocumentContinues) != 0;
      if (!continues) ends.push_back(starts_[i] + s.document_end(d));
    }
  }
  if (ends.empty() || ends.back() != tokens()) ends.push_back(tokens());
  return ends;
}

void TokenDataset::verify() const {
  for (const TokenShard& s : shards_) s.verify_tokens();
}

}  // namespace loom
