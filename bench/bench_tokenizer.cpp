// Encode speed of one Loom tokenizer on one core: the time to encode every document of a text
// file, one document at a time (documents are separated by blank lines, as `loom prepare
// --documents blank-line` cuts them).
//
//   build/bench/bench_tokenizer TOKENIZER TEXT [repeats (default 1)]
//
// Prints one line per repeat: "seconds S cpu_seconds C bytes N tokens T checksum K" (wall-clock
// and process CPU time; the checksum, a sum of ids by position, lets a driver check that two
// tokenizers gave the same ids). Loading the tokenizer and reading the file are not timed. bench/hf_tokenizer_bench.py runs it against
// Hugging Face `tokenizers`.
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/tokenizer.h"

namespace {

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXT [repeats]\n");
    return 2;
  }
  try {
    const auto tokenizer = loom::load_tokenizer(argv[1]);
    const std::string text = loom::read_file(argv[2], "text");
    const int repeats = argc > 3 ? std::stoi(argv[3]) : 1;
    std::vector<std::string_view> documents;
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find("\n\n", pos);
      end = end == std::string::npos ? text.size() : end;
      if (end > pos) documents.push_back(std::string_view(text).substr(pos, end - pos));
      pos = end + 2;
    }
    std::vector<int32_t> ids;
    for (int r = 0; r < repeats; ++r) {
      uint64_t tokens = 0, checksum = 0;
      const auto start = std::chrono::steady_clock::now();
      const double cpu_start = cpu_seconds();
      for (std::string_view doc : documents) {
        ids.clear();
        tokenizer->encode_into(doc, ids);
        tokens += ids.size();
        for (size_t i = 0; i < ids.size(); ++i) checksum += static_cast<uint64_t>(ids[i]) * (i + 1);
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("seconds %.6f cpu_seconds %.6f bytes %zu tokens %llu checksum %llu\n", seconds,
                  cpu_seconds() - cpu_start, text.size(),
                  static_cast<unsigned long long>(tokens), static_cast<unsigned long long>(checksum));
    }
  } catch (const loom::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
