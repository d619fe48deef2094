// Matmuls through cuBLASLt (bf16 in, fp32 accumulate) in torch.nn.Linear's row-major layout.
//
// cuBLAS is column-major, and a row-major (R, S) matrix is, read column-major, its transpose
// (S, R) with leading dimension S. So every row-major product is computed as its transpose:
//
//   forward   out (N, OC) = inp (N, C) @ W (OC, C)^T
//             column-major: D (m = OC, n = N) = op(A) op(B), k = C,
//             A = W seen as (C, OC) ld C, op = T  ->  (OC, C);
//             B = inp seen as (C, N) ld C, op = N;   D = out seen as (OC, N) ld OC.
//             The bias (OC) runs along D's rows (m), as cuBLASLt's bias epilogue wants; pre
//             (the GELU aux) has D's shape and leading dimension OC.
//   dinp      dinp (N, C) = dout (N, OC) @ W (OC, C)
//             column-major: D (m = C, n = N), k = OC, A = W seen as (C, OC) ld C, op = N;
//             B = dout seen as (OC, N) ld OC, op = N;   D = dinp seen as (C, N) ld C.
//   dweight   dweight (OC, C) += dout^T (OC, N) @ inp (N, C)
//             column-major: D (m = C, n = OC), k = N, A = inp seen as (C, N) ld C, op = N;
//             B = dout seen as (OC, N) ld OC, op = T -> (N, OC);   D = dweight seen as (C, OC)
//             ld C, fp32, beta = 1.
//
// In gemm() terms: A is stored (m, k) or, transposed, (k, m) with ld its row count; likewise B
// (k, n) or (n, k); D (m, n) ld m. Plans (descriptors, layouts, the heuristic's first algorithm)
// are cached per key; the bias and aux pointers are set on the cached descriptor at each call.
#include "kernels/cuda/matmul.h"

#include <initializer_list>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/gelu.h"

namespace loom::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

cudaDataType_t cuda_type(DType dtype) {
  return dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
}

// The largest power of two up to 256 dividing every non-null pointer's address.
int common_alignment(std::initializer_list<const void*> pointers) {
  uintptr_t bits = 256;
  for (const void* p : pointers) {
    if (p != nullptr) bits |= reinterpret_cast<uintptr_t>(p);
  }
  return static_cast<int>(bits & (~bits + 1));  // lowest set bit
}

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                   const T& value) {
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

}  // namespace

struct Matmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;
  cublasLtMatrixLayout_t b = nullptr;
  cublasLtMatrixLayout_t d = nullptr;  // C and D share it
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;  // chosen at the first run, once the pointers are set on desc
};

Matmul::Matmul(CachingAllocator& allocator) : allocator_(allocator) {
  LOOM_CUBLAS_CHECK(cublasLtCreate(&handle_));
  workspace_ = allocator_.allocate(kWorkspaceBytes);
  workspace_bytes_ = kWorkspaceBytes;
}

Matmul::~Matmul() {
  // Destructors do not throw: failures to destroy are ignored.
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan->a);
    cublasLtMatrixLayoutDestroy(plan->b);
    cublasLtMatrixLayoutDestroy(plan->d);
    cublasLtMatmulDescDestroy(plan->desc);
    delete plan;
  }
  allocator_.free(workspace_);
  cublasLtDestroy(handle_);
}

Matmul::Plan& Matmul::plan_for(const Key& key) {
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  const auto [m, n, k, transpose_a, transpose_b, epilogue, d_dtype, alignment] = key;
  auto* plan = new Plan;
  plans_.emplace(key, plan);  // owned from here on, also if a call below throws
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = transpose_a != 0 ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = transpose_b != 0 ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<cublasLtEpilogue_t>(epilogue));
  if (epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(m));
  }
  const auto rows_a = static_cast<uint64_t>(transpose_a != 0 ? k : m);
  const auto cols_a = static_cast<uint64_t>(transpose_a != 0 ? m : k);
  const auto rows_b = static_cast<uint64_t>(transpose_b != 0 ? n : k);
  const auto cols_b = static_cast<uint64_t>(transpose_b != 0 ? k : n);
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, rows_a, cols_a,
                                               static_cast<int64_t>(rows_a)));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, rows_b, cols_b,
                                               static_cast<int64_t>(rows_b)));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->d, cuda_type(static_cast<DType>(d_dtype)),
                                               static_cast<uint64_t>(m), static_cast<uint64_t>(n),
                                               static_cast<int64_t>(m)));
  (void)alignment;  // used by the heuristic query in run()
  return *plan;
}

void Matmul::run(int m, int n, int k, bool transpose_a, bool transpose_b, int epilogue,
                 DType d_dtype, void* d, const void* a, const void* b, const void* bias, void* aux,
                 float alpha, float beta, cudaStream_t stream) {
  const int alignment = common_alignment({d, a, b, bias, aux});
  LOOM_CHECK(alignment >= 16, "matmul: every pointer must be 16-byte aligned; their common alignment is",
             alignment, "bytes");
  const Key key{m, n, k, transpose_a ? 1 : 0, transpose_b ? 1 : 0, epilogue,
                static_cast<int>(d_dtype), alignment};
  Plan& plan = plan_for(key);
  if (bias != nullptr) set_attribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  if (aux != nullptr) set_attribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
  if (!plan.has_algo) {
    cublasLtMatmulPreference_t preference = nullptr;
    LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const auto workspace_bytes = static_cast<uint64_t>(workspace_bytes_);
    const auto min_alignment = static_cast<uint32_t>(alignment);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes));
    for (auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                           CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      if (status == CUBLAS_STATUS_SUCCESS) {
        status = cublasLtMatmulPreferenceSetAttribute(preference, attribute, &min_alignment,
                                                      sizeof(min_alignment));
      }
    }
    if (status == CUBLAS_STATUS_SUCCESS) {
      status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.d, plan.d,
                                              preference, 1, &result, &found);
    }
    cublasLtMatmulPreferenceDestroy(preference);
    LOOM_CUBLAS_CHECK(status);
    LOOM_CHECK(found > 0, "matmul: cuBLASLt has no algorithm for m", m, "n", n, "k", k,
               "transpose a", transpose_a, "transpose b", transpose_b, "epilogue", epilogue,
               "d dtype", dtype_name(d_dtype), "alignment", alignment);
    plan.algo = result.algo;
    plan.has_algo = true;
  }
  // C is D (beta = 0 does not read it; beta = 1 accumulates into it).
  LOOM_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, d,
                                   plan.d, d, plan.d, &plan.algo, workspace_, workspace_bytes_,
                                   stream));
}

void Matmul::forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias,
                     int N, int C, int OC, Epilogue epilogue, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul forward sizes must be positive: N", N, "C", C,
             "OC", OC);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr,
             "matmul forward: out, inp and weight must be non-null");
  LOOM_CHECK(epilogue == Epilogue::kNone || bias != nullptr,
             "matmul forward: the bias epilogue needs a bias");
  // out^T (OC, N) = (W as stored, (C, OC))^T @ inp^T (C, N): see the file comment.
  if (epilogue == Epilogue::kNone) {
    run(OC, N, C, true, false, CUBLASLT_EPILOGUE_DEFAULT, DType::kBF16, out, weight, inp, nullptr,
        nullptr, 1.0f, 0.0f, stream);
  } else if (epilogue == Epilogue::kBias) {
    run(OC, N, C, true, false, CUBLASLT_EPILOGUE_BIAS, DType::kBF16, out, weight, inp, bias,
        nullptr, 1.0f, 0.0f, stream);
  } else if (OC % 8 != 0) {
    // cuBLASLt's GELU aux leading dimension must be a multiple of 8; the GELU epilogue without
    // aux is not relied on for such shapes either. The sum goes to pre (or out), GELU follows.
    bf16* sum = pre != nullptr ? pre : out;
    run(OC, N, C, true, false, CUBLASLT_EPILOGUE_BIAS, DType::kBF16, sum, weight, inp, bias,
        nullptr, 1.0f, 0.0f, stream);
    bias_gelu_forward(out, nullptr, sum, nullptr, N, OC, stream);
  } else if (pre == nullptr) {
    run(OC, N, C, true, false, CUBLASLT_EPILOGUE_GELU_BIAS, DType::kBF16, out, weight, inp, bias,
        nullptr, 1.0f, 0.0f, stream);
  } else {
    run(OC, N, C, true, false, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, DType::kBF16, out, weight, inp,
        bias, pre, 1.0f, 0.0f, stream);
  }
}

void Matmul::backward(bf16* dinp, float* dweight, const bf16* dout, const bf16* inp,
                      const bf16* weight, int N, int C, int OC, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul backward sizes must be positive: N", N, "C", C,
             "OC", OC);
  LOOM_CHECK(dout != nullptr, "matmul backward: dout must be non-null");
  if (dinp != nullptr) {
    LOOM_CHECK(weight != nullptr, "matmul backward: dinp wanted but weight is null");
    // dinp^T (C, N) = W-as-stored (C, OC) @ dout^T (OC, N).
    run(C, N, OC, false, false, CUBLASLT_EPILOGUE_DEFAULT, DType::kBF16, dinp, weight, dout,
        nullptr, nullptr, 1.0f, 0.0f, stream);
  }
  if (dweight != nullptr) {
    LOOM_CHECK(inp != nullptr, "matmul backward: dweight wanted but inp is null");
    // dweight^T (C, OC) += inp^T (C, N) @ (dout^T (OC, N))^T.
    run(C, OC, N, false, true, CUBLASLT_EPILOGUE_DEFAULT, DType::kF32, dweight, inp, dout,
        nullptr, nullptr, 1.0f, 1.0f, stream);
  }
}

void Matmul::gemm(void* d, DType d_dtype, const bf16* a, const bf16* b, int m, int n, int k,
                  bool transpose_a, bool transpose_b, float alpha, float beta,
                  cudaStream_t stream) {
  LOOM_CHECK(m > 0 && n > 0 && k > 0, "gemm sizes must be positive: m", m, "n", n, "k", k);
  LOOM_CHECK(d != nullptr && a != nullptr && b != nullptr, "gemm: d, a and b must be non-null");
  LOOM_CHECK(d_dtype == DType::kF32 || d_dtype == DType::kBF16, "gemm: d must be f32 or bf16, not",
             dtype_name(d_dtype));
  run(m, n, k, transpose_a, transpose_b, CUBLASLT_EPILOGUE_DEFAULT, d_dtype, d, a, b, nullptr,
      nullptr, alpha, beta, stream);
}

}  // namespace loom::kernels::cuda
