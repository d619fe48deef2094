// Tokenizer: text <-> token ids, whatever the vocabulary behind it.
//
// Three kinds exist: SentencePiece models (data/sentencepiece_tokenizer.h; `loom tokenizer train`
// makes them), GPT-2's byte-level BPE from encoder.json + vocab.bpe or Hugging Face's vocab.json +
// merges.txt (data/gpt2_bpe.h), and Hugging Face tokenizer.json files of byte-level BPE
// (data/hf_tokenizer.h). load_tokenizer picks one from a path. Every tokenizer encodes any valid
// UTF-8 text (no unknown tokens: all fall back to bytes) and has an end-of-document token,
// eos_id(), that `loom prepare` puts between documents. SentencePiece and GPT-2's files never
// encode text to it; a tokenizer.json does, where the text spells its added token (as Hugging
// Face does).
//
// encode and decode are const and safe to call from many threads at once on one tokenizer.
//
// Cuts: most tokenizers never join the characters on the two sides of a newline that stands
// between two printable ASCII characters ("end.\nNext") into one token, nor let one side change
// how the other is split; a text may then be cut after such a newline and its parts encoded
// apart, with the ids of the whole (next_cut finds such places). encode cuts long texts into
// pieces of about 64 KiB this way, so that the memory an encoder needs stays bounded (the
// SentencePiece library takes a few hundred bytes per byte of the text it encodes at once), and
// `loom prepare` cuts long documents to encode their pieces on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The ids of `text`. Throws InvalidUtf8 (data/utf8.h), naming the byte offset, when `text` is
  // not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Appends the ids of `text` to `out` (reusing its storage across calls).
  void encode_into(std::string_view text, std::vector<int32_t>& out) const;

  // The text of `ids`: the bytes the tokens stand for, so decode(encode(x)) == x (except where a
  // tokenizer.json normalises, NFC, or adds a prefix space). A slice of ids may cut a character
  // in two and then yields bytes that are not valid UTF-8. eos decodes to "<|endoftext|>" with
  // GPT-2's files, to its text with a tokenizer.json, and to nothing with SentencePiece (a
  // control piece).
  // Throws UserError for an id outside 0 .. vocab_size() - 1.
  std::string decode(std::span<const int32_t> ids) const;

  // The first place at or after byte `from` (>= 1) where `text` may be cut (see above): just
  // after such a newline. text.size() when there is none or this tokenizer allows no cuts.
  size_t next_cut(std::string_view text, size_t from) const;

  // Number of ids: every id is in 0 .. vocab_size() - 1.
  virtual int vocab_size() const = 0;
  // The end-of-document token.
  virtual int eos_id() const = 0;
  // The beginning-of-sequence token where the tokenizer names one (tokenizer.json's template or
  // tokenizer_config.json), else -1.
  virtual int bos_id() const { return -1; }

  // For generation: the ids the tokenizer's own template puts before and after a text
  // (tokenizer.json's post_processor: Llama 3 puts <|begin_of_text|> first; GPT-2's files and
  // SentencePiece models put nothing). encode never adds them: `loom prepare` stores documents as
  // they are, separated by eos.
  virtual std::vector<int32_t> template_prefix() const { return {}; }
  virtual std::vector<int32_t> template_suffix() const { return {}; }
  // template_prefix() + encode(text) + template_suffix().
  std::vector<int32_t> encode_with_template(std::string_view text) const;
  // One line for logs: kind, size, eos and where it was loaded from.
  virtual std::string description() const = 0;

 protected:
  // `text` is valid UTF-8; append its ids to `out`.
  virtual void encode_valid(std::string_view text, std::vector<int32_t>& out) const = 0;
  // Whether encode_valid(a + b) is encode_valid(a) followed by encode_valid(b) whenever `a` ends
  // with a '\n' after a printable ASCII character other than space, and `b` starts with one.
  virtual bool cuts_after_newlines() const = 0;
  // Every id is in range.
  virtual std::string decode_valid(std::span<const int32_t> ids) const = 0;
};

// The files behind a tokenizer path, as load_tokenizer reads it: what to copy to move a
// tokenizer elsewhere (`loom prepare` copies them into the dataset directory).
struct TokenizerFiles {
  enum class Kind { kSentencePiece, kGpt2Bpe, kHuggingFace };
  Kind kind = Kind::kSentencePiece;
  // {model}, {encoder.json or vocab.json, vocab.bpe or merges.txt}, or {tokenizer.json} and
  // tokenizer_config.json when one lies next to it.
  std::vector<std::string> paths;
  // The name each file takes in a dataset directory (tokenizer.model, encoder.json, vocab.bpe,
  // tokenizer.json, tokenizer_config.json).
  std::vector<std::string> names;
};

// The tokenizer of a directory, in this order: tokenizer.json; tokenizer.model; encoder.json +
// vocab.bpe; vocab.json + merges.txt. "" when it holds none of them.
std::string tokenizer_in_directory(const std::string& dir);

// Resolves `path` as load_tokenizer does, without reading the files. Throws UserError for a
// path that does not exist, a directory that holds no tokenizer, or a BPE file without its
// partner.
TokenizerFiles tokenizer_files(const std::string& path);

// Loads a tokenizer from `path`:
//   - a directory: the first of tokenizer.json, tokenizer.model, encoder.json + vocab.bpe,
//     vocab.json + merges.txt that it holds;
//   - encoder.json or vocab.bpe, vocab.json or merges.txt: that pair, the other file next to it;
//   - any other .json file (tokenizer.json): a Hugging Face tokenizer, with the
//     tokenizer_config.json next to it read for eos and bos when there is one;
//   - any other file: a SentencePiece model (.model), as `loom tokenizer train` writes or Llama 2
//     ships.
// Throws UserError naming the file (and line or byte offset) when something is missing or wrong.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace loom
