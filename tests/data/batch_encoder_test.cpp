// BatchEncoder: batches come back in submission order with each piece's ids (those of
// Tokenizer::encode) and eos after each document's last piece, on any number of threads; an
// encoding error comes back with its batch; dropping batches in flight neither hangs nor leaks.
#include "data/batch_encoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

using testing::TempDir;

std::vector<std::string> random_documents(int count, uint32_t seed) {
  const std::vector<std::string> words = {"the", " cat", "'s", " 12", "\n\n", "  ", "caf\xC3\xA9", " is", "x"};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> word(0, words.size() - 1);
  std::uniform_int_distribution<int> length(1, 40);
  std::vector<std::string> docs(static_cast<size_t>(count));
  for (std::string& doc : docs) {
    for (int w = length(gen); w > 0; --w) doc += words[word(gen)];
  }
  return docs;
}

class BatchEncoderTest : public ::testing::Test {
 protected:
  void SetUp() override { tokenizer_ = load_tokenizer(testing::write_tiny_gpt2(dir_.path()).string()); }
  TempDir dir_{"batch_encoder"};
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(BatchEncoderTest, BatchesComeBackInOrderWhateverTheThreads) {
  const std::vector<std::string> docs = random_documents(500, 3);
  for (const int threads : {1, 2, 5}) {
    BatchEncoder encoder(*tokenizer_, threads, 3 * threads);
    size_t next_doc = 0, checked = 0;
    const auto check = [&](const DocumentBatch& batch) {
      for (size_t d = 0; d < batch.size(); ++d, ++checked) {
        std::vector<int32_t> expected = tokenizer_->encode(docs[checked]);
        expected.push_back(tokenizer_->eos_id());
        const auto got = batch.piece_tokens(d);
        ASSERT_EQ(std::vector<int32_t>(got.begin(), got.end()), expected) << "document " << checked << ", " << threads
                                                                          << " threads";
        EXPECT_EQ(batch.piece(d), docs[checked]);
      }
    };
    // Batches of 1 to 9 documents.
    for (size_t size = 1; next_doc < docs.size(); size = size % 9 + 1) {
      DocumentBatch batch;
      for (size_t k = 0; k < size && next_doc < docs.size(); ++k) batch.add(docs[next_doc++]);
      encoder.submit(std::move(batch));
      while (encoder.full()) check(encoder.next());
    }
    while (encoder.in_flight() > 0) check(encoder.next());
    EXPECT_EQ(checked, docs.size()) << threads << " threads";
  }
}

TEST_F(BatchEncoderTest, OnlyADocumentsLastPieceGetsEos) {
  BatchEncoder encoder(*tokenizer_, 2, 4);
  DocumentBatch first, second;
  first.add("the cat's\n", false);
  second.add("12 is", false);
  second.add(" the");
  second.add("x");
  encoder.submit(std::move(first));
  encoder.submit(std::move(second));
  const int32_t eos = tokenizer_->eos_id();
  const DocumentBatch a = encoder.next(), b = encoder.next();
  const auto ids = [](std::span<const int32_t> s) { return std::vector<int32_t>(s.begin(), s.end()); };
  EXPECT_EQ(ids(a.piece_tokens(0)), tokenizer_->encode("the cat's\n"));
  EXPECT_EQ(ids(b.piece_tokens(0)), tokenizer_->encode("12 is"));
  EXPECT_EQ(ids(b.piece_tokens(1)), (std::vector<int32_t>{258, eos}));
  EXPECT_EQ(ids(b.piece_tokens(2)), (std::vector<int32_t>{'x', eos}));
}

TEST_F(BatchEncoderTest, AnErrorComesBackWithItsBatch) {
  BatchEncoder encoder(*tokenizer_, 3, 4);
  for (const std::string& text : {std::string("fine"), std::string("bad \xFF"), std::string("fine again")}) {
    DocumentBatch batch;
    batch.add(text);
    encoder.submit(std::move(batch));
  }
  EXPECT_EQ(encoder.next().size(), 1u);
  try {
    encoder.next();
    FAIL() << "no error for the second batch";
  } catch (const InvalidUtf8& e) {
    EXPECT_EQ(e.offset(), 4u);
  }
  EXPECT_EQ(encoder.next().piece(0), "fine again");
}

TEST_F(BatchEncoderTest, DroppingBatchesInFlightJoinsTheThreads) {
  const std::vector<std::string> docs = random_documents(200, 4);
  BatchEncoder encoder(*tokenizer_, 4, 8);
  for (int b = 0; b < 8; ++b) {
    DocumentBatch batch;
    for (const std::string& doc : docs) batch.add(doc);
    encoder.submit(std::move(batch));
  }
  EXPECT_TRUE(encoder.full());
}

}  // namespace
}  // namespace loom
