// Built by a project that includes Loom with add_subdirectory: a header from Loom's source tree
// and a message generated into the parent's build tree. Prints one line for
// tests/package/add_subdirectory_test.sh to check.
#include <cstdio>

#include "core/base/dtype.h"
#include "core/config.pb.h"

int main() {
  loom::config::RunConfig config;
  config.mutable_model()->set_n_layer(5);
  std::printf("parent: n_layer=%d n_head=%d bf16=%zu bytes\n", config.model().n_layer(),
              config.model().n_head(), loom::dtype_size(loom::DType::kBF16));
  return 0;
}
