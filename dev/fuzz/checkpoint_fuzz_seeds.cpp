// Writes the seed corpus of the checkpoint-reader fuzz target (dev/fuzz/checkpoint_reader_fuzz.cpp):
// real checkpoints of a tiny GPT saved by Checkpointer (with and without AdamW moments), the same
// spread over two shard files, the same as a format 1 manifest (no checksum), a few damaged ones,
// and the inputs of bugs found so far, each in the format of dev/fuzz/fuzz_input.h. Every manifest
// is written by serialize_manifest, so it carries its checksum as a real one does.
//
//   checkpoint_fuzz_seeds OUT_DIR
#include <stdlib.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/base/check.h"
#include "core/base/file_io.h"
#include "dev/fuzz/fuzz_input.h"
#include "parallel/solo_communicator.h"

namespace {

namespace fs = std::filesystem;
using loom::checkpoint::Manifest;
using loom::fuzz::CheckpointInput;

// Saves a tiny model (and, with `moments`, its AdamW state) under `root` and returns the
// checkpoint's manifest and shard file as a fuzz input.
CheckpointInput save_tiny_checkpoint(const std::string& root, bool moments) {
  loom::config::RunConfig cfg;
  loom::config::ModelConfig& mc = *cfg.mutable_model();
  mc.set_n_layer(1);
  mc.set_n_head(2);
  mc.set_n_embd(8);
  mc.set_vocab_size(5);
  mc.set_seq_len(4);
  loom::GPTConfig gc;
  gc.n_layer = mc.n_layer();
  gc.n_head = mc.n_head();
  gc.n_embd = mc.n_embd();
  gc.vocab_size = mc.vocab_size();
  gc.max_seq_len = mc.seq_len();
  loom::GPT model(gc);
  model.init_weights(cfg.train().seed());
  loom::AdamW opt(model, loom::AdamWSettings{});
  // Moments that differ from zero and from each other, so that a misplaced slice shows.
  for (int64_t i = 0; i < opt.moment_m().numel(); ++i) {
    opt.moment_m().f32()[i] = 0.001f * static_cast<float>(i);
    opt.moment_v().f32()[i] = 0.002f * static_cast<float>(i + 1);
  }
  opt.set_step_count(7);

  loom::parallel::SoloCommunicator world;
  loom::checkpoint::Policy policy;
  policy.root = root;
  policy.async = false;
  loom::checkpoint::Checkpointer saver(policy, world);
  loom::checkpoint::Progress progress;
  progress.step = 7;
  progress.tokens_seen = 7 * 16;
  loom::GPT* chunks[] = {&model};
  loom::AdamW* optimizers[] = {&opt};
  saver.save(cfg, progress, chunks, moments ? std::span<loom::AdamW* const>(optimizers) : std::span<loom::AdamW* const>(),
             "checkpoint_fuzz_seeds");
  saver.wait();

  const std::string dir = saver.last_committed();
  CheckpointInput input;
  input.manifest = loom::read_file(dir + "/" + loom::checkpoint::kManifestName, "manifest");
  Manifest m;
  LOOM_CHECK(m.ParseFromString(input.manifest), "the saved manifest parses");
  for (const loom::checkpoint::ShardFile& f : m.files()) input.files.push_back(loom::read_file(dir + "/" + f.name(), "shard"));
  return input;
}

Manifest parse(const CheckpointInput& input) {
  Manifest m;
  LOOM_CHECK(m.ParseFromString(input.manifest), "seed manifest parses");
  return m;
}

// The same checkpoint as two shard files: every second tensor moves to a copy of the file.
CheckpointInput split_in_two(const CheckpointInput& input) {
  Manifest m = parse(input);
  CheckpointInput out;
  out.files = {input.files.at(0), input.files.at(0)};
  *m.add_files() = m.files(0);
  m.mutable_files(1)->set_name("rank-00001.shard");
  m.mutable_files(1)->set_rank(1);
  for (int i = 1; i < m.tensors_size(); i += 2) m.mutable_tensors(i)->set_file(1);
  out.manifest = loom::checkpoint::serialize_manifest(m);
  return out;
}

// One tensor "w" of `shape` whose single slice is (start, extent), stored at offset 0 of a
// shard file of `file_bytes` zero bytes: manifests that once broke the reader's arithmetic.
CheckpointInput one_slice(std::vector<int64_t> shape, std::vector<int64_t> start, std::vector<int64_t> extent,
                          uint64_t file_bytes) {
  Manifest m;
  m.set_format_version(loom::checkpoint::kFormatVersion);
  loom::checkpoint::ShardFile* f = m.add_files();
  f->set_name(loom::checkpoint::shard_file_name(0));
  f->set_size(file_bytes);
  loom::checkpoint::TensorShard* t = m.add_tensors();
  t->set_name("w");
  for (int64_t d : shape) t->add_global_shape(d);
  for (int64_t s : start) t->mutable_slice()->add_start(s);
  for (int64_t e : extent) t->mutable_slice()->add_extent(e);
  t->set_file(0);
  t->set_nbytes(4);
  CheckpointInput out;
  out.manifest = loom::checkpoint::serialize_manifest(m);
  out.files.push_back(std::string(file_bytes, '\0'));
  return out;
}

// Two slices of "b" (3 elements) that overlap in element 1 and leave element 2 out, yet hold
// as many elements as the tensor: the reader once took that for a whole tensor.
CheckpointInput overlapping_slices() {
  CheckpointInput out = one_slice({3}, {0}, {2}, 16);
  Manifest m = parse(out);
  loom::checkpoint::TensorShard* t = m.mutable_tensors(0);
  t->set_name("b");
  t->set_nbytes(8);
  t->set_xxh64(XXH64(out.files[0].data(), 8, 0));
  loom::checkpoint::TensorShard* u = m.add_tensors();
  *u = *t;
  u->mutable_slice()->set_start(0, 1);
  u->mutable_slice()->set_extent(0, 1);
  u->set_offset(8);
  u->set_nbytes(4);
  u->set_xxh64(XXH64(out.files[0].data() + 8, 4, 0));
  out.manifest = loom::checkpoint::serialize_manifest(m);
  return out;
}

void write_seed(const fs::path& dir, const std::string& name, const CheckpointInput& input) {
  std::ofstream out(dir / name, std::ios::binary);
  const std::string bytes = loom::fuzz::encode_checkpoint_input(input);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  LOOM_CHECK(out.good(), "writing seed", (dir / name).string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    fs::create_directories(out);
    std::string scratch = (fs::temp_directory_path() / "loom-fuzz-seeds-XXXXXX").string();
    LOOM_CHECK(::mkdtemp(scratch.data()) != nullptr, "cannot create a temporary directory");

    const CheckpointInput full = save_tiny_checkpoint(scratch + "/full", true);
    const CheckpointInput weights = save_tiny_checkpoint(scratch + "/weights", false);
    fs::remove_all(scratch);
    write_seed(out, "full", full);
    write_seed(out, "weights_only", weights);
    write_seed(out, "two_files", split_in_two(full));

    CheckpointInput legacy = full;  // format 1: no manifest checksum, still read
    Manifest old = parse(full);
    old.set_format_version(1);
    old.clear_manifest_xxh64();
    old.clear_save_serial();
    legacy.manifest = old.SerializeAsString();
    write_seed(out, "format_1", legacy);

    CheckpointInput incomplete = full;  // one slice left out, the checksum recomputed
    Manifest cut = parse(full);
    cut.mutable_tensors()->DeleteSubrange(cut.tensors_size() - 1, 1);
    incomplete.manifest = loom::checkpoint::serialize_manifest(cut);
    write_seed(out, "incomplete", incomplete);

    CheckpointInput corrupt = full;  // one flipped bit in the first tensor's bytes
    corrupt.files[0][parse(full).tensors(0).offset()] ^= 0x10;
    write_seed(out, "bad_checksum", corrupt);

    CheckpointInput truncated = weights;  // the shard file cut short
    truncated.files[0].resize(truncated.files[0].size() / 2);
    write_seed(out, "truncated", truncated);

    CheckpointInput no_files = weights;  // the manifest without its files
    no_files.files.clear();
    write_seed(out, "no_files", no_files);
    constexpr int64_t kBig = int64_t{1} << 40, kMax = std::numeric_limits<int64_t>::max();
    write_seed(out, "slice_product_overflow", one_slice({kBig, kBig}, {0, 0}, {kBig, kBig}, 4));
    write_seed(out, "shape_product_overflow", one_slice({kBig, kBig}, {0, 0}, {1, 1}, 4));
    write_seed(out, "slice_end_overflow", one_slice({5}, {kMax}, {1}, 4));
    write_seed(out, "overlapping_slices", overlapping_slices());
    std::printf("wrote 12 seeds to %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
