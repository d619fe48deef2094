// Names of the communication kinds and the per-kind traffic counters of communicator.h.
#include "parallel/communicator.h"

#include "core/base/check.h"

namespace loom::parallel {

const char* comm_op_name(CommOp op) {
  switch (op) {
    case CommOp::kAllReduce: return "all_reduce";
    case CommOp::kAllGather: return "all_gather";
    case CommOp::kReduceScatter: return "reduce_scatter";
    case CommOp::kBroadcast: return "broadcast";
    case CommOp::kSend: return "send";
    case CommOp::kRecv: return "recv";
    case CommOp::kBarrier: return "barrier";
    case CommOp::kCount: break;
  }
  return "?";
}

uint64_t CommStats::total_bytes() const {
  uint64_t total = 0;
  for (uint64_t b : bytes) total += b;
  return total;
}

void CommStats::add(CommOp op, uint64_t nbytes) {
  const int index = static_cast<int>(op);
  LOOM_CHECK(index >= 0 && index < static_cast<int>(CommOp::kCount), "comm op", index,
             "is not a kind of operation");
  calls[index] += 1;
  bytes[index] += nbytes;
}

}  // namespace loom::parallel
