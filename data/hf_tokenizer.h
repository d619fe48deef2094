// Hugging Face tokenizers: a tokenizer.json of model type BPE that is byte-level (GPT-2, Llama 3,
// Qwen2, SmolLM and most models since), giving the ids Hugging Face `tokenizers` gives.
//
// What is read from tokenizer.json:
//   - model: BPE with its vocab and merges (each merge "a b" or ["a", "b"]), ignore_merges;
//     every one of the 256 bytes must be a token (byte-level BPE never needs an unknown token);
//   - added_tokens: matched in the text before anything else (data/hf_added_tokens.h), each one id;
//   - normalizer: none, or NFC (Qwen2), alone or in a Sequence;
//   - pre_tokenizer: ByteLevel, Split, Digits, Sequence (data/hf_pretokenizer.h); a ByteLevel step
//     must be present;
//   - decoder: ByteLevel;
//   - post_processor: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel or a
//     Sequence of them: only for template_prefix()/template_suffix(), the ids a model expects
//     around a text (Llama 3: <|begin_of_text|> first). encode() never adds them.
// Anything else (WordPiece, Unigram, BPE over SentencePiece's ▁ pieces, other normalizers) is
// refused with one sentence naming the file and what Loom reads.
//
// eos (the end-of-document token): tokenizer_config.json's eos_token when that file is given,
// else the first of <|endoftext|>, <|end_of_text|>, </s>, <|im_end|>, <eos> that is a token. bos:
// tokenizer_config.json's bos_token, else the first id of the template prefix, else none.
//
// decode gives each token's bytes: a vocabulary token's bytes as the ByteLevel decoder makes them,
// an added token's content as written (Hugging Face's decode with skip_special_tokens=False). Ids
// that no token has (gaps in the numbering) decode to nothing.
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace loom {

// Loads `tokenizer_json`, and `tokenizer_config_json` (empty: none) for eos and bos. Throws
// UserError naming the file and what is wrong or not supported.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json,
                                             const std::string& tokenizer_config_json);

}  // namespace loom
