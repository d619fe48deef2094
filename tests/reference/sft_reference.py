"""The reference for instruction data (data/instruction_data.h): conversations rendered by jinja2
with each family's canonical chat template (chat_template_reference.py), encoded whole by Hugging
Face tokenizers (the ChatML and Llama 3 tokenizers of hf_tokenizers_reference.py), and the loss
mask found from jinja2 alone: assistant message k spans from the end of the rendering of the
messages before it with the generation prompt to the end of its own turn marker (the rendering of
messages 0..k, less ChatML's line break after <|im_end|>); a token counts when its characters lie
in such a span. The end-of-document token follows, counted when the last message is the
assistant's.

  make OUT   writes OUT/conversations (records "<byte length>\\n<bytes>\\n": a count N, then N pairs
             of role and content) and, for each family, OUT/<family>/tokenizer.json,
             tokenizer_config.json (with the chat template) and expected (per conversation a line of
             ids and a line of mask bytes)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chat_template_reference import TEMPLATES  # noqa: E402
from hf_tokenizers_reference import build  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there, how can I help?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": " 6, as the GNU license says\n"}],
    [{"role": "user", "content": "  padded content \n\n"},
     {"role": "assistant", "content": "\t caf\u00e9 \U0001F600 \u4e2d\u6587\r\n"}],
    [{"role": "user", "content": "Copyright 2024"}, {"role": "assistant", "content": "Permission is granted."},
     {"role": "user", "content": "Thanks"}],
]

FAMILIES = {"chatml": "smollm", "llama3": "llama3"}


def write_records(path, records):
    with open(path, "wb") as f:
        for r in records:
            data = r.encode("utf-8")
            f.write(f"{len(data)}\n".encode() + data + b"\n")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit("usage: sft_reference.py make OUT")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    records = []
    for messages in CONVERSATIONS:
        records.append(str(len(messages)))
        for m in messages:
            records += [m["role"], m["content"]]
    write_records(os.path.join(out, "conversations"), records)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    for family, style in FAMILIES.items():
        d = os.path.join(out, family)
        os.makedirs(d, exist_ok=True)
        tok, config = build(style)
        template, bos = TEMPLATES[family]
        config = dict(config or {})
        config["chat_template"] = template
        config["bos_token"] = bos
        config.setdefault("eos_token", "<|endoftext|>")
        tok.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
        eos = tok.token_to_id(config["eos_token"])
        compiled = env.from_string(template)

        def render(messages, generation):
            return compiled.render(messages=messages, add_generation_prompt=generation, bos_token=bos)

        with open(os.path.join(d, "expected"), "w") as f:
            for messages in CONVERSATIONS:
                text = render(messages, False)
                spans = []
                for k, m in enumerate(messages):
                    if m["role"] != "assistant":
                        continue
                    begin = len(render(messages[:k], True))
                    end = len(render(messages[:k + 1], False))
                    if family == "chatml":
                        end -= 1  # the line break after <|im_end|>
                    spans.append((begin, end))
                encoding = tok.encode(text, add_special_tokens=False)
                mask = [int(any(b <= s and e <= c for b, c in spans)) for s, e in encoding.offsets]
                ids = encoding.ids + [eos]
                mask.append(int(messages[-1]["role"] == "assistant"))
                f.write(" ".join(map(str, ids)) + "\n")
                f.write(" ".join(map(str, mask)) + "\n")


if __name__ == "__main__":
    main()
