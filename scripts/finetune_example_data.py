#!/usr/bin/env python3
"""The data of the fine-tuning example (docs/finetuning.md), generated here: nothing is downloaded.

  finetune_example_data.py OUT

writes into OUT

  hf-base/            a small Llama in Hugging Face's layout (config.json, model.safetensors), made
                      with transformers from random weights, with a byte-level BPE tokenizer trained
                      here (tokenizer.json, tokenizer_config.json with ChatML's template and special
                      tokens): the stand-in for a model a user downloads
  corpus.jsonl        plain text, one document per line ({"text": ...}): sentences stating sums
                      ("17 plus 25 is 42."), the base model's pretraining
  chat.jsonl          instructions as chat: {"messages": [user question, assistant answer]}
  qa.jsonl            held-out questions for `loom eval --exact-match` ({"prompt", "answer"}),
                      never in the training files
  choice.jsonl        held-out questions as multiple choice ({"context", "choices", "gold"})

Operands are 0..49; a fixed fifth of the pairs is held out of every training file. Deterministic
(seed 1234).
"""

import json
import os
import random
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QUESTIONS = ["What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.", "How much is {a} plus {b}?",
             "Compute {a} + {b}."]
STATEMENTS = ["{a} plus {b} is {c}.", "{a} + {b} = {c}.", "Adding {a} and {b} gives {c}.",
              "The sum of {a} and {b} is {c}."]


def answer(a, b):
    return f"{a} plus {b} is {a + b}."


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "hf-base"), exist_ok=True)
    rng = random.Random(1234)
    pairs = [(a, b) for a in range(50) for b in range(50)]
    rng.shuffle(pairs)
    held_out = pairs[: len(pairs) // 5]
    train = pairs[len(pairs) // 5:]

    # Pretraining text: documents of a few sentences about the training pairs.
    texts = []
    with open(os.path.join(out, "corpus.jsonl"), "w") as f:
        for _ in range(12000):
            sentences = []
            for _ in range(rng.randint(2, 5)):
                a, b = rng.choice(train)
                sentences.append(rng.choice(STATEMENTS).format(a=a, b=b, c=a + b))
            texts.append(" ".join(sentences))
            f.write(json.dumps({"text": texts[-1]}) + "\n")

    def chat(a, b):
        question = rng.choice(QUESTIONS).format(a=a, b=b)
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer(a, b)}]}

    with open(os.path.join(out, "chat.jsonl"), "w") as f:
        for a, b in train:
            f.write(json.dumps(chat(a, b)) + "\n")

    # Held-out evaluation: the prompt as the chat template renders a user turn, then the
    # assistant's header; the expected answer; four choices for the multiple-choice file.
    with open(os.path.join(out, "qa.jsonl"), "w") as qa, open(os.path.join(out, "choice.jsonl"), "w") as mc:
        for a, b in held_out[:200]:
            question = QUESTIONS[0].format(a=a, b=b)
            prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
            qa.write(json.dumps({"prompt": prompt, "answer": answer(a, b)}) + "\n")
            wrong = rng.sample([c for c in range(a + b - 5, a + b + 6) if c != a + b and c >= 0], 3)
            choices = [str(c) for c in [a + b] + wrong]
            rng.shuffle(choices)
            mc.write(json.dumps({"context": prompt + f"{a} plus {b} is", "choices": choices,
                                 "gold": choices.index(str(a + b))}) + "\n")

    # The tokenizer: byte-level BPE with one digit per piece (as SmolLM's), ChatML's specials.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts += [q.format(a=1, b=2) for q in QUESTIONS] + ["user", "assistant", "system"]
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    base = os.path.join(out, "hf-base")
    tok.save(os.path.join(base, "tokenizer.json"))
    with open(os.path.join(base, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "chat_template": CHATML, "add_bos_token": False}, f, indent=2)

    # The model: a 4-layer Llama, width 128, grouped-query attention, from random weights.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True,
                         eos_token_id=tok.token_to_id("<|im_end|>"), bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(base, safe_serialization=True)
    print(f"wrote {out}: {len(train)} training pairs, {len(held_out)} held out; vocabulary {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
