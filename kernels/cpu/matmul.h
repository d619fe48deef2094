// Matmul with bias, the layout of torch.nn.Linear: out = inp @ weight^T + bias (OpenBLAS sgemm).
#pragma once

namespace loom::kernels::cpu {

// inp (N, C); weight (OC, C); bias (OC) or null; out (N, OC) is overwritten.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC);

// Accumulates: dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp;
// dbias (OC) += sum over rows of dout. Any of dinp, dweight, dbias may be null (not wanted).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC);

}  // namespace loom::kernels::cpu
