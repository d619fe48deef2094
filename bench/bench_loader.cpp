// Loader throughput: tokens per second delivered to a consumer, shuffled, from the page cache.
//
//   build/bench/bench_loader [tokens (default 200000000)] [--keep]
//
// Writes a synthetic split of that many tokens (vocabulary 50257: uint16; documents of 1 to 4095
// tokens) to a directory under /tmp, times the full verification `loom train` runs on opening it
// (from the disk, then from the page cache, where it leaves every page), then times
// TokenLoader at T = 1024, B = 8 drawing shuffled samples for about two seconds per mode, the
// consumer summing every token (so each is touched once). The directory is removed unless --keep.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/loader.h"
#include "data/shard_writer.h"
#include "data/token_dataset.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void write_dataset(const std::string& dir, uint64_t tokens, uint32_t vocab) {
  loom::ShardWriter writer(dir, "train", vocab);
  const loom::CounterRng rng(1, loom::stream_id_of("bench.loader"));
  std::vector<int32_t> doc;
  uint64_t written = 0, block = 0;
  while (written < tokens) {
    const std::array<uint32_t, 4> length_bits = rng.bits(block++);
    const uint64_t length = std::min<uint64_t>(1 + length_bits[0] % 4095, tokens - written);
    doc.resize(length);
    for (uint64_t i = 0; i < length; i += 4) {
      const std::array<uint32_t, 4> bits = rng.bits(block++);
      for (uint64_t j = 0; j < 4 && i + j < length; ++j) doc[i + j] = static_cast<int32_t>(bits[j] % (vocab - 1));
    }
    doc.back() = static_cast<int32_t>(vocab - 1);  // the end-of-document token
    writer.add_document(doc);
    written += length;
  }
  writer.finish();
}

// Drops the split's clean pages from the page cache (the writer fsync'd them), so that the next
// read comes from the disk; other files are left alone.
void evict_from_page_cache(const std::string& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Measured {
  double tokens_per_s;
  uint64_t steps;
  int64_t checksum;
};

Measured run(const loom::TokenDataset& dataset, int prefetch, double budget_s) {
  loom::LoaderOptions options;
  options.layout = loom::BatchLayout{1024, 8, 1, 1, 0};
  options.prefetch_steps = prefetch;
  loom::TokenLoader loader({{&dataset, 1.0}}, options, loom::LoaderState{1337, 0});
  for (int i = 0; i < 10; ++i) loader.next();  // warm up: thread started, queue full
  const Clock::time_point start = Clock::now();
  Measured m{0, 0, 0};
  uint64_t tokens = 0;
  while (seconds_since(start) < budget_s) {
    const loom::StepBatch batch = loader.next();
    for (int32_t t : batch.tokens) m.checksum += t;
    tokens += batch.tokens.size();
    ++m.steps;
  }
  m.tokens_per_s = static_cast<double>(tokens) / seconds_since(start);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t tokens = 200000000;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--keep") {
      keep = true;
    } else if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos && arg.size() < 19) {
      tokens = std::stoull(arg);
    } else {
      std::fprintf(stderr,
                   "usage: bench_loader [TOKENS] [--keep]\n"
                   "  writes a TOKENS-token split (default 200000000) under /tmp, measures the loader's\n"
                   "  tokens/s from the page cache, and deletes it unless --keep\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (tokens < 2 * 1024 + 2) {
    std::fprintf(stderr, "bench_loader: TOKENS is %llu but must be at least 2050 (two windows of 1025)\n",
                 static_cast<unsigned long long>(tokens));
    return 2;
  }
  const uint32_t vocab = 50257;
  const std::string dir = "/tmp/loom_bench_loader_" + std::to_string(tokens);
  try {
    if (!std::filesystem::exists(loom::split_descriptor_path(dir, "train"))) {
      const Clock::time_point start = Clock::now();
      write_dataset(dir, tokens, vocab);
      const double s = seconds_since(start);
      std::printf("wrote %llu tokens to %s in %.2f s (%.1f M tokens/s, generation included)\n",
                  static_cast<unsigned long long>(tokens), dir.c_str(), s, static_cast<double>(tokens) / s / 1e6);
    }
    evict_from_page_cache(dir);
    const loom::TokenDataset dataset = loom::TokenDataset::open_split(dir, "train");
    std::printf("split: %llu tokens in %zu shards\n", static_cast<unsigned long long>(dataset.tokens()),
                dataset.shard_count());
    // What `loom train` pays when it opens the split (TokenShard::verify_tokens on every shard):
    // first from the disk, then from the page cache (where the first pass left every page).
    for (const char* from : {"disk (evicted from the page cache)", "page cache"}) {
      const Clock::time_point start = Clock::now();
      dataset.verify();
      const double s = seconds_since(start);
      const double mb = 2.0 * static_cast<double>(dataset.tokens()) / 1e6;  // uint16 tokens
      std::printf("full verify from the %s: %.2f s, %.0f MB/s (%.0f M tokens/s)\n", from, s, mb / s,
                  static_cast<double>(dataset.tokens()) / s / 1e6);
    }
    std::printf("loader: T=1024 B=8, shuffled, consumer sums every token; %ld cores\n", ::sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("%-28s %14s %10s\n", "mode", "M tokens/s", "steps");
    for (int prefetch : {0, 4}) {
      const Measured m = run(dataset, prefetch, 2.0);
      std::printf("%-28s %14.1f %10llu   (checksum %lld)\n",
                  prefetch == 0 ? "synchronous (no thread)" : "prefetch thread, 4 steps", m.tokens_per_s / 1e6,
                  static_cast<unsigned long long>(m.steps), static_cast<long long>(m.checksum));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
  if (!keep) std::filesystem::remove_all(dir);
  return 0;
}
