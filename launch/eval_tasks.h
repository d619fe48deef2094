// The files and the metrics of `loom eval` and of training's periodic evaluations
// (docs/evaluation.md): JSONL task files read and checked whole, and the scores lm-evaluation-
// harness reports (accuracy, length-normalised accuracy, exact match, their standard errors).
//
// A task file is read completely before anything runs, so a bad line anywhere stops the
// evaluation with `FILE:LINE: what is wrong` before a result is computed or written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

// One multiple-choice document: a context and its candidate continuations, `gold` the right one.
// Fields "context" (aliases "query", "ctx"), "choices" (alias "endings"), "gold" (alias "label";
// an integer, or a string of digits as HellaSwag exports write it).
struct ChoiceDoc {
  std::string context;
  std::vector<std::string> choices;
  int gold = 0;
  int line = 0;  // its line in the file, from 1
};

// One generative document: fields "prompt" and "answer" (strings).
struct AnswerDoc {
  std::string prompt;
  std::string answer;
  int line = 0;
};

// Every document of a JSONL file (blank lines skipped), then its first `limit` (0: all).
// UserError "FILE:LINE: ..." for a line that is not a JSON object, lacks a field, has one of
// the wrong type, has no choices or an empty one, or a gold index outside the choices; for a
// file that cannot be read or holds no document.
std::vector<ChoiceDoc> read_choice_docs(const std::string& path, int limit);
std::vector<AnswerDoc> read_answer_docs(const std::string& path, int limit);

// The index of the largest score, the first of equal ones (numpy's argmax, which the harness
// takes).
int best_choice(const std::vector<double>& scores);
// Characters of UTF-8 text (code points: what Python's len() counts of a str).
int64_t utf8_characters(const std::string& text);
// `text` without leading and trailing whitespace (space, tab, newline, carriage return).
std::string trim_whitespace(const std::string& text);

// A per-document score (0 or 1 for an accuracy) averaged over the documents, with the standard
// error of that mean: the sample standard deviation (n - 1 in its denominator) over sqrt(n), as
// the harness's mean_stderr computes it (0 for one document).
struct MeanScore {
  double mean = 0;
  double stderr_of_mean = 0;
  int64_t n = 0;
};
MeanScore mean_score(const std::vector<double>& per_document);

}  // namespace loom
