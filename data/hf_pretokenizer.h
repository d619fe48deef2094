// The pre-tokenizer of a Hugging Face tokenizer.json: how a text is cut into the pieces that BPE
// then merges one at a time. Loom reads the kinds that byte-level BPE tokenizers use:
//   - ByteLevel: with use_regex, GPT-2's pattern (data/gpt2_pretokenizer.h); add_prefix_space
//     puts a space before a text that does not start with one. The bytes themselves are mapped to
//     GPT-2's characters by the model, not here.
//   - Split with a Regex (or String) pattern and behavior Isolated, not inverted: every match is a
//     piece, and so is the text between matches (Llama 3's and Qwen2's patterns). The pattern is
//     compiled with ICU's regular expressions, whose \s, \p{L}, \p{N}, (?i:...) and lookahead mean
//     what they mean to Oniguruma, the engine of Hugging Face `tokenizers`.
//   - Digits: each number character (Unicode category N) a piece of its own (individual_digits), or
//     each run of them.
//   - Sequence of these: each step cuts the pieces of the step before.
// Anything else is refused by name. The steps are read once; split() is const and safe to call from
// many threads at once (each call takes its own copy of the compiled patterns).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/json.h"

namespace loom {

class HfPreTokenizer {
 public:
  // Reads `config` (the "pre_tokenizer" value of `file`: an object, or null for none). Throws
  // UserError naming the file and the step it does not support.
  HfPreTokenizer(const JsonValue& config, const std::string& file);
  ~HfPreTokenizer();
  HfPreTokenizer(HfPreTokenizer&&) noexcept;

  // Whether a ByteLevel step is present (what makes the tokenizer byte-level).
  bool byte_level() const { return byte_level_; }
  // ByteLevel's add_prefix_space: a space goes before each text that does not start with one.
  bool adds_prefix_space() const { return prefix_space_; }
  // Whether a newline between two printable ASCII characters other than space ends the pieces on
  // both sides (Tokenizer's cuts): so with GPT-2's pattern (ByteLevel, no prefix space), alone or
  // with Digits; not with a Split, whose pattern may join such a newline to its neighbours.
  bool cuts_after_newlines() const;
  // One line: the steps, for descriptions.
  std::string summary() const;

  // Appends the pieces of `text` (already given its prefix space, if any) to `pieces`.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Step;
  void add_step(const JsonValue& config, const std::string& file, bool first);

  std::vector<std::unique_ptr<Step>> steps_;
  bool byte_level_ = false;
  bool prefix_space_ = false;
};

}  // namespace loom
