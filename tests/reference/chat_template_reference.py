"""jinja2 (what transformers' apply_chat_template runs, with the same sandboxed environment and
options) as the reference for Loom's chat templates (data/chat_template.h).

  templates OUT            writes OUT/chatml/tokenizer_config.json and OUT/llama3/tokenizer_config.json,
                           each with its family's canonical chat_template and bos_token
  render OUT CONVERSATIONS renders each conversation of CONVERSATIONS (records "<byte length>\\n<bytes>\\n":
                           a count N, then N pairs of role and content) with both templates, without
                           and with the generation prompt, into OUT/<family>.rendered (records, in
                           the order conversation 0 without, conversation 0 with, ...)
"""
import json
import os
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = {
    "chatml": ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
               "{% endif %}", "<|endoftext|>"),
    "llama3": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
               "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
               "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
               "{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}", "<|begin_of_text|>"),
}


def read_records(path):
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        length = int(data[pos:newline])
        out.append(data[newline + 1:newline + 1 + length].decode("utf-8"))
        pos = newline + 1 + length + 1
    return out


def main():
    command, out = sys.argv[1], sys.argv[2]
    if command == "templates":
        for family, (template, bos) in TEMPLATES.items():
            os.makedirs(os.path.join(out, family), exist_ok=True)
            with open(os.path.join(out, family, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump({"chat_template": template, "bos_token": bos}, f)
    elif command == "render":
        records = read_records(sys.argv[3])
        conversations, pos = [], 0
        while pos < len(records):
            n = int(records[pos])
            conversations.append([{"role": records[pos + 1 + 2 * i], "content": records[pos + 2 + 2 * i]}
                                  for i in range(n)])
            pos += 1 + 2 * n
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        for family, (template, bos) in TEMPLATES.items():
            compiled = env.from_string(template)
            with open(os.path.join(out, family + ".rendered"), "wb") as f:
                for messages in conversations:
                    for generation in (False, True):
                        data = compiled.render(messages=messages, add_generation_prompt=generation,
                                               bos_token=bos).encode("utf-8")
                        f.write(f"{len(data)}\n".encode() + data + b"\n")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
