// The shape and dtype contract of a Backend op, checked before it runs: one place for the
// messages every backend gives ("matmul_forward: weight is (64, 48) bf16, expected (64, 32) bf16").
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"

namespace loom::backend_checks {

// Rows of a row-major tensor (its first dimension) and the elements of one row.
int64_t rows(const Tensor& t);
int64_t cols(const Tensor& t);
bool present(const Tensor& t);

// Throws loom::Error naming the op and the argument unless `t` is present, has `dtype`, lives on
// `device` and has exactly `dims` (a 1-D tensor of n elements matches {n}; any tensor of
// dims[0] rows of dims[1] elements matches {rows, cols}).
void expect(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
            std::initializer_list<int64_t> dims);
// The same where the argument may be absent.
void expect_optional(const char* op, const char* name, const Tensor& t, DType dtype, Device device,
                     std::initializer_list<int64_t> dims);

}  // namespace loom::backend_checks
