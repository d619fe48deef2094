// Who this process is, for error messages that must say where a failure happened: the host name
// and the world rank ("world rank 3 on host node07"; only "on host node07" for a process on its
// own, before MPI is initialised or after it is finalised).
#pragma once

#include <string>

namespace loom {

std::string host_name();
std::string this_process();

}  // namespace loom
