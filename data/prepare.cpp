#include "data/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <thread>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/rng.h"
#include "data/batch_encoder.h"
#include "data/chat_template.h"
#include "data/instruction_data.h"
#include "data/megatron_dataset.h"
#include "data/shard_writer.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"

namespace loom {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kTrain = "train";
constexpr const char* kVal = "val";
constexpr const char* kSentencePieceFile = "tokenizer.model";
// The other names a tokenizer's files take in a dataset directory (TokenizerFiles::names).
constexpr const char* kTokenizerFiles[] = {"encoder.json", "vocab.bpe", "tokenizer.json", "tokenizer_config.json"};
// Batches in flight per thread: enough that a thread finds the next one ready while the
// writer catches up; with 1 MiB batches, a few MB per thread.
constexpr int kBatchesPerThread = 4;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

bool is_shard_name(const std::string& name) {
  for (const std::string split : {kTrain, kVal}) {
    const std::string prefix = split + "-", suffix = ".tok";
    if (name.size() > prefix.size() + suffix.size() && name.starts_with(prefix) && name.ends_with(suffix) &&
        std::all_of(name.begin() + static_cast<ptrdiff_t>(prefix.size()),
                    name.end() - static_cast<ptrdiff_t>(suffix.size()), [](char c) { return c >= '0' && c <= '9'; })) {
      return true;
    }
  }
  return false;
}

// A file of a dataset directory that `loom prepare` writes.
bool is_dataset_file(const std::string& name) {
  return name == split_descriptor_path("", kTrain) || name == split_descriptor_path("", kVal) || is_shard_name(name) ||
         name == kSentencePieceFile ||
         std::find(std::begin(kTokenizerFiles), std::end(kTokenizerFiles), name) != std::end(kTokenizerFiles);
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

// The output directory of one run: refuses a non-directory or an existing dataset, makes the
// directory, and unless commit() is reached removes every dataset file the run created in it
// (and temporaries of this process), and the directory itself if the run made it.
class OutputDirectory {
 public:
  // `keep`: files in the directory that the run reads (a tokenizer given from inside it): they
  // are neither counted as a dataset nor deleted.
  OutputDirectory(std::string dir, bool force, const std::vector<std::string>& keep) : dir_(std::move(dir)) {
    std::error_code ec;
    const fs::file_status status = fs::status(dir_, ec);
    if (fs::exists(status) && !fs::is_directory(status)) {
      fail_user("output directory", dir_, "exists and is not a directory; choose another --out");
    }
    if (fs::exists(status)) {
      for (const std::string& name : names()) {
        if (!is_dataset_file(name)) continue;
        const std::string path = (fs::path(dir_) / name).string();
        if (std::any_of(keep.begin(), keep.end(), [&](const std::string& k) { return same_file(k, path); })) continue;
        existing_.push_back(path);
      }
      // Named in the message: a descriptor, when there is one.
      std::sort(existing_.begin(), existing_.end(), [](const std::string& a, const std::string& b) {
        const bool a_descriptor = a.ends_with(".split.pbtxt"), b_descriptor = b.ends_with(".split.pbtxt");
        return a_descriptor != b_descriptor ? a_descriptor : a < b;
      });
    }
    if (!existing_.empty() && !force) {
      fail_user("output directory", dir_, "already holds a dataset (" + fs::path(existing_.front()).filename().string() +
                                                 "); choose another --out, or pass --force to replace it");
    }
  }

  ~OutputDirectory() {
    if (committed_ || !made_) return;
    std::error_code ec;
    const std::string tmp_suffix = ".tmp." + std::to_string(::getpid());
    for (const std::string& name : names()) {
      if ((is_dataset_file(name) && before_.count(name) == 0) || name.ends_with(tmp_suffix)) {
        fs::remove(fs::path(dir_) / name, ec);
      }
    }
    if (created_) fs::remove(dir_, ec);  // only if empty: nothing of anyone else's goes
  }
  OutputDirectory(const OutputDirectory&) = delete;
  OutputDirectory& operator=(const OutputDirectory&) = delete;

  // Deletes the existing dataset (descriptors first, so that it is never seen half there) and
  // makes the directory.
  void make() {
    std::error_code ec;
    for (const std::string split : {kVal, kTrain}) fs::remove(split_descriptor_path(dir_, split), ec);
    for (const std::string& path : existing_) {
      if (!fs::remove(path, ec) && ec) fail_user("cannot remove", path, "of the dataset being replaced:", ec.message());
    }
    created_ = !fs::exists(dir_, ec);
    fs::create_directories(dir_, ec);
    if (ec) fail_user("cannot create output directory", dir_ + ":", ec.message());
    made_ = true;
    for (const std::string& name : names()) before_.insert(name);
  }

  void commit() { committed_ = true; }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }

 private:
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
      out.push_back(it->path().filename().string());
    }
    return out;
  }

  std::string dir_;
  std::vector<std::string> existing_;  // the dataset already there
  std::set<std::string> before_;       // names present once make() cleared the old dataset
  bool created_ = false;
  bool made_ = false;
  bool committed_ = false;
};

void check_options(const PrepareOptions& o) {
  if (o.out_dir.empty()) fail_user("no output directory given");
  if (o.tokenizer.empty() == (o.vocab_size == 0)) {
    fail_user("give either a tokenizer to use or a vocabulary size to train one with, not",
              o.tokenizer.empty() ? "neither" : "both");
  }
  if (o.tokenizer.empty() && o.vocab_size < kMinSentencePieceVocab) {
    fail_user("vocab size", o.vocab_size, "is too small: <unk>, <s>, </s> and the 256 byte pieces take",
              kMinSentencePieceVocab - 1, "ids; use at least", kMinSentencePieceVocab, "(thousands, in practice)");
  }
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) {
    fail_user("validation fraction", o.val_fraction, "must be at least 0 and below 1 (e.g. 0.01)");
  }
  if (o.threads < 0) fail_user("threads is", o.threads, "but must be >= 0 (0: every core)");
  if (o.max_sentences < 0) fail_user("max sentences is", o.max_sentences, "but must be >= 0 (0: all)");
  if (o.batch_bytes == 0) fail_user("batch size must be positive");
  if (o.max_shard_bytes < ShardWriter::kMinShardBytes) {
    fail_user("maximum shard size", o.max_shard_bytes, "bytes is below the", ShardWriter::kMinShardBytes,
              "byte minimum");
  }
}

[[noreturn]] void fail_no_documents(const PrepareOptions& o, size_t files) {
  fail_user("found no documents in the inputs", joined(o.inputs), "(" + std::to_string(files),
            files == 1 ? "file;" : "files;", "empty and whitespace-only documents are skipped)");
}

// The documents' text, one per line group, for training a tokenizer on JSONL. Returns how many.
uint64_t write_training_text(const std::vector<std::string>& files, const CorpusOptions& corpus,
                             const std::string& path) {
  FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) fail_user("cannot write", path);
  DocumentReader reader(files, corpus);
  uint64_t documents = 0;
  try {
    for (std::string text; reader.next(text); ++documents) {
      if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fputc('\n', out) == EOF) {
        fail_user("writing", path, "failed (is the disk full?)");
      }
    }
  } catch (...) {
    std::fclose(out);
    throw;
  }
  if (std::fclose(out) != 0) fail_user("writing", path, "failed (is the disk full?)");
  return documents;
}

// Gathers each document's ids from its pieces and sends the document to its split; holds the
// latest document back until the next one is complete, since the last document's split depends
// on where the others went.
class SplitRouter {
 public:
  SplitRouter(ShardWriter& train, ShardWriter* val, uint64_t seed, double val_fraction)
      : train_(train), val_(val), seed_(seed), val_fraction_(val_fraction) {}

  // The ids of the next piece; `last_of_document`: they end with eos. `mask`: their loss mask,
  // when the writers take one.
  void add(std::span<const int32_t> tokens, bool last_of_document, std::span<const uint8_t> mask = {}) {
    current_.insert(current_.end(), tokens.begin(), tokens.end());
    current_mask_.insert(current_mask_.end(), mask.begin(), mask.end());
    if (!last_of_document) return;
    if (have_pending_) route(pending_in_val_);
    std::swap(pending_, current_);
    std::swap(pending_mask_, current_mask_);
    current_.clear();
    current_mask_.clear();
    pending_in_val_ = val_ != nullptr && is_validation_document(seed_, index_++, val_fraction_);
    have_pending_ = true;
  }

  void finish() {
    LOOM_CHECK(current_.empty(), "the last document's last piece never came");
    if (!have_pending_) return;
    if (train_.documents() == 0) {
      route(false);
    } else if (val_ != nullptr && val_->documents() == 0) {
      route(true);
    } else {
      route(pending_in_val_);
    }
    have_pending_ = false;
  }

 private:
  void route(bool in_val) { (in_val ? *val_ : train_).add_document(pending_, pending_mask_); }

  ShardWriter& train_;
  ShardWriter* val_;
  uint64_t seed_;
  double val_fraction_;
  uint64_t index_ = 0;
  std::vector<int32_t> current_;  // the document being gathered
  std::vector<int32_t> pending_;
  std::vector<uint8_t> current_mask_, pending_mask_;
  bool pending_in_val_ = false;
  bool have_pending_ = false;
};

// A tokenizer given with --tokenizer: loaded, and its files read, before the output directory
// is touched; copied into it once it is made.
struct GivenTokenizer {
  std::unique_ptr<Tokenizer> tokenizer;
  TokenizerFiles files;
  std::vector<std::string> bytes;

  explicit GivenTokenizer(const std::string& path) {
    if (path.empty()) return;
    files = tokenizer_files(path);
    tokenizer = load_tokenizer(path);
    for (const std::string& file : files.paths) bytes.push_back(read_file(file, "tokenizer file"));
  }

  void copy_into(const OutputDirectory& out) const {
    for (size_t i = 0; i < files.paths.size(); ++i) {
      const std::string target = out.file(files.names[i]);
      if (!same_file(files.paths[i], target)) write_file_durably(target, bytes[i]);
    }
  }
};

// Completes the splits (val first: the train descriptor, which readers require, is the last
// file written) and the directory.
void finish_splits(ShardWriter& train, std::optional<ShardWriter>& val, OutputDirectory& out, PrepareSummary& summary) {
  if (val && val->documents() > 0) summary.val = {val->documents(), val->tokens(), val->finish()};
  summary.train = {train.documents(), train.tokens(), train.finish()};
  out.commit();
}

// The Megatron datasets the inputs name (data/megatron_dataset.h), or none when no input names
// one. UserError when some do and others do not.
std::vector<std::string> megatron_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> prefixes;
  std::string other;
  for (const std::string& input : inputs) {
    const std::string prefix = MegatronDataset::prefix_of(input);
    if (!prefix.empty()) {
      prefixes.push_back(prefix);
    } else if (other.empty()) {
      other = input;
    }
  }
  if (!prefixes.empty() && !other.empty()) {
    fail_user("input", prefixes.front(), "is a Megatron dataset but", other,
              "is not; convert Megatron datasets in a run of their own");
  }
  return prefixes;
}

// Megatron datasets -> the dataset directory: each non-empty document, its ids as they are, goes
// to train or val as a text document would (SplitRouter). The vocabulary is the given
// tokenizer's (copied into the directory, for samples), else vocab_size, else the largest id + 1.
PrepareSummary prepare_from_megatron(const PrepareOptions& options, const std::vector<std::string>& prefixes,
                                     const std::function<void(const PrepareProgress&)>& progress) {
  if (options.out_dir.empty()) fail_user("no output directory given");
  if (!options.tokenizer.empty() && options.vocab_size != 0) {
    fail_user("give a tokenizer or a vocabulary size for the ids of a Megatron dataset, not both");
  }
  if (options.vocab_size < 0) fail_user("vocab size is", options.vocab_size, "but must be positive");
  if (!(options.val_fraction >= 0 && options.val_fraction < 1)) {
    fail_user("validation fraction", options.val_fraction, "must be at least 0 and below 1 (e.g. 0.01)");
  }
  PrepareSummary summary;
  summary.files = prefixes.size();
  summary.megatron = true;
  const GivenTokenizer given(options.tokenizer);
  uint32_t vocab = given.tokenizer ? static_cast<uint32_t>(given.tokenizer->vocab_size())
                                   : static_cast<uint32_t>(options.vocab_size);
  std::vector<std::unique_ptr<MegatronDataset>> datasets;
  uint64_t total_bytes = 0;
  for (const std::string& prefix : prefixes) {
    datasets.push_back(std::make_unique<MegatronDataset>(prefix, vocab));
    total_bytes += datasets.back()->tokens() * datasets.back()->token_bytes();
  }
  if (vocab == 0) {
    for (const auto& d : datasets) vocab = std::max(vocab, d->vocab_size());
  }
  summary.tokenizer = given.tokenizer ? given.tokenizer->description()
                                      : str_cat("none (the datasets' token ids; vocabulary", vocab,
                                                options.vocab_size != 0 ? "as given)" : "= the largest id + 1)");
  OutputDirectory out(options.out_dir, options.force, given.files.paths);
  out.make();
  given.copy_into(out);

  const auto start = Clock::now();
  ShardWriter train(options.out_dir, kTrain, vocab, options.max_shard_bytes);
  std::optional<ShardWriter> val;
  if (options.val_fraction > 0) val.emplace(options.out_dir, kVal, vocab, options.max_shard_bytes);
  SplitRouter router(train, val ? &*val : nullptr, options.seed, options.val_fraction);
  std::vector<int32_t> ids;
  uint64_t bytes_read = 0;
  for (const auto& d : datasets) {
    for (uint64_t k = 0; k < d->documents(); ++k) {
      const uint64_t begin = d->document_begin(k), end = d->document_end(k);
      if (begin == end) {
        ++summary.skipped_documents;
        continue;
      }
      ids.resize(end - begin);
      d->read(begin, ids.size(), ids.data());
      router.add(ids, true);
      ++summary.documents;
      summary.tokens += ids.size();
      bytes_read += ids.size() * d->token_bytes();
      if (progress && (k % 4096 == 0 || k + 1 == d->documents())) {
        progress({bytes_read, total_bytes, summary.documents, summary.tokens, seconds_since(start)});
      }
    }
  }
  router.finish();
  summary.text_bytes = total_bytes;
  if (summary.documents == 0) fail_user("the Megatron datasets", joined(prefixes), "hold no tokens");
  finish_splits(train, val, out, summary);
  summary.seconds = seconds_since(start);
  return summary;
}

// The template that renders instruction data: Loom's plain one, or the chat template of the
// given tokenizer's tokenizer_config.json.
ChatTemplate instruction_template(const InstructionOptions& instructions, const GivenTokenizer& given,
                                  const std::string& tokenizer_path) {
  if (instructions.plain_template) return ChatTemplate{ChatTemplateFamily::kPlain, ""};
  const auto at = std::find(given.files.names.begin(), given.files.names.end(), "tokenizer_config.json");
  if (at == given.files.names.end()) {
    fail_user("the tokenizer", tokenizer_path, "has no chat template (no tokenizer_config.json with a chat_template);",
              "pass --template plain to render the examples with Loom's plain instruction template");
  }
  const std::string& config = given.files.paths[static_cast<size_t>(at - given.files.names.begin())];
  try {
    return load_chat_template(config);
  } catch (const UserError& e) {
    fail_user(std::string(e.what()) + "; pass --template plain to render the examples with Loom's plain instruction",
              "template");
  }
}

std::string template_name(const ChatTemplate& t) {
  switch (t.family) {
    case ChatTemplateFamily::kChatML: return "the tokenizer's (ChatML)";
    case ChatTemplateFamily::kLlama3: return "the tokenizer's (Llama 3)";
    case ChatTemplateFamily::kPlain: return "plain (### Instruction / ### Response)";
  }
  return "?";
}

// Instruction data -> the dataset directory: each example rendered, tokenized with its loss mask
// and sent to train or val as a text document would be.
PrepareSummary prepare_instructions(const PrepareOptions& options,
                                    const std::function<void(const PrepareProgress&)>& progress) {
  const InstructionOptions& instructions = *options.instructions;
  if (options.out_dir.empty()) fail_user("no output directory given");
  if (options.tokenizer.empty()) {
    fail_user("instruction data needs the model's tokenizer (--tokenizer); Loom does not train one for it");
  }
  if (!(options.val_fraction >= 0 && options.val_fraction < 1)) {
    fail_user("validation fraction", options.val_fraction, "must be at least 0 and below 1 (e.g. 0.01)");
  }
  if (options.max_shard_bytes < ShardWriter::kMinShardBytes) {
    fail_user("maximum shard size", options.max_shard_bytes, "bytes is below the", ShardWriter::kMinShardBytes,
              "byte minimum");
  }
  PrepareSummary summary;
  summary.instructions = true;
  const std::vector<std::string> files = list_corpus_files(options.inputs, options.out_dir);
  summary.files = files.size();
  if (files.empty()) fail_no_documents(options, 0);
  const GivenTokenizer given(options.tokenizer);
  const ChatTemplate chat_template = instruction_template(instructions, given, options.tokenizer);
  summary.chat_template = template_name(chat_template);
  summary.tokenizer = given.tokenizer->description();
  OutputDirectory out(options.out_dir, options.force, given.files.paths);
  out.make();
  given.copy_into(out);

  const auto start = Clock::now();
  const auto vocab = static_cast<uint32_t>(given.tokenizer->vocab_size());
  ShardWriter train(options.out_dir, kTrain, vocab, options.max_shard_bytes, /*loss_mask=*/true);
  std::optional<ShardWriter> val;
  if (options.val_fraction > 0) val.emplace(options.out_dir, kVal, vocab, options.max_shard_bytes, true);
  SplitRouter router(train, val ? &*val : nullptr, options.seed, options.val_fraction);
  InstructionReader reader(files, instructions.format, instructions.skip_bad_examples);
  std::vector<ChatMessage> messages;
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  while (reader.next(messages)) {
    for (const ChatMessage& m : messages) summary.text_bytes += m.content.size();
    ids.clear();
    mask.clear();
    encode_example(*given.tokenizer, chat_template, messages, instructions.train_on_all, ids, mask);
    router.add(ids, true, mask);
    ++summary.documents;
    summary.tokens += ids.size();
    summary.counted_tokens += static_cast<uint64_t>(std::count(mask.begin(), mask.end(), uint8_t{1}));
    if (progress && summary.documents % 1024 == 0) {
      progress({reader.bytes_read(), reader.total_bytes(), summary.documents, summary.tokens, seconds_since(start)});
    }
  }
  router.finish();
  summary.bad_examples = reader.skipped();
  summary.first_bad_example = reader.first_skipped();
  if (summary.documents == 0) {
    fail_user("found no examples in the inputs", joined(options.inputs),
              summary.bad_examples > 0 ? str_cat("(all", summary.bad_examples, "were bad; the first:",
                                                 summary.first_bad_example + ")")
                                       : std::string("(the files are empty)"));
  }
  if (progress) {
    progress({reader.bytes_read(), reader.total_bytes(), summary.documents, summary.tokens, seconds_since(start)});
  }
  finish_splits(train, val, out, summary);
  summary.seconds = seconds_since(start);
  return summary;
}

}  // namespace

bool is_validation_document(uint64_t seed, uint64_t index, double val_fraction) {
  const CounterRng rng(seed, stream_id_of("prepare.val_split"));
  const std::array<uint32_t, 4> bits = rng.bits(index);
  const uint64_t word = uint64_t{bits[0]} << 32 | bits[1];
  return static_cast<double>(word >> 11) * 0x1p-53 < val_fraction;
}

std::string dataset_tokenizer_path(const std::string& dir) {
  return tokenizer_in_directory(dir);
}

PrepareSummary prepare_dataset(const PrepareOptions& options,
                               const std::function<void(const PrepareProgress&)>& progress) {
  const std::vector<std::string> megatron = megatron_inputs(options.inputs);
  if (!megatron.empty()) {
    if (options.instructions) fail_user("a Megatron dataset holds token ids, not instruction data");
    return prepare_from_megatron(options, megatron, progress);
  }
  if (options.instructions) return prepare_instructions(options, progress);
  check_options(options);
  PrepareSummary summary;
  const std::vector<std::string> files = list_corpus_files(options.inputs, options.out_dir);
  summary.files = files.size();
  if (files.empty()) fail_no_documents(options, 0);
  const int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  GivenTokenizer given(options.tokenizer);
  std::unique_ptr<Tokenizer> tokenizer = std::move(given.tokenizer);
  OutputDirectory out(options.out_dir, options.force, given.files.paths);
  out.make();

  if (tokenizer) {
    given.copy_into(out);
  } else {
    const auto start = Clock::now();
    SentencePieceTrainOptions train_options;
    train_options.threads = threads;
    train_options.max_sentences = options.max_sentences;
    train_options.seed = static_cast<uint32_t>(options.seed);
    const std::string model = out.file(kSentencePieceFile);
    // SentencePiece reads plain text files itself; JSONL and compressed files go through the
    // document reader into one temporary text file.
    if (!is_plain_text_corpus(files, options.corpus)) {
      const std::string text = out.file("tokenizer-text.tmp." + std::to_string(::getpid()));
      if (write_training_text(files, options.corpus, text) == 0) fail_no_documents(options, files.size());
      summary.training = train_sentencepiece({text}, options.vocab_size, model, train_options);
      std::error_code ec;
      fs::remove(text, ec);
    } else {
      summary.training = train_sentencepiece(files, options.vocab_size, model, train_options);
    }
    summary.trained_tokenizer = true;
    summary.training_seconds = seconds_since(start);
    tokenizer = load_tokenizer(model);
  }
  summary.tokenizer = tokenizer->description();

  const auto start = Clock::now();
  const auto vocab = static_cast<uint32_t>(tokenizer->vocab_size());
  ShardWriter train(options.out_dir, kTrain, vocab, options.max_shard_bytes);
  std::optional<ShardWriter> val;
  if (options.val_fraction > 0) val.emplace(options.out_dir, kVal, vocab, options.max_shard_bytes);
  SplitRouter router(train, val ? &*val : nullptr, options.seed, options.val_fraction);
  DocumentReader reader(files, options.corpus);
  BatchEncoder encoder(*tokenizer, threads, threads == 1 ? 1 : kBatchesPerThread * threads);

  std::vector<DocumentBatch> spare;  // written batches, kept for their buffers
  const auto write = [&](DocumentBatch batch) {
    for (size_t p = 0; p < batch.size(); ++p) {
      const std::span<const int32_t> ids = batch.piece_tokens(p);
      router.add(ids, batch.ends_document[p]);
      summary.tokens += ids.size();
      summary.documents += batch.ends_document[p];
    }
    if (progress) {
      progress({batch.input_bytes_read, reader.total_bytes(), summary.documents, summary.tokens, seconds_since(start)});
    }
    batch.clear();
    spare.push_back(std::move(batch));
  };
  const auto submit = [&](DocumentBatch& batch) {
    batch.input_bytes_read = reader.bytes_read();
    encoder.submit(std::move(batch));
    batch = DocumentBatch();
    if (!spare.empty()) {
      batch = std::move(spare.back());
      spare.pop_back();
    }
    while (encoder.full()) write(encoder.next());
  };
  DocumentBatch batch;
  for (std::string text; reader.next(text);) {
    summary.text_bytes += text.size();
    // A document longer than a batch is cut, where its tokenizer allows, into pieces of about
    // a batch each, so that its pieces are encoded on different threads.
    for (size_t begin = 0, end; begin < text.size(); begin = end) {
      end = text.size() - begin <= options.batch_bytes ? text.size() : tokenizer->next_cut(text, begin + options.batch_bytes);
      batch.add(std::string_view(text).substr(begin, end - begin), end == text.size());
      if (batch.text.size() >= options.batch_bytes) submit(batch);
    }
  }
  if (batch.size() > 0) submit(batch);
  while (encoder.in_flight() > 0) write(encoder.next());
  router.finish();
  summary.skipped_documents = reader.skipped_documents();
  if (summary.documents == 0) fail_no_documents(options, files.size());

  finish_splits(train, val, out, summary);
  summary.seconds = seconds_since(start);
  return summary;
}

}  // namespace loom
