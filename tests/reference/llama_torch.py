#!/usr/bin/python3
"""PyTorch reference for Loom's Llama correctness test.

Usage: llama_torch.py DIR
Reads and writes DIR as torch_reference.py says (written and read by
tests/reference/torch_reference.h for llama_torch_test.cpp).

The model is written independently of Loom, after the definitions of Hugging Face's
LlamaForCausalLM (transformers/models/llama/modeling_llama.py): RMSNorm computed in float32
(x * rsqrt(mean(x^2) + eps), then times the weight), rotary embeddings in the rotate-half
convention with cos/sin of (position x inv_freq) duplicated over the two halves, the Llama 3
frequency scaling of modeling_rope_utils, grouped-query attention through repeat_kv (key/value
head j serves query heads j*G .. j*G+G-1), a SwiGLU MLP down(silu(gate(x)) * up(x)), no biases
but the optional q/k/v ones (Qwen2), an untied or tied output projection. Loom stores q, k, v as
one fused tensor (qkv_proj) and gate, up as one (gate_up_proj); they are split here as Hugging
Face stores them. When the `transformers` package is importable, the same weights are also run
through its own LlamaForCausalLM (Qwen2ForCausalLM for q, k, v biases) and its logits must equal
this reference's.
"""
import math
import sys

import torch
import torch.nn.functional as F

from torch_reference import die, load_params, read_config, train

INT_KEYS = ("n_kv_head", "intermediate", "tied", "qkv_bias", "rope_llama3", "rope_original_max_position")
FLOAT_KEYS = ("rope_theta", "norm_eps", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor")


def expected_shapes(c):
    C, V, F_ = c["n_embd"], c["vocab_size"], c["intermediate"]
    HS = C // c["n_head"]
    QKV = (c["n_head"] + 2 * c["n_kv_head"]) * HS
    s = {"embed_tokens.weight": (V, C)}
    for i in range(c["n_layer"]):
        p = "layers.%d." % i
        s[p + "input_layernorm.weight"] = (C,)
        s[p + "self_attn.qkv_proj.weight"] = (QKV, C)
        if c["qkv_bias"]:
            s[p + "self_attn.qkv_proj.bias"] = (QKV,)
        s[p + "self_attn.o_proj.weight"] = (C, c["n_head"] * HS)
        s[p + "post_attention_layernorm.weight"] = (C,)
        s[p + "mlp.gate_up_proj.weight"] = (2 * F_, C)
        s[p + "mlp.down_proj.weight"] = (C, F_)
    s["norm.weight"] = (C,)
    if not c["tied"]:
        s["lm_head.weight"] = (V, C)
    return s


def inverse_frequencies(c):
    """modeling_rope_utils: the default rope parameters, then rope_type "llama3" when on."""
    HS = c["n_embd"] // c["n_head"]
    base = c["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, HS, 2, dtype=torch.int64).float() / HS))
    if not c["rope_llama3"]:
        return inv_freq
    factor, low, high = c["rope_factor"], c["rope_low_freq_factor"], c["rope_high_freq_factor"]
    old_context = c["rope_original_max_position"]
    low_freq_wavelen = old_context / low
    high_freq_wavelen = old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rms_norm(x, w, eps):
    x32 = x.to(torch.float32)
    variance = x32.pow(2).mean(-1, keepdim=True)
    return w * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    """(B, NKV, T, HS) -> (B, NKV * groups, T, HS), each key/value head repeated for its group."""
    if groups == 1:
        return x
    B, NKV, T, HS = x.shape
    return x[:, :, None, :, :].expand(B, NKV, groups, T, HS).reshape(B, NKV * groups, T, HS)


def forward(P, c, idx):
    """idx: (B, T) int64 -> logits (B, T, V)."""
    B, T = idx.shape
    C, NH, NKV = c["n_embd"], c["n_head"], c["n_kv_head"]
    HS = C // NH
    eps = c["norm_eps"]
    x = P["embed_tokens.weight"][idx]
    positions = torch.arange(T, dtype=torch.float32)
    freqs = (inverse_frequencies(c)[:, None] @ positions[None, :]).transpose(0, 1)  # (T, HS/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(c["n_layer"]):
        p = "layers.%d." % i
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        qkv = F.linear(h, P[p + "self_attn.qkv_proj.weight"], P.get(p + "self_attn.qkv_proj.bias"))
        q, k, v = qkv.split([NH * HS, NKV * HS, NKV * HS], dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NKV, HS).transpose(1, 2)
        v = v.view(B, T, NKV, HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, NH // NKV), repeat_kv(v, NH // NKV)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1, dtype=torch.float32)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, NH * HS)
        x = x + F.linear(y, P[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        gate, up = F.linear(h, P[p + "mlp.gate_up_proj.weight"]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, P[p + "mlp.down_proj.weight"])
    x = rms_norm(x, P["norm.weight"], eps)
    return F.linear(x, P["embed_tokens.weight"] if c["tied"] else P["lm_head.weight"])


def check_with_transformers(P, c, idx, logits):
    """The same weights through transformers' own LlamaForCausalLM (Qwen2ForCausalLM with q, k, v
    biases), when it is installed."""
    try:
        import transformers
    except ImportError:
        print("llama_torch.py: transformers is not installed; the independent reference alone")
        return
    C, NH, NKV = c["n_embd"], c["n_head"], c["n_kv_head"]
    HS = C // NH
    kwargs = dict(vocab_size=c["vocab_size"], hidden_size=C, intermediate_size=c["intermediate"],
                  num_hidden_layers=c["n_layer"], num_attention_heads=NH, num_key_value_heads=NKV,
                  max_position_embeddings=c["max_T"], rms_norm_eps=c["norm_eps"], rope_theta=c["rope_theta"],
                  tie_word_embeddings=bool(c["tied"]))
    if c["rope_llama3"]:
        kwargs["rope_scaling"] = {"rope_type": "llama3", "factor": c["rope_factor"],
                                  "low_freq_factor": c["rope_low_freq_factor"],
                                  "high_freq_factor": c["rope_high_freq_factor"],
                                  "original_max_position_embeddings": c["rope_original_max_position"]}
    # q, k, v biases alone are Qwen2's block (Llama's attention_bias would add one to o_proj too).
    if c["qkv_bias"]:
        config = transformers.Qwen2Config(use_sliding_window=False, **kwargs)
        architecture = transformers.Qwen2ForCausalLM
    else:
        config = transformers.LlamaConfig(**kwargs)
        architecture = transformers.LlamaForCausalLM
    config._attn_implementation = "eager"
    model = architecture(config).eval()
    state = {"model.embed_tokens.weight": P["embed_tokens.weight"], "model.norm.weight": P["norm.weight"]}
    if not c["tied"]:
        state["lm_head.weight"] = P["lm_head.weight"]
    for i in range(c["n_layer"]):
        p, hp = "layers.%d." % i, "model.layers.%d." % i
        q, k, v = P[p + "self_attn.qkv_proj.weight"].split([NH * HS, NKV * HS, NKV * HS])
        state.update({hp + "self_attn.q_proj.weight": q, hp + "self_attn.k_proj.weight": k,
                      hp + "self_attn.v_proj.weight": v})
        if c["qkv_bias"]:
            qb, kb, vb = P[p + "self_attn.qkv_proj.bias"].split([NH * HS, NKV * HS, NKV * HS])
            state.update({hp + "self_attn.q_proj.bias": qb, hp + "self_attn.k_proj.bias": kb,
                          hp + "self_attn.v_proj.bias": vb})
        gate, up = P[p + "mlp.gate_up_proj.weight"].chunk(2)
        state.update({hp + "input_layernorm.weight": P[p + "input_layernorm.weight"],
                      hp + "self_attn.o_proj.weight": P[p + "self_attn.o_proj.weight"],
                      hp + "post_attention_layernorm.weight": P[p + "post_attention_layernorm.weight"],
                      hp + "mlp.gate_proj.weight": gate, hp + "mlp.up_proj.weight": up,
                      hp + "mlp.down_proj.weight": P[p + "mlp.down_proj.weight"]})
    missing, unexpected = model.load_state_dict({n: t.detach() for n, t in state.items()}, strict=False)
    # The tied lm_head is embed_tokens' own parameter.
    missing = [m for m in missing if "rotary_emb" not in m and not (c["tied"] and m == "lm_head.weight")]
    if missing or unexpected:
        die("transformers' %s: missing %s, unexpected %s" % (architecture.__name__, missing, unexpected))
    with torch.no_grad():
        theirs = model(idx).logits
    err = ((theirs - logits).norm() / logits.norm()).item()
    if not err <= 1e-5:
        die("transformers %s's %s disagrees with this reference: relative error %g"
            % (transformers.__version__, architecture.__name__, err))
    print("llama_torch.py: transformers %s's %s agrees (relative error %.2g)"
          % (transformers.__version__, architecture.__name__, err))


def main():
    if len(sys.argv) != 2:
        die("usage: llama_torch.py DIR")
    d = sys.argv[1]
    c = read_config(d, INT_KEYS, FLOAT_KEYS)
    if c["n_head"] % c["n_kv_head"]:
        die("n_kv_head %d does not divide n_head %d" % (c["n_kv_head"], c["n_head"]))
    P = load_params(d, expected_shapes(c))
    train(d, c, P, forward, lambda idx, logits: check_with_transformers(P, c, idx, logits))


if __name__ == "__main__":
    main()
