#include "core/tensor.h"

#include "test_util.h"

namespace loom {
namespace {

TEST(TensorTest, OwningTensorIsZeroedAndSharedByCopies) {
  Tensor t = Tensor::zeros({3, 4});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_TRUE(t.owns_storage());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.f32()[i], 0.0f);
  Tensor copy = t;
  copy.f32()[5] = 2.5f;
  EXPECT_EQ(t.f32()[5], 2.5f);
}

TEST(TensorTest, ViewsAndSlicesPointIntoTheSameBytes) {
  float data[6] = {0, 1, 2, 3, 4, 5};
  Tensor v = Tensor::view(data, {3, 2});
  EXPECT_FALSE(v.owns_storage());
  Tensor rows = v.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), Shape({2, 2}));
  EXPECT_EQ(rows.f32()[0], 2.0f);
  rows.f32()[3] = 9.0f;
  EXPECT_EQ(data[5], 9.0f);
  Tensor flat = v.reshaped({6});
  EXPECT_EQ(flat.shape().str(), "(6)");
}

TEST(TensorTest, ContractViolationsCarryTheValues) {
  Tensor t = Tensor::zeros({4, 2});
  try {
    t.slice_rows(2, 7);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(4, 2)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.reshaped({3, 3}), Error);
  EXPECT_THROW(t.i32(), Error);
  EXPECT_THROW(Shape({2, -1}), Error);
}

TEST(TensorTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);  // exactly representable
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.00390625f)), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

}  // namespace
}  // namespace loom
