// The evaluations of launch/eval_runner.h in every layout the world allows, against one rank:
// each rank's shard copied from a whole model (copy_shard_from_whole, what `loom eval` does), tp
// in {1, 2}, pp in {1, 2} (and an interleaved pipeline of 2 chunks per stage), sequence
// parallelism with tp 2, the remaining ranks data parallel sharing out the documents (5 of them:
// uneven over 2 or 4 replicas), for GPT-2 and a Llama. Every choice's log-likelihood within 1e-5
// relative of one rank's, acc and acc_norm equal; exact match shared out over every rank equal to
// one rank's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/decoder.h"
#include "launch/eval_runner.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "parallel/solo_communicator.h"

namespace loom {
namespace {

using parallel::Communicator;

const GPTConfig kConfig{4, 4, 32, 53, 16};

// One token per byte: 'a'.. onwards, wrapped into the vocabulary; 52 is the end-of-sequence token.
TextCodec byte_codec() {
  TextCodec codec;
  codec.encode = [](const std::string& text) {
    std::vector<int32_t> ids;
    for (const char c : text) ids.push_back(static_cast<unsigned char>(c) % 52);
    return ids;
  };
  codec.decode = [](const std::vector<int32_t>& ids) {
    std::string text;
    for (const int32_t id : ids) text += static_cast<char>('a' + id % 26);
    return text;
  };
  codec.eos = 52;
  codec.name = "the byte codec";
  return codec;
}

std::vector<ChoiceDoc> docs() {
  return {
      {"the cat", {"sat", "flew away", "ran"}, 0, 1},
      {"a", {"b", "cd"}, 1, 2},
      {"", {"start", "begin", "go", "now"}, 3, 3},
      {"a longer context than the window holds", {"end", "stop"}, 0, 4},
      {"x y", {"z"}, 0, 5},
  };
}

// A Llama of grouped-query attention (4 query heads over 2 key/value heads, its q/k/v rows and
// gate/up rows sharded in blocks), untied.
GPTConfig llama_config() {
  GPTConfig c = kConfig;
  c.family = Family::kLlama;
  c.n_kv_head = 2;
  c.intermediate_size = 40;
  return c;
}

void expect_every_layout_scores_as_one_rank(const GPTConfig& config) {
  GPT whole(config);
  whole.init_weights(7);
  GPT* whole_chunk = &whole;
  parallel::SoloCommunicator one("dp");
  const TextCodec codec = byte_codec();
  const std::vector<ChoiceDoc> documents = docs();
  const ChoiceResult want =
      evaluate_multiple_choice(LayoutModel{{&whole_chunk, 1}, &one, 3}, codec, documents, "mc.jsonl");
  testing::for_each_world_layout(config.n_layer, [&](const testing::WorldLayout& l, parallel::ProcessGrid& grid,
                                                     const std::vector<int>& split) {
    std::vector<std::unique_ptr<GPT>> shards;
    std::vector<GPT*> chunks;
    for (int k = 0; k < l.chunks; ++k) {
      ModelParallel layout = model_parallel_for(grid, split, l.sequence_parallel, k, l.chunks);
      layout.gradients = false;
      shards.push_back(std::make_unique<GPT>(config, layout));
      copy_shard_from_whole(whole, *shards.back());
      chunks.push_back(shards.back().get());
    }
    // Sequence parallelism needs one shape that tp divides: 2 rows x 16 positions.
    const ChoiceResult got =
        evaluate_multiple_choice(LayoutModel{chunks, &grid.dp(), 2, l.sequence_parallel}, codec, documents, "mc.jsonl");
    ASSERT_EQ(got.log_likelihoods.size(), want.log_likelihoods.size());
    for (size_t d = 0; d < documents.size(); ++d) {
      for (size_t k = 0; k < documents[d].choices.size(); ++k) {
        const double w = want.log_likelihoods[d][k];
        EXPECT_NEAR(got.log_likelihoods[d][k], w, 1e-5 * std::max(1.0, std::fabs(w))) << "doc " << d << " choice " << k;
      }
    }
    EXPECT_EQ(got.acc.mean, want.acc.mean);
    EXPECT_EQ(got.acc_norm.mean, want.acc_norm.mean);
  });
}

TEST(EvalRunnerParallel, EveryLayoutScoresAsOneRank) { expect_every_layout_scores_as_one_rank(kConfig); }

TEST(EvalRunnerParallel, EveryLayoutScoresALlamaAsOneRank) { expect_every_layout_scores_as_one_rank(llama_config()); }

TEST(EvalRunnerParallel, ExactMatchSharedOutOverRanksScoresAsOneRank) {
  Communicator& world = testing::mpi_world();
  GPT whole(kConfig);
  whole.init_weights(7);
  parallel::SoloCommunicator one("decoders");
  TextCodec codec = byte_codec();
  codec.eos = -1;  // no early end: every answer is 3 tokens long
  std::vector<AnswerDoc> documents;
  for (int i = 0; i < 7; ++i) documents.push_back({"prompt " + std::to_string(i), "abc", i + 1});
  // The greedy answer of two of them, so that some are right.
  for (int i : {2, 5}) {
    const std::vector<int32_t> prompt = codec.encode(documents[static_cast<size_t>(i)].prompt);
    SamplingSettings greedy;
    documents[static_cast<size_t>(i)].answer = codec.decode(generate_tokens(whole, prompt, 3, 1, greedy)[0]);
  }
  const MeanScore want = evaluate_exact_match(whole, one, codec, documents, "em.jsonl");
  const MeanScore got = evaluate_exact_match(whole, world, codec, documents, "em.jsonl");
  EXPECT_GE(want.mean, 2.0 / 7.0);
  EXPECT_EQ(got.mean, want.mean);
  EXPECT_EQ(got.n, 7);
}

}  // namespace
}  // namespace loom
