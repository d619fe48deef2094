// Helpers for the token data tests: a temporary directory, random documents written as a split,
// raw file bytes to corrupt, and the message of the UserError a call throws.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "data/shard_writer.h"

#include "test_util.h"

namespace loom::testing {


using Documents = std::vector<std::vector<int32_t>>;

// `count` documents of [min_len, max_len] tokens drawn from [0, vocab); each ends with vocab - 1,
// standing in for the end-of-document token.
inline Documents random_documents(int count, int min_len, int max_len, uint32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> length(min_len, max_len);
  std::uniform_int_distribution<int64_t> id(0, int64_t{vocab} - 2);
  Documents docs(static_cast<size_t>(count));
  for (auto& doc : docs) {
    doc.resize(static_cast<size_t>(length(gen)));
    for (size_t i = 0; i + 1 < doc.size(); ++i) doc[i] = static_cast<int32_t>(id(gen));
    doc.back() = static_cast<int32_t>(vocab - 1);
  }
  return docs;
}

inline std::vector<int32_t> concatenated(const Documents& docs) {
  std::vector<int32_t> all;
  for (const auto& d : docs) all.insert(all.end(), d.begin(), d.end());
  return all;
}

// Writes `docs` as DIR/<split>-*.tok + DIR/<split>.split.pbtxt; returns the shard paths.
inline std::vector<std::string> write_split(const std::string& dir, const std::string& split, uint32_t vocab,
                                            const Documents& docs,
                                            uint64_t max_bytes = ShardWriter::kDefaultMaxShardBytes) {
  ShardWriter writer(dir, split, vocab, max_bytes);
  for (const auto& d : docs) writer.add_document(d);
  return writer.finish();
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace loom::testing
