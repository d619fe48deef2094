"""Hugging Face transformers' side of the model directory tests (tests/launch/ckpt_hf_cli_test.cpp).

  make KIND DIR TOKENS_OUT LOGITS_OUT
      Builds a small model of KIND (gpt2, llama, llama_tied, qwen2, llama3_rope) from a config,
      with seeded random weights (no download), saves it with save_pretrained (safetensors,
      sharded for the Llama kinds), and writes the tokens it ran (int32) and its logits (f32,
      (B, T, V) row-major).
  logits DIR TOKENS LOGITS_OUT
      Loads DIR with AutoModelForCausalLM.from_pretrained and writes its logits for TOKENS.
"""
import sys

import torch
import transformers

B, T = 2, 7


def config_of(kind):
    if kind == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=61, n_positions=16)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, vocab_size=61, max_position_embeddings=16, rms_norm_eps=1e-5,
                  rope_theta=10000.0)
    if kind == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=False)
    if kind == "llama_tied":
        return transformers.LlamaConfig(**common, tie_word_embeddings=True)
    if kind == "llama3_rope":
        return transformers.LlamaConfig(**common, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                "original_max_position_embeddings": 8})
    if kind == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=False)
    raise SystemExit(f"unknown kind {kind}")


def logits_of(model, tokens):
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.float().numpy()


def main():
    torch.manual_seed(1234)
    if sys.argv[1] == "make":
        kind, out_dir, tokens_out, logits_out = sys.argv[2:6]
        config = config_of(kind)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        # Biases and norm gains start at 0 and 1: draw them too, so that every tensor is checked.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name or "ln_" in name:
                    p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name or "ln_" in name else 0.0))
        model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="20KB" if kind != "gpt2" else "5GB")
        g = torch.Generator().manual_seed(7)
        tokens = torch.randint(0, config.vocab_size, (B, T), generator=g).int().numpy()
        tokens.tofile(tokens_out)
        logits_of(model, tokens).tofile(logits_out)
    elif sys.argv[1] == "logits":
        model_dir, tokens_in, logits_out = sys.argv[2:5]
        import numpy
        tokens = numpy.fromfile(tokens_in, dtype=numpy.int32).reshape(B, T)
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
        logits_of(model, tokens).tofile(logits_out)
    else:
        raise SystemExit("usage: hf_transformers.py make KIND DIR TOKENS LOGITS | logits DIR TOKENS LOGITS")


if __name__ == "__main__":
    main()
