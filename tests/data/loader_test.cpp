#include "data/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <set>

#include "data/token_data_util.h"
#include "data/token_dataset.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

constexpr uint32_t kVocab = 5000;
constexpr int kT = 16;

LoaderOptions options_for(int B, int accum, int dp, int rank, int prefetch, bool shuffle = true) {
  LoaderOptions options;
  options.layout = BatchLayout{kT, B, accum, dp, rank};
  options.shuffle = shuffle;
  options.prefetch_steps = prefetch;
  return options;
}

std::vector<StepBatch> draw(TokenLoader& loader, int steps) {
  std::vector<StepBatch> out;
  for (int i = 0; i < steps; ++i) out.push_back(loader.next());
  return out;
}

void expect_same(const std::vector<StepBatch>& got, const std::vector<StepBatch>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t s = 0; s < got.size(); ++s) {
    EXPECT_EQ(got[s].first_sample, expected[s].first_sample) << "step " << s;
    EXPECT_EQ(got[s].tokens, expected[s].tokens) << "step " << s;
    EXPECT_EQ(got[s].targets, expected[s].targets) << "step " << s;
  }
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = testing::random_documents(2000, 5, 100, kVocab, 1);
    testing::write_split(dir_.str(), "train", kVocab, docs_, 64 << 10);
    // A second dataset whose ids are all >= 2500, so a row tells which dataset it came from.
    testing::Documents web = testing::random_documents(500, 5, 100, kVocab - 2500, 2);
    for (auto& d : web) {
      for (int32_t& id : d) id += 2500;
    }
    testing::write_split(dir_.str(), "web", kVocab, web);
    train_ = std::make_unique<TokenDataset>(TokenDataset::open_split(dir_.str(), "train"));
    web_ = std::make_unique<TokenDataset>(TokenDataset::open_split(dir_.str(), "web"));
  }
  std::vector<BlendSource> train_only() const { return {{train_.get(), 1.0}}; }
  std::vector<BlendSource> blend() const { return {{train_.get(), 0.7}, {web_.get(), 0.3}}; }

  TempDir dir_{"loader"};
  testing::Documents docs_;
  std::unique_ptr<TokenDataset> train_, web_;
};

TEST_F(LoaderTest, RowsAreShiftedWindowsOfTheStreamAtTheirGlobalIndex) {
  const std::vector<int32_t> stream = testing::concatenated(docs_);
  const int B = 3, accum = 2, dp = 2, rank = 1;
  TokenLoader loader(train_only(), options_for(B, accum, dp, rank, 0), LoaderState{77, 1000});
  EXPECT_EQ(loader.layout().global_batch(), 12u);
  for (int step = 0; step < 3; ++step) {
    const StepBatch batch = loader.next();
    EXPECT_EQ(batch.first_sample, 1000u + 12u * step);
    for (int m = 0; m < accum; ++m) {
      for (int b = 0; b < B; ++b) {
        const uint64_t index = batch.first_sample + static_cast<uint64_t>(m * dp * B + rank * B + b);
        const SampleRef ref = loader.order().at(index);
        const auto window = stream.begin() + static_cast<int64_t>(ref.window * kT);
        const std::vector<int32_t> tokens(batch.tokens_of(m) + b * kT, batch.tokens_of(m) + (b + 1) * kT);
        const std::vector<int32_t> targets(batch.targets_of(m) + b * kT, batch.targets_of(m) + (b + 1) * kT);
        EXPECT_EQ(tokens, std::vector<int32_t>(window, window + kT)) << "sample " << index;
        EXPECT_EQ(targets, std::vector<int32_t>(window + 1, window + kT + 1)) << "sample " << index;
      }
    }
  }
  EXPECT_EQ(loader.state().next_sample, 1036u);
  EXPECT_EQ(loader.state().seed, 77u);
}

TEST_F(LoaderTest, ResumeFromSavedStateContinuesBitForBit) {
  const LoaderOptions options = options_for(4, 2, 1, 0, 3);
  TokenLoader whole(blend(), options, LoaderState{5, 0});
  const std::vector<StepBatch> expected = draw(whole, 12);
  LoaderState saved;
  {
    TokenLoader first(blend(), options, LoaderState{5, 0});
    draw(first, 5);  // its thread has prepared steps beyond these; they are not part of the state
    saved = first.state();
  }
  EXPECT_EQ(saved.next_sample, 5u * 8);
  TokenLoader resumed(blend(), options, saved);
  expect_same(draw(resumed, 7), std::vector<StepBatch>(expected.begin() + 5, expected.end()));
}

TEST_F(LoaderTest, SameSeedSameBatchesOtherSeedOtherBatches) {
  TokenLoader a(train_only(), options_for(8, 1, 1, 0, 2), LoaderState{1, 0});
  TokenLoader b(train_only(), options_for(8, 1, 1, 0, 2), LoaderState{1, 0});
  TokenLoader c(train_only(), options_for(8, 1, 1, 0, 2), LoaderState{2, 0});
  const std::vector<StepBatch> x = draw(a, 4), y = draw(b, 4), z = draw(c, 4);
  expect_same(x, y);
  for (size_t s = 0; s < x.size(); ++s) EXPECT_NE(x[s].tokens, z[s].tokens) << "step " << s;
}

TEST_F(LoaderTest, DataParallelLayoutsWithOneGlobalBatchDrawTheSameSamples) {
  // (dp, B, accum) with G = 16.
  const std::vector<std::array<int, 3>> layouts = {{1, 16, 1}, {2, 8, 1}, {2, 4, 2}, {4, 2, 2}, {4, 4, 1}, {8, 1, 2}};
  const int steps = 4;
  using Rows = std::map<uint64_t, std::vector<int32_t>>;  // global index -> tokens then targets
  std::vector<Rows> per_layout;
  for (const auto& [dp, B, accum] : layouts) {
    Rows rows;
    for (int rank = 0; rank < dp; ++rank) {
      TokenLoader loader(blend(), options_for(B, accum, dp, rank, 1), LoaderState{3, 32});
      for (int s = 0; s < steps; ++s) {
        const StepBatch batch = loader.next();
        for (int m = 0; m < accum; ++m) {
          for (int b = 0; b < B; ++b) {
            const uint64_t index = batch.first_sample + static_cast<uint64_t>((m * dp + rank) * B + b);
            std::vector<int32_t> row(batch.tokens_of(m) + b * kT, batch.tokens_of(m) + (b + 1) * kT);
            row.insert(row.end(), batch.targets_of(m) + b * kT, batch.targets_of(m) + (b + 1) * kT);
            EXPECT_TRUE(rows.emplace(index, row).second) << "sample " << index << " drawn twice, dp " << dp;
          }
        }
      }
    }
    ASSERT_EQ(rows.size(), 16u * steps) << "dp " << dp;
    EXPECT_EQ(rows.begin()->first, 32u);
    EXPECT_EQ(rows.rbegin()->first, 32u + 16 * steps - 1);
    per_layout.push_back(std::move(rows));
  }
  for (size_t l = 1; l < per_layout.size(); ++l) {
    EXPECT_TRUE(per_layout[l] == per_layout[0]) << "layout dp " << layouts[l][0] << " B " << layouts[l][1];
  }
}

TEST_F(LoaderTest, PrefetchThreadGivesTheSynchronousBatches) {
  TokenLoader sync(blend(), options_for(4, 3, 2, 1, 0), LoaderState{11, 40});
  TokenLoader ahead(blend(), options_for(4, 3, 2, 1, 4), LoaderState{11, 40});
  expect_same(draw(ahead, 30), draw(sync, 30));
  EXPECT_EQ(sync.state().next_sample, ahead.state().next_sample);
}

TEST_F(LoaderTest, BlendedBatchesFollowTheWeights) {
  TokenLoader loader(blend(), options_for(100, 1, 1, 0, 2), LoaderState{4, 0});
  uint64_t from_train = 0, rows = 0;
  for (int s = 0; s < 100; ++s) {
    const StepBatch batch = loader.next();
    for (int b = 0; b < batch.B; ++b, ++rows) {
      bool web = true;
      for (int t = 0; t < kT; ++t) web &= batch.tokens_of(0)[b * kT + t] >= 2500;
      from_train += !web;
    }
  }
  EXPECT_EQ(rows, 10000u);
  EXPECT_EQ(from_train, 7000u);  // one whole blending block
}

TEST_F(LoaderTest, ErrorsInThePrefetchThreadReachTheConsumerInOrder) {
  // A copy of the train split's first shard with token 163 out of the vocabulary. Unshuffled,
  // B = 2: step s holds windows 2s and 2s + 1, tokens [32s, 32s + 33); 163 is in step 5.
  const std::string bad = dir_.file("bad.tok");
  std::string bytes = testing::read_bytes(train_->shard(0).path());
  const uint16_t outside = kVocab + 7;
  std::memcpy(bytes.data() + 64 + 2 * 163, &outside, 2);
  testing::write_bytes(bad, bytes);
  const TokenDataset broken({bad});
  const std::string expected = "token shard " + bad + " holds token id 5007 at byte offset " +
                               std::to_string(64 + 2 * 163) + " outside its vocabulary of 5000";
  for (int prefetch : {0, 2}) {
    TokenLoader loader({{&broken, 1.0}}, options_for(2, 1, 1, 0, prefetch, false), LoaderState{1, 0});
    draw(loader, 5);
    const std::string message = testing::user_error_of([&] { loader.next(); });
    EXPECT_NE(message.find(expected), std::string::npos) << "prefetch " << prefetch << ": " << message;
    EXPECT_EQ(loader.state().next_sample, 10u);
    EXPECT_THROW(loader.next(), UserError);
  }
}

TEST_F(LoaderTest, BadLayoutsAndSourcesAreUserErrors) {
  EXPECT_THROW(TokenLoader(train_only(), options_for(0, 1, 1, 0, 0), LoaderState{}), UserError);
  EXPECT_THROW(TokenLoader(train_only(), options_for(1, 0, 1, 0, 0), LoaderState{}), UserError);
  EXPECT_THROW(TokenLoader(train_only(), options_for(1, 1, 2, 2, 0), LoaderState{}), UserError);
  EXPECT_THROW(TokenLoader(train_only(), options_for(1, 1, 1, 0, -1), LoaderState{}), UserError);
  EXPECT_THROW(TokenLoader({}, options_for(1, 1, 1, 0, 0), LoaderState{}), UserError);
  testing::write_split(dir_.str(), "tiny", kVocab, testing::Documents{{1, 2, 3}});
  const TokenDataset tiny = TokenDataset::open_split(dir_.str(), "tiny");
  std::string message = testing::user_error_of(
      [&] { TokenLoader loader({{&tiny, 1.0}}, options_for(1, 1, 1, 0, 0), LoaderState{}); });
  EXPECT_NE(message.find("holds 3 tokens, fewer than one sample of sequence length 16 plus one"), std::string::npos)
      << message;
  testing::write_split(dir_.str(), "other", kVocab + 1, testing::random_documents(10, 20, 30, kVocab + 1, 3));
  const TokenDataset other = TokenDataset::open_split(dir_.str(), "other");
  message = testing::user_error_of(
      [&] { TokenLoader loader({{train_.get(), 1.0}, {&other, 1.0}}, options_for(1, 1, 1, 0, 0), LoaderState{}); });
  EXPECT_NE(message.find("has vocabulary size 5001"), std::string::npos) << message;
}

// Instruction data: documents with a loss mask (even ids and the end-of-document token count),
// some longer than T + 1 = 17 tokens, in a masked split packed by the loader.
class PackedLoaderTest : public ::testing::Test {
 protected:
  static constexpr int32_t kEos = kVocab - 1;
  static bool counts(int32_t id) { return id % 2 == 0 || id == kEos; }

  void SetUp() override {
    docs_ = testing::random_documents(300, 1, 24, kVocab, 9);
    ShardWriter writer(dir_.str(), "train", kVocab, 2048, /*loss_mask=*/true);
    for (const auto& d : docs_) {
      std::vector<uint8_t> mask;
      for (int32_t id : d) mask.push_back(counts(id) ? 1 : 0);
      writer.add_document(d, mask);
    }
    writer.finish();
    data_ = std::make_unique<TokenDataset>(TokenDataset::open_split(dir_.str(), "train"));
  }
  std::vector<BlendSource> sources() const { return {{data_.get(), 1.0}}; }

  TempDir dir_{"packed_loader"};
  testing::Documents docs_;
  std::unique_ptr<TokenDataset> data_;
};

// The document pieces of a row by its doc_starts (checked to be valid); positions from `pad_from`
// on are the padding, whose targets are all -1.
std::vector<std::vector<int32_t>> pieces_of(const int32_t* tokens, const int32_t* targets, const int32_t* starts,
                                            bool (*counts)(int32_t), int pad_from) {
  std::vector<std::vector<int32_t>> pieces;
  for (int t = 0; t < kT; ++t) {
    EXPECT_TRUE(starts[t] >= 0 && starts[t] <= t) << "position " << t << " starts at " << starts[t];
    if (t > 0) {
      EXPECT_TRUE(starts[t] == starts[t - 1] || starts[t] == t) << "position " << t;
    }
    if (starts[t] == t) pieces.emplace_back();
    pieces.back().push_back(tokens[t]);
    // Within a piece the target is the next token where that token counts, else -1.
    if (t >= pad_from) {
      EXPECT_EQ(targets[t], -1) << "padding position " << t;
    } else if (t + 1 < kT && starts[t + 1] == starts[t]) {
      EXPECT_EQ(targets[t], counts(tokens[t + 1]) ? tokens[t + 1] : -1) << "position " << t;
    }
  }
  return pieces;
}

TEST_F(PackedLoaderTest, AnEpochOfRowsHoldsEveryDocumentOnceWholeOrTruncated) {
  LoaderOptions options = options_for(1, 1, 1, 0, 0);
  TokenLoader loader(sources(), options, LoaderState{7, 0});
  ASSERT_TRUE(loader.document_masking());
  const PackingReport& report = loader.packing_report();
  uint64_t longer = 0, single = 0;
  std::multiset<std::vector<int32_t>> expected;
  for (const auto& d : docs_) {
    longer += d.size() > kT + 1;
    single += d.size() == 1;
    if (d.size() >= 2) expected.emplace(d.begin(), d.begin() + static_cast<ptrdiff_t>(std::min<size_t>(d.size(), kT + 1) - 1));
  }
  EXPECT_EQ(report.documents, docs_.size());
  EXPECT_EQ(report.truncated, longer);
  EXPECT_EQ(report.dropped, single);
  ASSERT_EQ(loader.order().windows(0), report.rows);
  std::multiset<std::vector<int32_t>> got;
  std::vector<int32_t> tokens(kT), targets(kT), starts(kT);
  for (uint64_t i = 0; i < report.rows; ++i) {
    loader.read_sample(i, tokens.data(), targets.data(), starts.data());
    // The padding (a last piece whose targets are all -1 and whose tokens repeat the token before
    // it) is not a document.
    const int last = starts[kT - 1];
    const bool padded = last > 0 && std::all_of(targets.begin() + last, targets.end(), [](int32_t x) { return x == -1; }) &&
                        std::all_of(tokens.begin() + last, tokens.end(), [&](int32_t x) { return x == tokens[last - 1]; });
    std::vector<std::vector<int32_t>> pieces =
        pieces_of(tokens.data(), targets.data(), starts.data(), counts, padded ? last : kT);
    int used = 0;
    for (const auto& p : pieces) used += static_cast<int>(p.size());
    ASSERT_EQ(used, kT);
    if (padded) pieces.pop_back();
    for (auto& p : pieces) got.insert(std::move(p));
  }
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << "the rows' documents are not the split's documents, each once";
}

TEST_F(PackedLoaderTest, LongDocumentsAreDroppedWhenAsked) {
  LoaderOptions options = options_for(1, 1, 1, 0, 0);
  options.long_examples = LongExamples::kDrop;
  TokenLoader loader(sources(), options, LoaderState{7, 0});
  uint64_t longer = 0, single = 0;
  for (const auto& d : docs_) {
    longer += d.size() > kT + 1;
    single += d.size() == 1;
  }
  EXPECT_EQ(loader.packing_report().truncated, 0u);
  EXPECT_EQ(loader.packing_report().dropped, longer + single);
}

TEST_F(PackedLoaderTest, ResumeAndEveryDataParallelLayoutGiveTheSameGlobalBatches) {
  const LoaderOptions options = options_for(2, 2, 1, 0, 2);
  TokenLoader whole(sources(), options, LoaderState{5, 0});
  const std::vector<StepBatch> expected = draw(whole, 40);  // several epochs of packs
  LoaderState saved;
  {
    TokenLoader first(sources(), options, LoaderState{5, 0});
    draw(first, 13);
    saved = first.state();
  }
  TokenLoader resumed(sources(), options, saved);
  const std::vector<StepBatch> rest = draw(resumed, 27);
  expect_same(rest, std::vector<StepBatch>(expected.begin() + 13, expected.end()));
  for (size_t s = 0; s < rest.size(); ++s) EXPECT_EQ(rest[s].doc_starts, expected[s + 13].doc_starts) << "step " << s;
  // dp = 2 with B = 1: rank r's rows are the rows r of each micro-batch of dp = 1, B = 2.
  for (int rank = 0; rank < 2; ++rank) {
    TokenLoader part(sources(), options_for(1, 2, 2, rank, 0), LoaderState{5, 0});
    for (int s = 0; s < 5; ++s) {
      const StepBatch batch = part.next();
      for (int m = 0; m < 2; ++m) {
        const std::vector<int32_t> row(batch.doc_starts_of(m), batch.doc_starts_of(m) + kT);
        const int32_t* want = expected[static_cast<size_t>(s)].doc_starts_of(m) + rank * kT;
        EXPECT_EQ(row, std::vector<int32_t>(want, want + kT)) << "rank " << rank << " step " << s;
        const int32_t* tokens = expected[static_cast<size_t>(s)].tokens_of(m) + rank * kT;
        EXPECT_EQ(std::vector<int32_t>(batch.tokens_of(m), batch.tokens_of(m) + kT),
                  std::vector<int32_t>(tokens, tokens + kT)) << "rank " << rank << " step " << s;
        const int32_t* targets = expected[static_cast<size_t>(s)].targets_of(m) + rank * kT;
        EXPECT_EQ(std::vector<int32_t>(batch.targets_of(m), batch.targets_of(m) + kT),
                  std::vector<int32_t>(targets, targets + kT)) << "rank " << rank << " step " << s;
      }
    }
  }
}

TEST_F(PackedLoaderTest, OtherSeedsPackOtherwiseAndEvaluationPacksInStreamOrder) {
  TokenLoader a(sources(), options_for(4, 1, 1, 0, 0), LoaderState{1, 0});
  TokenLoader b(sources(), options_for(4, 1, 1, 0, 0), LoaderState{2, 0});
  EXPECT_NE(a.next().tokens, b.next().tokens);
  TokenLoader val(sources(), options_for(1, 1, 1, 0, 0, /*shuffle=*/false), LoaderState{1, 0});
  const StepBatch first = val.next();
  // Stream order: the first document (truncated to T + 1 if longer) starts the first row.
  const auto& d = docs_[0].size() >= 2 ? docs_[0] : docs_[1];
  const size_t n = std::min<size_t>(d.size(), kT + 1) - 1;
  EXPECT_EQ(std::vector<int32_t>(first.tokens.begin(), first.tokens.begin() + static_cast<ptrdiff_t>(n)),
            std::vector<int32_t>(d.begin(), d.begin() + static_cast<ptrdiff_t>(n)));
  EXPECT_EQ(first.targets[n - 1], counts(d[n]) ? d[n] : -1);
}

TEST_F(PackedLoaderTest, DocumentMaskingCanBeTurnedOff) {
  LoaderOptions options = options_for(2, 1, 1, 0, 0);
  options.document_masking = false;
  TokenLoader loader(sources(), options, LoaderState{1, 0});
  const StepBatch batch = loader.next();
  EXPECT_TRUE(batch.doc_starts.empty());
  EXPECT_EQ(batch.doc_starts_of(0), nullptr);
}

TEST_F(LoaderTest, WindowsGetDocStartsFromTheEndOfDocumentTokenWhenAsked) {
  LoaderOptions options = options_for(4, 1, 1, 0, 0);
  EXPECT_TRUE(TokenLoader(train_only(), options, LoaderState{3, 0}).next().doc_starts.empty());
  options.document_masking = true;
  std::string message = testing::user_error_of([&] { TokenLoader loader(train_only(), options, LoaderState{3, 0}); });
  EXPECT_NE(message.find("needs the end-of-document token's id"), std::string::npos) << message;
  options.end_of_document_id = kVocab - 1;  // random_documents end each document with it
  TokenLoader loader(train_only(), options, LoaderState{3, 0});
  TokenLoader plain(train_only(), options_for(4, 1, 1, 0, 0), LoaderState{3, 0});
  const StepBatch batch = loader.next(), same = plain.next();
  EXPECT_EQ(batch.tokens, same.tokens);
  EXPECT_EQ(batch.targets, same.targets);
  ASSERT_EQ(batch.doc_starts.size(), batch.tokens.size());
  int restarts = 0;
  for (int b = 0; b < 4; ++b) {
    const int32_t* tokens = batch.tokens_of(0) + b * kT;
    const int32_t* starts = batch.doc_starts_of(0) + b * kT;
    EXPECT_EQ(starts[0], 0);
    for (int t = 1; t < kT; ++t) {
      const int32_t want = tokens[t - 1] == kVocab - 1 ? t : starts[t - 1];
      EXPECT_EQ(starts[t], want) << "row " << b << " position " << t;
      restarts += starts[t] == t;
    }
  }
  EXPECT_GT(restarts, 0) << "no window crossed a document end: the test shows nothing";
}

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

TEST(LoaderLargeFileTest, ReadsOnlyTheWindowsItDrawsOfAnEightGigabyteShard) {
  // 2^32 uint16 tokens (8 GiB): a sparse file whose token bytes are a hole (zeros, token 0).
  TempDir dir("loader_large");
  const std::string path = dir.file("big.tok");
  ShardHeader header;
  header.vocab_size = 50257;
  header.tokens = uint64_t{1} << 32;
  header.documents = 1;
  const std::vector<uint64_t> ends = {header.tokens};
  header.meta_xxh64 = shard_meta_checksum(encode_shard_header(header), ends);
  const auto bytes = encode_shard_header(header);
  const uint64_t index_at = shard_index_offset(header.dtype, header.tokens);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  ASSERT_EQ(::pwrite(fd, ends.data(), 8, static_cast<off_t>(index_at)), 8);
  struct stat info {};
  ASSERT_EQ(::fstat(fd, &info), 0);
  ::close(fd);
  if (static_cast<uint64_t>(info.st_blocks) * 512 > (uint64_t{64} << 20)) GTEST_SKIP() << "no sparse files here";

  const long before = resident_kib();
  const TokenDataset dataset({path});
  LoaderOptions options;
  options.layout = BatchLayout{1024, 8, 1, 1, 0};
  TokenLoader loader({{&dataset, 1.0}}, options, LoaderState{1, 0});
  for (int s = 0; s < 20; ++s) {
    const StepBatch batch = loader.next();
    EXPECT_EQ(batch.tokens[static_cast<size_t>(s)], 0);
  }
  const long grown_kib = resident_kib() - before;
  EXPECT_LT(grown_kib, 64 << 10) << "resident memory grew by " << grown_kib << " KiB reading 160 windows";
}

}  // namespace
}  // namespace loom
