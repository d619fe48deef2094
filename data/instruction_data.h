// Instruction data for supervised fine-tuning, as `loom prepare --format chat|prompt-completion|
// alpaca` reads it: examples of a conversation each, rendered with a chat template and tokenized
// with a per-token loss mask.
//
// Formats, one JSON object per example:
//   chat               {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
//   prompt-completion  {"prompt": "...", "completion": "..."}: a user turn and the assistant's
//   alpaca             {"instruction": "...", "input": "...", "output": "..."}: the user turn is
//                      the instruction, and the input after a blank line when it is not empty
//                      ("input" may be missing); the assistant's turn is the output.
// Other members are ignored. A file is JSONL (one object per non-blank line), or, when its first
// non-whitespace character is '[', one JSON array of objects (Alpaca's alpaca_data.json). Files
// may be gzip'd or zstd'd (data/input_stream.h); each is read whole.
//
// A bad example (a line that is not JSON, a missing or non-string field, a role other than
// system, user and assistant, no assistant turn) is reported as "FILE:LINE: what is wrong"; the
// reader stops with that UserError, or skips the example and counts it (skip_bad). A JSON array
// file that does not parse is an error either way.
//
// encode_example renders an example (render_chat_segments, data/chat_template.h) and tokenizes
// each piece on its own: the pieces meet at the template's markers and line breaks, where the
// tokenizers Loom reads do not merge across (the tests hold the ids to those of the whole text).
// The mask is 1 on the assistant's pieces (or on every token, train_on_all); the example ends
// with the end-of-document token, counted when the last turn is the assistant's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace loom {

enum class InstructionFormat { kChat, kPromptCompletion, kAlpaca };

// "chat", "prompt-completion", "alpaca"
const char* instruction_format_name(InstructionFormat format);

struct JsonValue;

// The conversation of one example (a parsed JSON value). Throws UserError with one phrase (no
// file or line: the reader adds them) when the value is not an example of `format`.
std::vector<ChatMessage> instruction_messages(const JsonValue& value, InstructionFormat format);

class InstructionReader {
 public:
  // UserError for no files.
  InstructionReader(std::vector<std::string> files, InstructionFormat format, bool skip_bad);
  ~InstructionReader();
  InstructionReader(const InstructionReader&) = delete;
  InstructionReader& operator=(const InstructionReader&) = delete;

  // Replaces `messages` with the next example's; false after the last. UserError "FILE:LINE:
  // ..." for a bad example unless skip_bad, for a file that cannot be read, or an array file
  // that does not parse.
  bool next(std::vector<ChatMessage>& messages);

  uint64_t skipped() const { return skipped_; }
  // The first skipped example's message, for the summary.
  const std::string& first_skipped() const { return first_skipped_; }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  struct Example {
    uint64_t line = 0;
    std::string error;                  // a bad example
    std::vector<ChatMessage> messages;  // else
  };
  // Reads the next file into examples_.
  void load(const std::string& file);

  std::vector<std::string> files_;
  InstructionFormat format_;
  bool skip_bad_;
  size_t next_file_ = 0;
  std::string file_;                     // the file examples_ come from
  std::vector<Example> examples_;
  size_t next_example_ = 0;
  uint64_t skipped_ = 0;
  std::string first_skipped_;
  uint64_t bytes_read_ = 0;
  uint64_t total_bytes_ = 0;
};

// Appends the example's ids to `ids` and their mask (0/1) to `mask`, ending with eos.
void encode_example(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                    const std::vector<ChatMessage>& messages, bool train_on_all, std::vector<int32_t>& ids,
                    std::vector<uint8_t>& mask);

}  // namespace loom
