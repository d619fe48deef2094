// Packing with document masking, through the whole model: a micro-batch whose rows pack several
// documents (MicroBatch::doc_starts) gives the loss and every parameter gradient of the same
// documents run one per row, for GPT-2 (learned positions) and a Llama (rotary positions,
// grouped-query attention, q/k/v biases), in fp32 and bf16, with and without recomputation.
//
// The unpacked batch puts each document at the start of a row of its own, padded to T with
// tokens whose targets are -1. Both batches count the same targets, so their mean losses divide
// the same sum by the same count, and the padding contributes neither loss nor gradient: its
// tokens come after the document's (causal attention: no document token sees them) and their
// rows' loss gradient is 0.
//
// Bounds. fp32: the two batches compute every document token from the same terms, summed in other
// groupings (matmuls over other row counts, the attention's tiles starting at other rows), each
// sum off by a few ulps (~1e-7 relative): the loss within 1e-6 relative and each gradient within
// 1e-5 norm-wise (measured: the loss equal, the gradients within 4e-7). bf16 rounds every
// activation to 8 bits (u = 2^-9); a sum off by an ulp of f32 rarely moves a rounding, but where
// it does the value moves by u, and the gradients inherit a few such flips: the loss within u =
// 2e-3 and each gradient within 2e-2 norm-wise (measured: no flip, the loss equal and the
// gradients within 2e-7). Without doc_starts the packed batch's gradients are off by 0.7 to 1.3
// (its documents see each other), far outside either bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/backend/cpu_backend.h"
#include "core/gpt.h"
#include "core/train_step.h"
#include "test_util.h"

namespace loom {
namespace {

constexpr int kB = 2, kT = 16;

GPTConfig gpt2_config() { return GPTConfig{2, 4, 32, 37, kT}; }

GPTConfig llama_config() {
  GPTConfig c{2, 4, 32, 37, kT};
  c.family = Family::kLlama;
  c.n_kv_head = 2;
  c.intermediate_size = 40;
  c.qkv_bias = true;
  return c;
}

// The packed micro-batch (kB rows of kT) and the same documents one per row.
struct Batches {
  std::vector<int32_t> tokens, targets, doc_starts;  // (kB, kT)
  std::vector<int32_t> row_tokens, row_targets;      // (documents, kT)
  int documents = 0;
};

Batches make_batches(int vocab) {
  // Lengths filling each row of 16: four documents, then three (one of a single token).
  const std::vector<std::vector<int>> lengths = {{5, 3, 6, 2}, {1, 9, 6}};
  Batches b;
  b.tokens = testing::random_ints(static_cast<size_t>(kB) * kT, 71, 0, vocab);
  b.targets = testing::random_ints(b.tokens.size(), 72, 0, vocab);
  b.targets[3] = -1;  // an uncounted target inside a document
  b.doc_starts.resize(b.tokens.size());
  for (int row = 0; row < kB; ++row) {
    int start = 0;
    for (int length : lengths[static_cast<size_t>(row)]) {
      for (int t = start; t < start + length; ++t) {
        const size_t i = static_cast<size_t>(row) * kT + t;
        b.doc_starts[i] = start;
        b.row_tokens.push_back(b.tokens[i]);
        b.row_targets.push_back(b.targets[i]);
      }
      for (int t = length; t < kT; ++t) {  // padding
        b.row_tokens.push_back(0);
        b.row_targets.push_back(-1);
      }
      start += length;
      ++b.documents;
    }
  }
  return b;
}

struct LossAndGradients {
  float loss;
  std::vector<std::vector<float>> gradients;  // parameters() order
  std::vector<std::string> names;
};

LossAndGradients run(const GPTConfig& config, Precision precision, Recompute recompute, const int32_t* tokens,
                     const int32_t* targets, int B, const int32_t* doc_starts) {
  CpuBackend backend(precision);
  ModelParallel layout;
  layout.backend = &backend;
  GPT model(config, layout);
  model.set_recompute(recompute);
  model.init_weights(17);
  model.zero_grad();
  LossAndGradients r;
  r.loss = model.forward(tokens, targets, B, kT, doc_starts);
  model.backward();
  for (const Parameter& p : model.parameters()) {
    r.gradients.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
    r.names.push_back(p.name);
  }
  return r;
}

void expect_packed_matches_unpacked(const GPTConfig& config, Precision precision, double loss_tolerance,
                                    double gradient_tolerance) {
  const Batches b = make_batches(config.vocab_size);
  for (Recompute recompute : {Recompute::kNone, Recompute::kSelective, Recompute::kFull}) {
    SCOPED_TRACE("recompute " + std::to_string(static_cast<int>(recompute)));
    const LossAndGradients packed =
        run(config, precision, recompute, b.tokens.data(), b.targets.data(), kB, b.doc_starts.data());
    const LossAndGradients rows =
        run(config, precision, recompute, b.row_tokens.data(), b.row_targets.data(), b.documents, nullptr);
    EXPECT_LE(std::fabs(packed.loss - rows.loss) / std::fabs(rows.loss), loss_tolerance)
        << "packed loss " << packed.loss << ", one document per row " << rows.loss;
    for (size_t i = 0; i < packed.gradients.size(); ++i) {
      EXPECT_LE(testing::relative_l2(packed.gradients[i], rows.gradients[i]), gradient_tolerance)
          << "gradient of " << packed.names[i];
    }
    // Without doc_starts the packed rows are one sequence each: its documents see each other,
    // and the gradients are far from the bound.
    const LossAndGradients unmasked =
        run(config, precision, recompute, b.tokens.data(), b.targets.data(), kB, nullptr);
    double unmasked_worst = 0;
    for (size_t i = 0; i < unmasked.gradients.size(); ++i) {
      unmasked_worst = std::max(unmasked_worst, testing::relative_l2(unmasked.gradients[i], rows.gradients[i]));
    }
    EXPECT_GT(unmasked_worst, 10 * gradient_tolerance) << "the unmasked packed batch should differ";
  }
}

TEST(GptPackingTest, Gpt2PackedMicroBatchMatchesOneDocumentPerRowFp32) {
  expect_packed_matches_unpacked(gpt2_config(), Precision::kF32, 1e-6, 1e-5);
}

TEST(GptPackingTest, LlamaPackedMicroBatchMatchesOneDocumentPerRowFp32) {
  expect_packed_matches_unpacked(llama_config(), Precision::kF32, 1e-6, 1e-5);
}

TEST(GptPackingTest, Gpt2PackedMicroBatchMatchesOneDocumentPerRowBf16) {
  expect_packed_matches_unpacked(gpt2_config(), Precision::kBF16, 2e-3, 2e-2);
}

TEST(GptPackingTest, LlamaPackedMicroBatchMatchesOneDocumentPerRowBf16) {
  expect_packed_matches_unpacked(llama_config(), Precision::kBF16, 2e-3, 2e-2);
}

// doc_starts that do not describe documents (a start after the token, or a jump to another
// start mid-document) are a user error naming the token.
TEST(GptPackingTest, InvalidDocStartsAreUserErrors) {
  GPT model(gpt2_config());
  model.init_weights(1);
  const std::vector<int32_t> tokens(kT, 1), targets(kT, 2);
  std::vector<int32_t> starts(kT, 0);
  starts[4] = 5;  // after the token
  EXPECT_THROW(model.forward(tokens.data(), targets.data(), 1, kT, starts.data()), UserError);
  for (int t = 4; t < kT; ++t) starts[static_cast<size_t>(t)] = 4;  // a document from position 4
  starts[6] = 5;  // neither the previous token's start (4) nor its own position
  try {
    model.forward(tokens.data(), targets.data(), 1, kT, starts.data());
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("doc_starts 5 at (b, t) = (0, 6)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom
