// SentencePiece tokenizers: loading a .model file, and training one (`loom tokenizer train`).
//
// Training makes a BPE model set up for language-model data rather than translation:
//   - byte fallback: a character outside the vocabulary becomes its UTF-8 bytes (<0x00> ..
//     <0xFF>), so any text encodes and nothing becomes <unk>;
//   - no normalisation, no extra-whitespace removal, no dummy leading space: decode(encode(x))
//     is x (the one exception: U+2581 '▁', SentencePiece's own sign for a space, comes back as
//     a space), and the ids of a concatenation are those of the parts in most cases;
//   - digits split one per token; pieces of whitespace alone allowed (indentation in code);
//   - ids: <unk> = 0, <s> = 1, </s> = 2 (eos, the end-of-document token), then 256 byte pieces,
//     then the learned pieces.
// The library's own logging is silenced; errors come back as UserError. Models like these (BPE,
// byte fallback, identity normaliser) are encoded by data/sentencepiece_bpe.h, which gives the
// library's ids several times faster; other models by the library.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace loom {

// The smallest vocabulary train_sentencepiece accepts: <unk>, <s>, </s>, the 256 byte pieces and
// one learned piece.
constexpr int kMinSentencePieceVocab = 3 + 256 + 1;

struct SentencePieceTrainOptions {
  int threads = 0;             // 0: every core
  int64_t max_sentences = 0;   // lines to train on, sampled at random when the input has more; 0: all
  double character_coverage = 0.9995;  // rarer characters are left to byte fallback
  uint32_t seed = 0;           // of the sample of lines: the same inputs and options, the same model
};

// What training saw and made, for the caller to report.
struct SentencePieceTrainSummary {
  int64_t lines = 0;          // non-empty input lines read
  int64_t bytes = 0;          // their bytes
  int64_t trained_lines = 0;  // the lines training saw: all, or the sample of max_sentences
  int vocab_size = 0;
};

// Trains a BPE model of exactly `vocab_size` pieces on the lines of `inputs` (UTF-8 text files;
// blank lines skipped) and writes it to `out_model` atomically: into a temporary file in the same
// directory, then renamed, so that `out_model` is never half written. Throws UserError for a
// missing or unreadable input, invalid UTF-8 (file, line and byte offset), inputs with no text,
// or a vocabulary size the corpus cannot fill or byte fallback cannot fit in.
SentencePieceTrainSummary train_sentencepiece(const std::vector<std::string>& inputs, int vocab_size,
                                              const std::string& out_model,
                                              const SentencePieceTrainOptions& options = {});

// Loads a SentencePiece model file. Throws UserError naming the file when it cannot be read, is
// not a SentencePiece model, or has no end-of-sentence piece to serve as eos.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);

}  // namespace loom
