// Checkpoint bandwidth on one process: GPT-2 124M with its AdamW moments, saved and loaded
// through checkpoints/checkpoint.h, against a plain sequential write and read of the same bytes
// on the same disk.
//
//   build/bench/bench_checkpoint [--dir DIR] [--repeats N] [--keep]
//
// Per repeat (save+load then write+read, or the other way round, alternating). Before each write
// the previous file (checkpoint) is deleted, so that both start with the same free memory for the
// page cache (on this VM, writing into pages the guest has not touched lately is several times
// slower); before each timed step, sync() and a 2 s pause let the disk finish earlier work:
//   save        Checkpointer::save with Policy.async = false: host copy, xxh64, write, fsync,
//               manifest, rename; bytes = shard file + manifest
//   plain write one file of the same size, write() of 64 MiB pieces from memory, fsync, close
//   load        the page cache emptied, then CheckpointReader + load_state into a second GPT and
//               AdamW (built beforehand, its memory already touched)
//   plain read  the page cache emptied, then read() of the plain file in 64 MiB pieces into memory
//   async save  Policy.async = true: the seconds save() holds the caller (last_blocked_seconds),
//               of which the host copy (last_copy_seconds), and the seconds until wait() returns
// The page cache is emptied with `echo 1 > /proc/sys/vm/drop_caches` where allowed (after
// sync()), else with posix_fadvise(POSIX_FADV_DONTNEED) on each file; mincore() then reports how
// much of the file is still resident. Bandwidth is bytes / 1e9 / seconds (GB/s).
// DIR (default: build/checkpoint_bench next to build/bench) is emptied first and removed at the
// end unless --keep.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/base/check.h"
#include "core/base/file_io.h"
#include "parallel/solo_communicator.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using loom::checkpoint::Checkpointer;

constexpr size_t kPiece = size_t{64} << 20;  // the plain write's and read's request size

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Empties the page cache of `files`. Returns how ("drop_caches" or "fadvise").
std::string drop_cache(const std::vector<std::string>& files) {
  ::sync();
  const int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    const bool dropped = ::write(fd, "1", 1) == 1;
    ::close(fd);
    if (dropped) return "drop_caches";
  }
  for (const std::string& f : files) {
    const int ffd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    LOOM_CHECK(ffd >= 0, "cannot open", f);
    ::fdatasync(ffd);
    ::posix_fadvise(ffd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(ffd);
  }
  return "fadvise";
}

// Lets the disk finish what earlier steps left it (writeback, the discards of deleted files) so
// that it does not land in the next timing.
void settle() {
  ::sync();
  std::this_thread::sleep_for(std::chrono::seconds(2));
}

// Fraction of `path`'s pages in the page cache.
double resident_fraction(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_CHECK(fd >= 0, "cannot open", path);
  struct stat st {};
  ::fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return 0;
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  LOOM_CHECK(p != MAP_FAILED, "cannot map", path);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_core((size + page - 1) / page);
  ::mincore(p, size, in_core.data());
  ::munmap(p, size);
  size_t resident = 0;
  for (unsigned char c : in_core) resident += c & 1;
  return static_cast<double>(resident) / static_cast<double>(in_core.size());
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

uint64_t bytes_of(const std::vector<std::string>& files) {
  uint64_t n = 0;
  for (const std::string& f : files) n += fs::file_size(f);
  return n;
}

void plain_write(const std::string& path, const char* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LOOM_CHECK(fd >= 0, "cannot create", path);
  for (size_t done = 0; done < n; done += kPiece) loom::write_fully(fd, data + done, std::min(kPiece, n - done), path);
  LOOM_CHECK(::fsync(fd) == 0 && ::close(fd) == 0, "flushing", path);
}

void plain_read(const std::string& path, char* data, size_t n) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_CHECK(fd >= 0, "cannot open", path);
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::read(fd, data + done, std::min(kPiece, n - done));
    LOOM_CHECK(got > 0, "reading", path, "at", done);
    done += static_cast<size_t>(got);
  }
  ::close(fd);
}

struct Stat {
  std::vector<double> seconds;
  double best() const { return *std::min_element(seconds.begin(), seconds.end()); }
  double median() const {
    std::vector<double> s = seconds;
    std::sort(s.begin(), s.end());
    return s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
  }
};

void print_row(const char* what, const Stat& s, uint64_t bytes) {
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("%-34s %9.3f %9.3f %11.3f %11.3f\n", what, s.best(), s.median(), gb / s.best(), gb / s.median());
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int repeats = 3;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_checkpoint [--dir DIR] [--repeats N (3)] [--keep]\n"
                   "  saves and loads a GPT-2 124M checkpoint with AdamW state under DIR (default\n"
                   "  build/checkpoint_bench) against a plain write and read of the same bytes\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (dir.empty()) dir = (fs::canonical("/proc/self/exe").parent_path().parent_path() / "checkpoint_bench").string();
  try {
    fs::remove_all(dir);
    fs::create_directories(dir);
    loom::config::RunConfig cfg;
    loom::config::ModelConfig& mc = *cfg.mutable_model();
    mc.set_n_layer(12);
    mc.set_n_head(12);
    mc.set_n_embd(768);
    mc.set_vocab_size(50257);
    mc.set_seq_len(1024);
    const loom::GPTConfig gc{mc.n_layer(), mc.n_head(), mc.n_embd(), mc.vocab_size(), mc.seq_len()};
    loom::GPT model(gc), fresh(gc);
    model.init_weights(1337);
    loom::AdamW opt(model, loom::AdamWSettings{}), fresh_opt(fresh, loom::AdamWSettings{});
    // Moments as after some training: distinct, nonzero values (filesystems store zeros as well
    // as any other bytes, but a load that misplaced them would show).
    for (int64_t i = 0; i < opt.moment_m().numel(); ++i) {
      opt.moment_m().f32()[i] = 1e-3f * static_cast<float>(i % 1000);
      opt.moment_v().f32()[i] = 1e-6f * static_cast<float>(i % 997);
    }
    opt.set_step_count(100);
    std::printf("GPT-2 124M: %lld parameters; checkpoint root %s\n", static_cast<long long>(model.num_parameters()), dir.c_str());

    loom::parallel::SoloCommunicator world;
    loom::checkpoint::Policy sync_policy;
    sync_policy.root = dir + "/sync";
    sync_policy.keep_last = 0;  // the benchmark deletes old ones itself, outside the timings
    sync_policy.async = false;
    loom::checkpoint::Policy async_policy = sync_policy;
    async_policy.root = dir + "/async";
    async_policy.async = true;
    Checkpointer sync_saver(sync_policy, world), async_saver(async_policy, world);
    loom::GPT* chunks[] = {&model};
    loom::AdamW* optimizers[] = {&opt};
    loom::GPT* fresh_chunks[] = {&fresh};
    loom::AdamW* fresh_optimizers[] = {&fresh_opt};
    loom::checkpoint::Progress progress;

    // An untimed save first: the host buffer is allocated once per Checkpointer, not per save.
    progress.step = 1;
    sync_saver.save(cfg, progress, chunks, optimizers, "bench_checkpoint");
    async_saver.save(cfg, progress, chunks, optimizers, "bench_checkpoint");
    async_saver.wait();
    std::string checkpoint = sync_saver.last_committed();
    const uint64_t bytes = bytes_of(files_in(checkpoint));
    std::printf("checkpoint: %s, %.3f GB in %zu files\n", checkpoint.c_str(), static_cast<double>(bytes) / 1e9,
                files_in(checkpoint).size());

    // The plain peer writes from and reads into memory of the same size, touched beforehand.
    std::unique_ptr<char[]> plain(new char[bytes]);
    for (uint64_t i = 0; i < bytes; ++i) plain[i] = static_cast<char>(i * 2654435761u >> 24);
    const std::string plain_path = dir + "/plain.bin";

    Stat save, write, load, read, blocked, copy, async_total;
    std::string drop_method;
    double resident_after_drop = 0;
    auto timed_save = [&](int64_t step) {
      progress.step = step;
      fs::remove_all(checkpoint);  // the previous one, as the plain write removes its file
      settle();
      const Clock::time_point start = Clock::now();
      sync_saver.save(cfg, progress, chunks, optimizers, "bench_checkpoint");
      save.seconds.push_back(seconds_since(start));
      checkpoint = sync_saver.last_committed();
    };
    auto timed_write = [&] {
      fs::remove(plain_path);
      settle();
      const Clock::time_point start = Clock::now();
      plain_write(plain_path, plain.get(), bytes);
      write.seconds.push_back(seconds_since(start));
    };
    auto timed_load = [&] {
      const std::vector<std::string> files = files_in(checkpoint);
      settle();
      drop_method = drop_cache(files);
      for (const std::string& f : files) resident_after_drop = std::max(resident_after_drop, resident_fraction(f));
      const Clock::time_point start = Clock::now();
      {
        loom::checkpoint::CheckpointReader reader(checkpoint);
        loom::checkpoint::load_state(reader, fresh_chunks, fresh_optimizers);
      }
      load.seconds.push_back(seconds_since(start));
    };
    auto timed_read = [&] {
      settle();
      drop_method = drop_cache({plain_path});
      resident_after_drop = std::max(resident_after_drop, resident_fraction(plain_path));
      const Clock::time_point start = Clock::now();
      plain_read(plain_path, plain.get(), bytes);
      read.seconds.push_back(seconds_since(start));
    };
    for (int r = 0; r < repeats; ++r) {
      const int64_t step = 10 + r;
      // Each write is followed by its read: this disk serves a burst of writes quickly and then
      // slows down, so two writes in a row would penalize the second.
      if (r % 2 == 0) {
        timed_save(step);
        timed_load();
        timed_write();
        timed_read();
      } else {
        timed_write();
        timed_read();
        timed_save(step);
        timed_load();
      }
      fs::remove_all(async_saver.last_committed());
      progress.step = step;
      settle();
      const Clock::time_point start = Clock::now();
      async_saver.save(cfg, progress, chunks, optimizers, "bench_checkpoint");
      async_saver.wait();
      async_total.seconds.push_back(seconds_since(start));
      blocked.seconds.push_back(async_saver.last_blocked_seconds());
      copy.seconds.push_back(async_saver.last_copy_seconds());
      std::printf("repeat %d: save %.2f s, plain write %.2f s, load %.2f s, plain read %.2f s, async blocked %.3f s\n",
                  r + 1, save.seconds.back(), write.seconds.back(), load.seconds.back(), read.seconds.back(),
                  blocked.seconds.back());
    }

    // The loaded model must equal the saved one, moments included.
    const auto same = [](const loom::Tensor& a, const loom::Tensor& b) {
      return a.nbytes() == b.nbytes() && std::memcmp(a.f32(), b.f32(), a.nbytes()) == 0;
    };
    const bool equal = same(model.parameter_arena(), fresh.parameter_arena()) && same(opt.moment_m(), fresh_opt.moment_m()) &&
                       same(opt.moment_v(), fresh_opt.moment_v()) && fresh_opt.step_count() == opt.step_count();
    LOOM_CHECK(equal, "the loaded checkpoint differs from the saved model");

    std::printf("\n%.3f GB per checkpoint, %d repeats, page cache emptied with %s (at most %.1f%% of a file resident after)\n",
                static_cast<double>(bytes) / 1e9, repeats, drop_method.c_str(), 100 * resident_after_drop);
    std::printf("%-34s %9s %9s %11s %11s\n", "", "best s", "median s", "best GB/s", "median GB/s");
    print_row("(a) save, synchronous", save, bytes);
    print_row("(b) plain write + fsync", write, bytes);
    print_row("(c) load (reader + load_state)", load, bytes);
    print_row("(d) plain read", read, bytes);
    print_row("(e) async save: blocked", blocked, bytes);
    print_row("    of which host copy", copy, bytes);
    print_row("    until written (wait)", async_total, bytes);
    std::printf("save / plain write: %.1f%% (best), %.1f%% (median)\n", 100 * write.best() / save.best(),
                100 * write.median() / save.median());
    std::printf("load / plain read:  %.1f%% (best), %.1f%% (median)\n", 100 * read.best() / load.best(),
                100 * read.median() / load.median());
    std::printf("async save blocks for %.1f%% of the full write (median)\n", 100 * blocked.median() / async_total.median());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: %s\n", e.what());
    return 1;
  }
  if (!keep) fs::remove_all(dir);
  return 0;
}
