// The tokenizer files of a Hugging Face model directory: which they are, copying them next to a
// model (import and export carry them, so that later commands find them), and the vocabulary
// they define, which must fit the model's vocab_size.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace loom {

// tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, tokenizer.model,
// special_tokens_map.json, generation_config.json, added_tokens.json.
const std::vector<std::string>& hf_tokenizer_file_names();

// The names of those files present in `dir`.
std::vector<std::string> hf_tokenizer_files_in(const std::string& dir);

// One more than the largest token id the files in `dir` define (tokenizer.json's model vocab and
// added tokens, else vocab.json and added_tokens.json); nullopt when they define none Loom can
// count (tokenizer.model alone). UserError naming the file when one is not valid JSON.
std::optional<int64_t> hf_tokenizer_vocab_size(const std::string& dir);

// Copies `names` from `from` to `to` (an existing directory), each flushed to disk.
void copy_hf_tokenizer_files(const std::string& from, const std::vector<std::string>& names, const std::string& to);

// bos_token_id and eos_token_id of `dir`/generation_config.json, when it exists and has them
// (integers; of a list, the first).
struct TokenIds {
  std::optional<int> bos, eos;
};
TokenIds hf_generation_token_ids(const std::string& dir);

}  // namespace loom
