// GPT-2's byte-level BPE tokenizer, read from OpenAI's encoder.json and vocab.bpe.
//
// Text is split by GPT-2's pre-tokenizer (data/gpt2_pretokenizer.h); each piece's UTF-8 bytes
// are merged by BPE (data/bpe_merges.h) starting from one symbol per byte, so any text encodes.
// The files spell a token's bytes with one printable character per byte (GPT-2's
// `bytes_to_unicode`: the printable bytes of Latin-1 stand for themselves, the other 68 bytes
// for U+0100 onwards in byte order, so a space is 'Ġ' and a newline 'Ċ').
//
// encoder.json maps each token to its id; the ids must be 0 .. N-1, each once. vocab.bpe lists
// the merges, one "left right" pair per line after an optional "#version" line, best first;
// both parts and their concatenation must be tokens. All 256 single bytes must be tokens.
// `<|endoftext|>` must be a token: it is eos (encode never produces it from text, as in GPT-2).
//
// Encoding keeps no state between calls (no cache of encoded words): with the merge table in a
// flat hash table, merging a word afresh costs about as much as looking it up in a shared cache
// would, and threads then never wait on each other.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace loom {

// The character GPT-2's files use for `byte`, and back (-1 when `c` stands for no byte).
char32_t gpt2_byte_to_char(uint8_t byte);
int gpt2_char_to_byte(char32_t c);

// Throws UserError naming the file and the line or byte offset of the first problem.
std::unique_ptr<Tokenizer> load_gpt2_bpe(const std::string& encoder_json_path,
                                         const std::string& vocab_bpe_path);

}  // namespace loom
