// libFuzzer target for the checkpoint reader (checkpoints/reader.h): a manifest and its shard
// files, as bytes, through CheckpointReader::from_memory, then every stored tensor read whole in
// every state it has, then verify_all(). A UserError is the expected answer to a bad input; any
// other exception, a crash, a sanitizer report or a leak is a bug.
//
// Input (dev/fuzz/fuzz_input.h, shared with the seed writer):
//   u32 LE  manifest length M, then M bytes of manifest (clamped to what is there)
//   u8      number of shard files N
//   N x u32 LE  file lengths, then the files' bytes one after another (each clamped)
//
// Besides not crashing, a successful read() must have written every element of the rectangle:
// the tensor is read twice into buffers filled with different patterns and the two must agree.
//
// A manifest that ends like a checksum trailer (checkpoints/reader.h, serialize_manifest) gets
// its checksum recomputed before the reader sees it: a mutation would otherwise almost never get
// past the checksum to the checks behind it. That the checksum is compared at all is tested in
// tests/checkpoints/reader_test.cpp.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <xxhash.h>

#include "checkpoints/reader.h"
#include "core/base/check.h"
#include "dev/fuzz/fuzz_input.h"

namespace {

// Tensors larger than this are not read whole (the buffers would dominate the run); their
// slices are still checked by verify_all().
constexpr int64_t kMaxReadElements = int64_t{1} << 20;

[[noreturn]] void report_bug(const std::string& what) {
  std::fprintf(stderr, "checkpoint_reader_fuzz: BUG: %s\n", what.c_str());
  std::abort();
}

void read_every_tensor(const loom::checkpoint::CheckpointReader& reader) {
  using loom::checkpoint::State;
  std::set<std::pair<std::string, int>> seen;
  for (const loom::checkpoint::TensorShard& t : reader.manifest().tensors()) {
    if (!seen.emplace(t.name(), static_cast<int>(t.state())).second) continue;
    const std::vector<int64_t> shape(t.global_shape().begin(), t.global_shape().end());
    // (rows, cols): the reader's matrix view, 1-D tensors being (n, 1).
    const int64_t rows = shape.at(0), cols = shape.size() == 2 ? shape[1] : 1;
    if (rows > kMaxReadElements || cols > kMaxReadElements || rows * cols > kMaxReadElements) continue;
    const loom::checkpoint::Rect whole{0, rows, 0, cols};
    const size_t n = static_cast<size_t>(rows * cols);
    std::vector<float> first(n), second(n);
    std::memset(first.data(), 0x00, n * sizeof(float));
    std::memset(second.data(), 0xA5, n * sizeof(float));
    bool ok = true;
    try {
      reader.read(t.name(), t.state(), whole, first.data(), cols);
    } catch (const loom::UserError&) {
      ok = false;
    }
    // The outcome must not depend on the destination's contents, nor on having read before.
    bool ok_again = true;
    try {
      reader.read(t.name(), t.state(), whole, second.data(), cols);
    } catch (const loom::UserError&) {
      ok_again = false;
    }
    if (ok != ok_again) report_bug("reading \"" + t.name() + "\" twice gave different outcomes");
    if (ok && std::memcmp(first.data(), second.data(), n * sizeof(float)) != 0) {
      report_bug("read() of \"" + t.name() + "\" succeeded but left elements of the rectangle unwritten");
    }
  }
}

// Rewrites the last 8 bytes to the XXH64 of the bytes before the trailer's tag byte 0x69.
void reseal_manifest(std::string& manifest) {
  constexpr size_t kTrailer = 9;
  if (manifest.size() < kTrailer || manifest[manifest.size() - kTrailer] != 0x69) return;
  const uint64_t sum = XXH64(manifest.data(), manifest.size() - kTrailer, 0);
  for (size_t i = 0; i < 8; ++i) manifest[manifest.size() - 8 + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8; the parse goes on, and so do we, quietly.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::fuzz::CheckpointInput input = loom::fuzz::decode_checkpoint_input(data, size);
  reseal_manifest(input.manifest);
  try {
    auto reader = loom::checkpoint::CheckpointReader::from_memory(input.manifest, input.files, "fuzz");
    read_every_tensor(*reader);
    const std::vector<std::string> failures = reader->verify_all();
    for (size_t i = 0; i < static_cast<size_t>(reader->manifest().tensors_size()); ++i) {
      if (reader->check_status(i) == loom::checkpoint::CheckpointReader::Check::kUnread) {
        report_bug("verify_all() left tensor entry " + std::to_string(i) + " unchecked");
      }
    }
  } catch (const loom::UserError&) {
    // A bad checkpoint, reported as one: the expected outcome.
  } catch (const std::exception& e) {
    report_bug(std::string("exception other than UserError: ") + e.what());
  }
  return 0;
}
