// Document masking (packed sequences) in the CPU kernels: documents of random lengths packed into
// the rows of a batch, with doc_starts, give every token what it gets when each document runs
// alone as a sequence of its own (B = 1, T = its length): the attention's output, log-sum-exp and
// qkv gradient, RoPE's rotation and its transpose, and the position embedding and its gradient.
//
// Tolerances. RoPE and the position embedding compute each value from the same inputs with the
// same arithmetic packed or alone (a position's cos and sin, a wpe row), so they are compared
// bitwise. The attention sums the same terms in other groupings: a document's queries fall into
// other query tiles when packed (so dK and dV add the tiles' partial sums in another grouping) and
// the softmax's vectorised partial sums start at another key. Each sum has at most T = 75 terms
// of magnitude <= 1 in f32, so the two differ by at most ~75 x 2^-24 ~ 4.5e-6 of the terms'
// magnitude, far less in practice: rtol 2e-5, atol 5e-6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rope.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::random_floats;
using loom::testing::random_ints;

// One document: row b of the batch, positions [start, start + length).
struct Document {
  int b, start, length;
};

// Documents of random lengths (1 .. max_length) filling each of B rows of T tokens; their starts
// per token as the kernels take them.
struct Packing {
  std::vector<Document> documents;
  std::vector<int32_t> doc_starts;  // (B, T)
};

Packing pack(int B, int T, int max_length, uint32_t seed) {
  Packing p;
  p.doc_starts.resize(static_cast<size_t>(B) * T);
  const std::vector<int32_t> lengths = random_ints(static_cast<size_t>(B) * T, seed, 1, max_length + 1);
  size_t next = 0;
  for (int b = 0; b < B; ++b) {
    for (int start = 0; start < T;) {
      const int length = std::min(static_cast<int>(lengths[next++]), T - start);
      p.documents.push_back({b, start, length});
      for (int t = start; t < start + length; ++t) p.doc_starts[static_cast<size_t>(b) * T + t] = start;
      start += length;
    }
  }
  return p;
}

// Rows [d.start, d.start + d.length) of sequence d.b of x (B, T, width): the document alone.
std::vector<float> rows_of(const std::vector<float>& x, int T, int width, const Document& d) {
  const auto first = x.begin() + (static_cast<int64_t>(d.b) * T + d.start) * width;
  return std::vector<float>(first, first + static_cast<int64_t>(d.length) * width);
}

std::string where(const Document& d) {
  return "document at row " + std::to_string(d.b) + ", positions " + std::to_string(d.start) + " .. " +
         std::to_string(d.start + d.length - 1);
}

struct Heads {
  int C, NH, NKV;
  int HS() const { return C / NH; }
  int W() const { return C + 2 * NKV * HS(); }
};

TEST(PackingTest, AttentionOfPackedDocumentsIsEachDocumentsAlone) {
  // T = 75 spans three query tiles of 32, so documents straddle tiles and whole key tiles of
  // earlier documents are skipped; multi-head, grouped and multi-query.
  const int B = 2, T = 75;
  for (const Heads& h : {Heads{24, 3, 3}, Heads{32, 4, 2}, Heads{32, 4, 1}}) {
    SCOPED_TRACE("NH " + std::to_string(h.NH) + " NKV " + std::to_string(h.NKV));
    const int W = h.W(), C = h.C;
    const Packing p = pack(B, T, 40, 5);
    const std::vector<float> qkv = random_floats(static_cast<size_t>(B) * T * W, 31, -2.0f, 2.0f);
    const std::vector<float> dout = random_floats(static_cast<size_t>(B) * T * C, 32);
    std::vector<float> out(static_cast<size_t>(B) * T * C), lse(static_cast<size_t>(B) * h.NH * T);
    std::vector<float> dqkv(qkv.size(), 0.0f);
    attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, h.NH, h.NKV, p.doc_starts.data());
    attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, h.NH, h.NKV,
                       p.doc_starts.data());
    for (const Document& d : p.documents) {
      SCOPED_TRACE(where(d));
      const int L = d.length;
      const std::vector<float> alone_qkv = rows_of(qkv, T, W, d), alone_dout = rows_of(dout, T, C, d);
      std::vector<float> alone_out(static_cast<size_t>(L) * C), alone_lse(static_cast<size_t>(h.NH) * L);
      std::vector<float> alone_dqkv(alone_qkv.size(), 0.0f);
      attention_forward(alone_out.data(), alone_lse.data(), alone_qkv.data(), 1, L, C, h.NH, h.NKV);
      attention_backward(alone_dqkv.data(), alone_dout.data(), alone_qkv.data(), alone_out.data(), alone_lse.data(), 1,
                         L, C, h.NH, h.NKV);
      EXPECT_TRUE(all_close(rows_of(out, T, C, d), alone_out, 2e-5, 5e-6));
      EXPECT_TRUE(all_close(rows_of(dqkv, T, W, d), alone_dqkv, 2e-5, 5e-6));
      std::vector<float> packed_lse;  // (NH, L) of the document's positions
      for (int head = 0; head < h.NH; ++head) {
        const auto first = lse.begin() + (static_cast<int64_t>(d.b) * h.NH + head) * T + d.start;
        packed_lse.insert(packed_lse.end(), first, first + L);
      }
      EXPECT_TRUE(all_close(packed_lse, alone_lse, 2e-5, 5e-6));
    }
  }
}

// With one document per row, doc_starts all 0 is the unmasked attention, bit for bit.
TEST(PackingTest, AttentionWithOneDocumentPerRowIsTheUnmaskedAttention) {
  const int B = 2, T = 45, C = 32, NH = 4, NKV = 2, W = C + 2 * NKV * (C / NH);
  const std::vector<float> qkv = random_floats(static_cast<size_t>(B) * T * W, 41);
  const std::vector<float> dout = random_floats(static_cast<size_t>(B) * T * C, 42);
  const std::vector<int32_t> zeros(static_cast<size_t>(B) * T, 0);
  std::vector<float> out[2], lse[2], dqkv[2];
  for (int k = 0; k < 2; ++k) {
    const int32_t* doc_starts = k == 0 ? nullptr : zeros.data();
    out[k].resize(static_cast<size_t>(B) * T * C);
    lse[k].resize(static_cast<size_t>(B) * NH * T);
    dqkv[k].assign(qkv.size(), 0.0f);
    attention_forward(out[k].data(), lse[k].data(), qkv.data(), B, T, C, NH, NKV, doc_starts);
    attention_backward(dqkv[k].data(), dout.data(), qkv.data(), out[k].data(), lse[k].data(), B, T, C, NH, NKV,
                       doc_starts);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(lse[0], lse[1]);
  EXPECT_EQ(dqkv[0], dqkv[1]);
}

TEST(PackingTest, RopeOfPackedDocumentsIsEachDocumentsAloneBitwise) {
  const int B = 3, T = 50, NH = 4, NKV = 2, HS = 16, W = (NH + 2 * NKV) * HS;
  const std::vector<float> inv_freq = rope_inverse_frequencies(HS, 10000.0f);
  const Packing p = pack(B, T, 20, 6);
  const std::vector<float> x = random_floats(static_cast<size_t>(B) * T * W, 51);
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    std::vector<float> packed = x;
    if (backward) {
      rope_backward(packed.data(), inv_freq.data(), B, T, NH, NKV, HS, 0, p.doc_starts.data());
    } else {
      rope_forward(packed.data(), inv_freq.data(), B, T, NH, NKV, HS, 0, p.doc_starts.data());
    }
    for (const Document& d : p.documents) {
      SCOPED_TRACE(where(d));
      std::vector<float> alone = rows_of(x, T, W, d);
      if (backward) {
        rope_backward(alone.data(), inv_freq.data(), 1, d.length, NH, NKV, HS, 0);
      } else {
        rope_forward(alone.data(), inv_freq.data(), 1, d.length, NH, NKV, HS, 0);
      }
      EXPECT_EQ(rows_of(packed, T, W, d), alone);
    }
  }
}

// The position embedding of packed documents, over all rows and over a sequence-parallel rank's
// slice of them (rows from first_row, doc_starts sliced alike): each row gets wpe of its place in
// its document, and dwpe sums the same rows in the same order as the documents run one by one.
TEST(PackingTest, PositionEmbeddingOfPackedDocumentsIsEachDocumentsAloneBitwise) {
  const int B = 3, T = 40, C = 24, N = B * T;
  const Packing p = pack(B, T, 15, 7);
  const std::vector<float> wpe = random_floats(static_cast<size_t>(T) * C, 61);
  const std::vector<float> dout = random_floats(static_cast<size_t>(N) * C, 62);
  std::vector<float> out(static_cast<size_t>(N) * C, 0.0f), dwpe(wpe.size(), 0.0f);
  position_embedding_forward(out.data(), wpe.data(), N, T, C, 0, p.doc_starts.data());
  position_embedding_backward(dwpe.data(), dout.data(), N, T, C, 0, p.doc_starts.data());
  std::vector<float> alone_dwpe(wpe.size(), 0.0f);
  for (const Document& d : p.documents) {
    SCOPED_TRACE(where(d));
    std::vector<float> alone(static_cast<size_t>(d.length) * C, 0.0f);
    position_embedding_forward(alone.data(), wpe.data(), d.length, d.length, C, 0);
    EXPECT_EQ(rows_of(out, T, C, d), alone);
    const std::vector<float> alone_dout = rows_of(dout, T, C, d);
    position_embedding_backward(alone_dwpe.data(), alone_dout.data(), d.length, d.length, C, 0);
  }
  EXPECT_EQ(dwpe, alone_dwpe);

  // A rank's rows [first_row, first_row + Nl), starting inside a document of the second sequence.
  const int first_row = 53, Nl = 60;
  std::vector<float> slice(static_cast<size_t>(Nl) * C, 0.0f);
  position_embedding_forward(slice.data(), wpe.data(), Nl, T, C, first_row, p.doc_starts.data() + first_row);
  EXPECT_EQ(slice, std::vector<float>(out.begin() + static_cast<int64_t>(first_row) * C,
                                      out.begin() + static_cast<int64_t>(first_row + Nl) * C));
}

}  // namespace
}  // namespace loom::kernels::cpu
