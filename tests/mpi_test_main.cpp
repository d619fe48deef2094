// main() of the multi-rank test binary. Every rank runs every test; rank 0 prints the usual
// GoogleTest output, other ranks print only their failures (prefixed with the rank), and the
// process exits non-zero if any test failed on this rank, which makes mpirun fail.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "mpi_test_util.h"
#include "parallel/mpi_communicator.h"

namespace loom::testing {
namespace {

std::unique_ptr<parallel::MpiCommunicator> g_world;  // owned by main for the process lifetime

class FailureOnlyPrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailureOnlyPrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_,
                   result.file_name() ? result.file_name() : "?", result.line_number(),
                   result.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace

parallel::Communicator& mpi_world() { return *g_world; }

}  // namespace loom::testing

int main(int argc, char** argv) {
  loom::parallel::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  loom::testing::g_world = loom::parallel::MpiCommunicator::world();
  const int rank = loom::testing::g_world->rank();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new loom::testing::FailureOnlyPrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  loom::testing::g_world.reset();
  return result;
}
