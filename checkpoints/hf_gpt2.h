// GPT-2 in Hugging Face's names and layout, as safetensors: a one-rank Loom GPT to and from the
// tensors of transformers' GPT2Model (what the `gpt2` hub repository's model.safetensors holds).
//
// Names: wte -> wte.weight, wpe -> wpe.weight; every other Loom name is already HF's
// (h.{i}.ln_1.weight, h.{i}.attn.c_attn.bias, ..., ln_f.bias). HF's four projections per block
// (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are Conv1D modules, y = x @ W + b with W
// (in, out); Loom stores W as (out, in) (y = x @ W^T + b), so those weights are transposed both
// ways. The fused QKV needs no reordering: Loom's rows and HF's columns are both q | k | v, each
// n_embd wide, head h at [h*HS, (h+1)*HS) within each part (kernels/cpu/attention.h; HF splits
// c_attn's output into three n_embd parts, then each into n_head heads of HS). The output
// projection is tied to wte and not stored, as in GPT2Model.
//
// Reading also accepts GPT2LMHeadModel's names ("transformer." prefix), ignores its lm_head.weight
// and the attention mask buffers (attn.bias, attn.masked_bias), and converts BF16 and F16 to f32.
#pragma once

#include <string>

#include "checkpoints/safetensors.h"
#include "core/gpt.h"

namespace loom {

// Writes `model` (one rank holding every tensor) to `path`, with n_head, n_layer, n_embd,
// vocab_size and n_positions (and format "pt", which transformers requires) in __metadata__.
void save_hf_gpt2(const std::string& path, const GPT& model);

// The model shape `file`'s tensors imply: n_layer, n_embd, vocab_size and max_seq_len from the
// shapes; n_head from the __metadata__ entry "n_head", or `n_head` when not 0 (both: they must
// agree). UserError naming the file (and tensor) when the tensors are not a GPT-2, when the
// metadata disagrees with the shapes, or when n_head is known from neither.
GPTConfig hf_gpt2_config_of(const SafetensorsFile& file, int n_head = 0);

// Copies the file's tensors into `model` (one rank holding every tensor): every tensor must be
// present with the shape the model implies. UserError naming the file and tensor otherwise.
void load_hf_gpt2(const SafetensorsFile& file, GPT& model);

}  // namespace loom
