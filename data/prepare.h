// Preparing a dataset (`loom prepare`): text or JSONL documents -> a tokenizer and token shards
// in one directory that `loom train` reads (config data.tokens.source.path). Or Megatron-LM
// indexed datasets (data/megatron_dataset.h), whose documents are token ids already, -> token
// shards: each non-empty document as it is (no end-of-document token added: Megatron's own
// preprocessing appended one or not), split into train and val as text documents are; the
// vocabulary is the given tokenizer's (copied into DIR, for samples), else `vocab_size`, else
// the largest id + 1. The inputs are then all Megatron datasets (their prefixes, or either file).
//
// The dataset directory DIR holds
//   tokenizer.model                  the SentencePiece model (given, copied; or trained here), or
//   encoder.json, vocab.bpe          GPT-2's files (given, copied; vocab.json + merges.txt too), or
//   tokenizer.json                   a Hugging Face tokenizer (given, copied), with its
//   [tokenizer_config.json]          config when it has one
//   train-00000.tok ...              the train split's shards, then train.split.pbtxt
//   val-00000.tok ...                the val split's shards, then val.split.pbtxt
// (docs/data.md for users; the shard format in docs/formats.md). Each document is tokenized on
// its own and followed by the tokenizer's end-of-document token.
//
// Which split a document goes to is a function of (seed, document index) alone: document i is
// in val when a counter-based random number of (seed, i) is below val_fraction. One exception
// makes both splits non-empty: the last document goes to train when no earlier one did, and to
// val when val_fraction > 0 and no earlier one did (so val exists when there are >= 2
// documents). Documents are read in order, tokenized on `threads` threads in batches of about
// 1 MB (a longer document is cut into pieces where its tokenizer allows, Tokenizer::next_cut, so
// that one long document is spread over the threads too), and written in order: the files are
// identical whatever the thread count. A document is held in memory whole, with its ids.
//
// Instruction data (PrepareOptions::instructions, data/instruction_data.h): each example is
// rendered with the tokenizer's chat template (tokenizer_config.json's; or Loom's plain one),
// tokenized on the calling thread, and stored as one document with a loss mask (format version 2
// shards): by default only the assistant's answers count. A given tokenizer is required. Bad
// examples stop the run, or are skipped and counted.
//
// Failure leaves nothing half-written: shards and descriptors are written under temporary names
// and renamed, the descriptors last, and on any error everything this call created in DIR is
// removed again (DIR too, if it created it). DIR may exist; if it already holds a dataset (a
// descriptor, a shard or a tokenizer file) the call refuses, unless `force`, which deletes that
// dataset's files first (and nothing else in DIR).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/instruction_data.h"
#include "data/sentencepiece_tokenizer.h"

namespace loom {

struct InstructionOptions {
  InstructionFormat format = InstructionFormat::kChat;
  bool plain_template = false;     // Loom's plain template instead of the tokenizer's chat template
  bool train_on_all = false;       // every token counts in the loss, not only the assistant's
  bool skip_bad_examples = false;  // else the first bad example stops the run
};

struct PrepareOptions {
  std::vector<std::string> inputs;  // files and directories (data/corpus.h), or Megatron datasets
  CorpusOptions corpus;
  std::string out_dir;
  // A tokenizer path as load_tokenizer takes it; or empty, and then a SentencePiece model of
  // vocab_size pieces is trained on the inputs (on a sample of max_sentences lines; 0: all).
  // Megatron inputs: either, or neither (see above).
  std::string tokenizer;
  int vocab_size = 0;
  int64_t max_sentences = 1000000;
  double val_fraction = 0.01;  // in [0, 1)
  uint64_t max_shard_bytes = uint64_t{256} << 20;
  int threads = 0;             // 0: every core
  size_t batch_bytes = size_t{1} << 20;  // text handed to a thread at a time
  uint64_t seed = 0;           // of the val split (and of the tokenizer's training sample)
  bool force = false;          // replace a dataset already in out_dir
  std::optional<InstructionOptions> instructions;  // the inputs are instruction data
};

// Where a run is, for a progress display; reported after each batch is written.
struct PrepareProgress {
  uint64_t bytes_read = 0;   // of the input files
  uint64_t total_bytes = 0;  // their size
  uint64_t documents = 0;
  uint64_t tokens = 0;
  double seconds = 0;        // since reading began
};

struct PrepareSummary {
  struct Split {
    uint64_t documents = 0;
    uint64_t tokens = 0;  // eos tokens included
    std::vector<std::string> shards;
  };
  size_t files = 0;
  uint64_t documents = 0;
  uint64_t skipped_documents = 0;  // whitespace only
  uint64_t text_bytes = 0;         // bytes of the documents' text
  uint64_t tokens = 0;
  Split train, val;
  bool megatron = false;               // the inputs were Megatron datasets (files counts them)
  bool instructions = false;           // the inputs were instruction data (documents: examples)
  std::string chat_template;           // which template rendered them
  uint64_t counted_tokens = 0;         // of the instruction data: tokens with mask 1
  uint64_t bad_examples = 0;           // skipped
  std::string first_bad_example;       // "FILE:LINE: ..." of the first skipped
  bool trained_tokenizer = false;
  SentencePieceTrainSummary training;  // when trained_tokenizer
  double training_seconds = 0;
  std::string tokenizer;              // its description
  double seconds = 0;                 // reading, tokenizing and writing (training not counted)
};

// Writes the dataset described above. Throws UserError for bad options, bad input (naming the
// file, and the line and byte offset where it applies), an empty corpus, or an out_dir that is
// not a directory or already holds a dataset.
PrepareSummary prepare_dataset(const PrepareOptions& options,
                               const std::function<void(const PrepareProgress&)>& progress = {});

// What load_tokenizer should be given for the dataset in `dir`: DIR/tokenizer.model, else DIR
// itself when it holds encoder.json and vocab.bpe; "" when it holds neither.
std::string dataset_tokenizer_path(const std::string& dir);

// Whether document `index` goes to val (before the last-document exception above).
bool is_validation_document(uint64_t seed, uint64_t index, double val_fraction);

}  // namespace loom
