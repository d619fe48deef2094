# What `cmake --install` puts under the prefix, included by CMakeLists.txt when LOOM_INSTALL is on:
#   bin/loom
#   lib/libloom_base.a, libloom_kernels.a, libloom_parallel.a, libloom_core.a, libloom_data.a,
#       libloom_checkpoints.a, libloom_launch.a (one per layer), libloom_proto.a
#   lib/libloom_cuda.so            with CUDA: the plugin bin/loom loads for a GPU run (found at
#                                  ../lib from bin/, launch/cuda_plugin.h); libloom_cuda.a and
#                                  libloom_launch_cuda.a, the same code for projects that link Loom
#   include/loom/...               the headers of core/ kernels/ parallel/ data/ checkpoints/ launch/
#                                  and the generated *.pb.h, in the source tree's layout
#   lib/cmake/Loom/                LoomConfig.cmake, LoomConfigVersion.cmake, LoomTargets*.cmake
#                                  and LoomDependencies.cmake, for find_package(Loom)
# The headers go under include/loom rather than include/ because their folders have generic names
# (core/, data/); include/loom is the installed targets' include directory, so that
# `#include "core/tensor.h"` means the same inside Loom and in a project that uses it.
include(CMakePackageConfigHelpers)

set(LOOM_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Loom)

# Installed, `loom` and the CUDA plugin find the libraries outside the system's paths (MPI's,
# OpenBLAS's; CUDA's, NCCL's) where the build found them.
set_target_properties(loom PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
# loom_lib, the umbrella of the layers below launch/, is an interface target: no file of its own.
get_property(LOOM_LAYER_TARGETS GLOBAL PROPERTY LOOM_LAYER_TARGETS)
set(LOOM_CUDA_TARGETS)
if(LOOM_CUDA)
  set_target_properties(loom_cuda_plugin PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
  set(LOOM_CUDA_TARGETS loom_cuda loom_launch_cuda)
  install(TARGETS loom_cuda_plugin LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(TARGETS loom loom_lib ${LOOM_LAYER_TARGETS} ${LOOM_CUDA_TARGETS} loom_proto EXPORT LoomTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})

# Every header of the library folders, those of the CUDA parts too (they need LOOM_HAS_CUDA,
# which an installed Loom built with CUDA defines for its users).
file(GLOB_RECURSE LOOM_INSTALL_HEADERS RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
     core/*.h core/*.cuh kernels/*.h kernels/*.cuh parallel/*.h data/*.h checkpoints/*.h launch/*.h)
foreach(header ${LOOM_INSTALL_HEADERS} ${LOOM_PROTO_HEADERS})
  get_filename_component(folder ${header} DIRECTORY)
  if(header MATCHES "\\.pb\\.h$")
    set(header ${LOOM_PROTO_OUT}/${header})
  endif()
  install(FILES ${header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loom/${folder})
endforeach()

install(EXPORT LoomTargets NAMESPACE Loom:: DESTINATION ${LOOM_INSTALL_CMAKEDIR})
set(LOOM_CUDA_TOOLKIT_ROOT "")
if(LOOM_CUDA)
  get_filename_component(LOOM_CUDA_TOOLKIT_ROOT "${CUDAToolkit_BIN_DIR}" DIRECTORY)
endif()
configure_package_config_file(cmake/LoomConfig.cmake.in ${PROJECT_BINARY_DIR}/LoomConfig.cmake
                              INSTALL_DESTINATION ${LOOM_INSTALL_CMAKEDIR})
# 0.x releases change the interface between minor versions: find_package(Loom 0.1) takes 0.1.*.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/LoomConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/LoomConfig.cmake ${PROJECT_BINARY_DIR}/LoomConfigVersion.cmake
              cmake/LoomDependencies.cmake
        DESTINATION ${LOOM_INSTALL_CMAKEDIR})
