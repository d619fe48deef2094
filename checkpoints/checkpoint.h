// Sharded training checkpoints: save (asynchronous, atomic, with retention), resume from the
// newest valid one, and load into any parallel layout.
//
// Saving (collective over the world): every rank copies the tensors it is responsible for into a
// host buffer laid out as its shard file, then a background thread checksums and writes the file
// into a temporary directory, fsyncs it, and reports success by writing a small index file next
// to it. Rank 0's thread waits for every rank's report, writes the manifest, renames the
// directory to `step-NNNNNNNN`, replaces the `latest` pointer and prunes old checkpoints. Training
// goes on meanwhile; the next save first waits for the previous one.
//
// What a rank writes: the parameter values and Adam moments of the elements its optimizer owns
// (ZeRO-1: each data-parallel rank owns a disjoint part), each run of them cut into rectangles of
// the global tensor. Tensors every tensor-parallel rank holds whole are written by tp rank 0 only;
// the last pipeline stage's copy of the tied wte is not written (it equals the first stage's).
// So every element is stored exactly once, whatever the layout.
//
// Loading: every rank reads the rectangles of the global tensors it holds in its own layout,
// from whichever stored slices intersect them, verifying their checksums.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "checkpoints/checkpoint.pb.h"
#include "checkpoints/reader.h"
#include "core/config.pb.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "data/loader.h"
#include "parallel/communicator.h"

namespace loom::checkpoint {

// Where a run stands, besides its tensors.
struct Progress {
  int64_t step = 0;          // optimizer steps completed
  uint64_t tokens_seen = 0;  // training tokens consumed
  bool has_loader = false;   // token-shard runs; the addition task derives its batches from step
  LoaderState loader;
};

struct Policy {
  std::string root;             // checkpoints go to root/step-NNNNNNNN
  int keep_last = 3;            // the newest N are kept; 0: keep every checkpoint
  int keep_every = 0;           // also keep those whose step is a multiple of M; 0: none
  bool async = true;            // false: save() returns once the checkpoint is committed
  double commit_timeout_s = 600;  // rank 0 gives up waiting for the other ranks' shards
  // A run that started afresh: at its first commit, the checkpoints it did not write (an earlier
  // run's) are deleted.
  bool replace_earlier_run = false;
  // Called on the writer thread with the step being saved, halfway through writing this rank's
  // shard: the fault-injection tests kill the process there (launch/fault_injection.h).
  std::function<void(int64_t step)> halfway_hook = {};
};

// "step-00000010"
std::string step_dir_name(int64_t step);

class Checkpointer {
 public:
  Checkpointer(Policy policy, parallel::Communicator& world);
  // Waits for a save in flight; an error is reported through `on_error` given to wait(), or
  // ignored here (call wait() before destruction to see it).
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Collective over the world. Waits for the previous save (throwing its error), copies this
  // rank's state into host memory, starts the background write and returns (after the commit
  // when the policy is synchronous). `optimizers`: one per chunk, or empty to save weights only.
  // `in_place` (the last save of a run): no host copy; the shard is written straight from the
  // tensors, so the save needs no memory beside the model's. The caller must not change the
  // weights or the optimizer's state until wait() has returned.
  void save(const config::RunConfig& cfg, const Progress& progress, std::span<GPT* const> chunks,
            std::span<AdamW* const> optimizers, const std::string& created_by = "loom train",
            bool in_place = false);
  // Waits until this rank's part of the last save is on disk, and on rank 0 until it is
  // committed. UserError if it failed (naming the rank and the file).
  void wait();

  // Seconds the last save() held the caller: waiting for the previous save plus the host copy.
  double last_blocked_seconds() const { return blocked_s_; }
  double last_copy_seconds() const { return copy_s_; }
  // Seconds the last finished save took from save() until this rank's shard was on disk (rank 0:
  // until the commit); 0 before any finished.
  double last_save_seconds() const { return save_s_.load(); }
  // The directory of the last committed checkpoint (rank 0; "" before the first commit).
  std::string last_committed() const { return committed_; }
  const Policy& policy() const { return policy_; }

 private:
  struct Pending;
  void write_and_commit(Pending& job);  // on the background thread

  Policy policy_;
  parallel::Communicator& world_;
  std::unique_ptr<Pending> pending_;
  std::thread thread_;
  std::exception_ptr error_;
  std::string committed_;
  std::set<std::string> written_;  // directories this checkpointer committed (rank 0)
  double blocked_s_ = 0, copy_s_ = 0;
  std::atomic<double> save_s_{0};  // written by the writer thread
  std::unique_ptr<char[]> buffer_;  // the host copy of the save in flight; freed when written
  size_t buffer_size_ = 0;
  uint64_t next_serial_ = 0;  // the next manifest's save_serial (rank 0; 0: not known yet)
};

// The committed checkpoint directories under `root` (those with a manifest; unfinished temporary
// directories are never listed), the most recently committed first: by the manifests'
// save_serial; checkpoints of format 1 (no serial) after those, the one `latest` names first and
// then the highest step. A checkpoint whose manifest does not parse comes first (its age is
// unknown; resuming it fails and says why). The newest save is not necessarily the highest step
// (a run resumed from an older checkpoint), nor the one `latest` names (a crash between the
// commit and the pointer's move).
std::vector<std::string> list_checkpoints(const std::string& root);
// The checkpoint name the file root/latest holds ("step-00000020"; "" without one).
std::string latest_name(const std::string& root);

// UserError unless the checkpoint stores exactly the parameter tensors of the model its
// manifest's config describes, each with its shape: the one check the reader cannot make alone.
void check_model_tensors(const CheckpointReader& reader);

// The model shape of the checkpoint's config against the run's: one line per differing field
// ("model.n_layer: checkpoint 4, config 2"), empty when they agree.
std::vector<std::string> model_differences(const config::RunConfig& checkpoint, const config::RunConfig& run);

Progress progress_of(const Manifest& manifest);

// Loads this rank's parameters (and, when `optimizers` is not empty and the checkpoint has them,
// its Adam moments and step count) from `reader`, whatever layout saved it, after
// check_model_tensors. Not collective.
// UserError naming the file and tensor for a missing, corrupt or differently shaped tensor.
// Without stored moments the optimizers start fresh (zero moments, step count 0).
void load_state(const CheckpointReader& reader, std::span<GPT* const> chunks, std::span<AdamW* const> optimizers);

// resume() found a checkpoint of another model shape: the message lists the differences.
class DifferentModel : public UserError {
 public:
  DifferentModel(const std::string& message, std::string differences)
      : UserError(message), differences_(std::move(differences)) {}
  // "checkpoint DIR was saved from a different model: model.n_layer: checkpoint 4, config 2"
  const std::string& differences() const { return differences_; }

 private:
  std::string differences_;
};

struct Resumed {
  bool resumed = false;  // false: nothing to resume from (start fresh)
  std::string dir;
  Progress progress;
  Manifest header;       // the manifest without its tensor and file lists
};

// `spec`: "auto" (the most recently committed valid checkpoint under `root`, list_checkpoints'
// first; a corrupt one is skipped with a warning and the next one tried; none at all: start
// fresh; a warning too when it is not the one `latest` names) or a directory (a checkpoint, or a
// root with checkpoints in it; it must load). Checks the model shape against `run` first (a
// DifferentModel error listing the differences). Collective over the world: every rank loads its part and
// all agree that every rank succeeded before any goes on.
Resumed resume(const std::string& spec, const std::string& root, const config::RunConfig& run,
               parallel::Communicator& world, std::span<GPT* const> chunks,
               std::span<AdamW* const> optimizers,
               const std::function<void(const std::string&)>& warn);

}  // namespace loom::checkpoint
