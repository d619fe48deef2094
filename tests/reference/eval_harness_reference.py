"""lm-evaluation-harness's multiple-choice scoring, written out with transformers, for
tests/launch/eval_reference_test.cpp.

  eval_harness_reference.py TOKENIZER_DIR MODEL_DIR DOCS.jsonl OUT.jsonl

Builds a small GPT-2 (seeded random weights, no download) whose vocabulary is the GPT-2 tokenizer
in TOKENIZER_DIR (encoder.json, vocab.bpe), saves it to MODEL_DIR with save_pretrained, and scores
every document of DOCS.jsonl ({"context", "choices", "gold"}) the way the harness does: the
continuation is " " + choice; whitespace ending the context moves to the continuation; context +
continuation is encoded whole and the continuation's tokens are those after the context's own
encoding; an empty context is the end-of-text token; each choice's score is the sum of the fp32
log-softmax of its tokens; acc takes numpy's argmax of the scores, acc_norm of the scores divided
by len(choice). Writes one line per document: {"scores": [...], "acc": 0|1, "acc_norm": 0|1,
"continuations": [[ids], ...]}.
"""
import json
import sys

import numpy
import torch
import transformers


def encode_pair(tokenizer, context, continuation):
    if context == "":
        return [tokenizer.eos_token_id], tokenizer.encode(continuation)
    stripped = context.rstrip()
    if len(stripped) < len(context):
        continuation = context[len(stripped):] + continuation
        context = stripped
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def score(model, context_ids, continuation_ids, max_length):
    sequence = (context_ids + continuation_ids)[-(max_length + 1):]
    inputs = torch.tensor([sequence[:-1]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(inputs).logits[0].float(), dim=-1)
    n = len(continuation_ids)
    positions = range(len(sequence) - 1 - n, len(sequence) - 1)
    return float(sum(log_probs[p, sequence[p + 1]] for p in positions))


def main():
    tokenizer_dir, model_dir, docs_path, out_path = sys.argv[1:5]
    tokenizer = transformers.GPT2Tokenizer(vocab_file=f"{tokenizer_dir}/encoder.json",
                                           merges_file=f"{tokenizer_dir}/vocab.bpe")
    torch.manual_seed(1234)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=len(tokenizer), n_positions=24)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.1) + (1.0 if ".ln_" in name or "ln_f" in name else 0.0))
    model.save_pretrained(model_dir, safe_serialization=True)
    with open(docs_path) as docs, open(out_path, "w") as out:
        for line in docs:
            doc = json.loads(line)
            pairs = [encode_pair(tokenizer, doc["context"], " " + c) for c in doc["choices"]]
            scores = [score(model, c, x, config.n_positions) for c, x in pairs]
            lengths = numpy.array([float(len(c)) for c in doc["choices"]])
            out.write(json.dumps({
                "scores": scores,
                "acc": int(numpy.argmax(scores) == doc["gold"]),
                "acc_norm": int(numpy.argmax(numpy.array(scores) / lengths) == doc["gold"]),
                "continuations": [x for _, x in pairs],
            }) + "\n")


if __name__ == "__main__":
    main()
