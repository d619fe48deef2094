# Loom's dependencies, found the same way for Loom's own build (CMakeLists.txt includes this file)
# and for a project that uses an installed Loom (the installed LoomConfig.cmake includes its copy),
# so that find_package(Loom) hands on what the build linked. All come from Debian packages (see
# scripts/setup.sh). Packages that ship a CMake module are found with find_package; the libraries
# that ship none are found by hand and given imported targets, Loom::<name>, which the layers'
# libraries, loom_lib and loom_proto link by name (an absolute path would be frozen into the
# installed package).
#
# Reads LOOM_CUDA (the CUDA toolkit and NCCL are needed only then) and LOOM_FINDING_INSTALLED (set
# by LoomConfig.cmake: a missing dependency then makes find_package(Loom) report "not found",
# honouring the caller's QUIET and REQUIRED, instead of stopping CMake).

if(LOOM_FINDING_INSTALLED)
  include(CMakeFindDependencyMacro)
endif()

# find_dependency returns from this file when the package is missing; LoomConfig.cmake then sees
# Loom_FOUND set to false.
macro(loom_find_package name)
  if(LOOM_FINDING_INSTALLED)
    find_dependency(${name} ${ARGN})
  else()
    find_package(${name} REQUIRED ${ARGN})
  endif()
endmacro()

macro(loom_dependency_missing what debian_package)
  set(_loom_missing_message
      "${what} not found: install the Debian package ${debian_package} (Loom's scripts/setup.sh does)")
  if(LOOM_FINDING_INSTALLED)
    set(Loom_FOUND FALSE)
    set(Loom_NOT_FOUND_MESSAGE "${_loom_missing_message}")
    return()
  endif()
  message(FATAL_ERROR "${_loom_missing_message}")
endmacro()

# A library without a CMake package, as an imported target (once: a project may both find an
# installed Loom and include this file again).
function(loom_import_library target library include_dir)
  if(NOT TARGET ${target})
    add_library(${target} UNKNOWN IMPORTED)
    set_target_properties(${target} PROPERTIES IMPORTED_LOCATION "${library}"
                                               INTERFACE_INCLUDE_DIRECTORIES "${include_dir}")
  endif()
endfunction()

loom_find_package(OpenMP)
loom_find_package(MPI COMPONENTS CXX)
loom_find_package(Protobuf)
loom_find_package(ICU COMPONENTS uc i18n)
if(LOOM_CUDA)
  loom_find_package(CUDAToolkit)
endif()

# Protobuf is linked statically and its symbols kept out of the executables' exports: Debian's
# libsentencepiece carries its own protobuf (3.14) and exports it; were ours (3.21) visible, the
# dynamic linker would bind SentencePiece to it and SentencePiece would abort on the version.
find_library(PROTOBUF_STATIC_LIBRARY libprotobuf.a)
if(NOT PROTOBUF_STATIC_LIBRARY)
  loom_dependency_missing("libprotobuf.a" libprotobuf-dev)
endif()
loom_import_library(Loom::protobuf_static "${PROTOBUF_STATIC_LIBRARY}" "${Protobuf_INCLUDE_DIRS}")
set_property(TARGET Loom::protobuf_static PROPERTY INTERFACE_LINK_OPTIONS "LINKER:--exclude-libs,libprotobuf.a")

# OpenBLAS's OpenMP build shares one thread pool with our OpenMP kernels; the pthread build
# keeps a second pool of spinning threads that fight them for the cores. The CPU matmul also
# relies on it: its tiles call sgemm from inside a parallel region, where this build runs the
# call on one thread (kernels/cpu/matmul.cpp).
find_path(OPENBLAS_INCLUDE_DIR cblas.h NO_DEFAULT_PATH
  PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
find_library(OPENBLAS_LIBRARY openblas NO_DEFAULT_PATH
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  loom_dependency_missing("OpenBLAS (OpenMP build)" libopenblas-openmp-dev)
endif()
loom_import_library(Loom::openblas "${OPENBLAS_LIBRARY}" "${OPENBLAS_INCLUDE_DIR}")

find_path(XXHASH_INCLUDE_DIR xxhash.h)
find_library(XXHASH_LIBRARY xxhash)
if(NOT XXHASH_INCLUDE_DIR OR NOT XXHASH_LIBRARY)
  loom_dependency_missing("xxHash" libxxhash-dev)
endif()
loom_import_library(Loom::xxhash "${XXHASH_LIBRARY}" "${XXHASH_INCLUDE_DIR}")

# Tokenizers: SentencePiece (encode and train); ICU (above) gives the Unicode categories of
# GPT-2's pre-tokenizer, NFC, and the regular expressions of tokenizer.json's Split (i18n).
find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
find_library(SENTENCEPIECE_LIBRARY sentencepiece)
find_library(SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train)
if(NOT SENTENCEPIECE_INCLUDE_DIR OR NOT SENTENCEPIECE_LIBRARY OR NOT SENTENCEPIECE_TRAIN_LIBRARY)
  loom_dependency_missing("SentencePiece" libsentencepiece-dev)
endif()
loom_import_library(Loom::sentencepiece "${SENTENCEPIECE_LIBRARY}" "${SENTENCEPIECE_INCLUDE_DIR}")
loom_import_library(Loom::sentencepiece_train "${SENTENCEPIECE_TRAIN_LIBRARY}" "${SENTENCEPIECE_INCLUDE_DIR}")
set_property(TARGET Loom::sentencepiece_train PROPERTY INTERFACE_LINK_LIBRARIES Loom::sentencepiece)

# Compressed inputs of `loom prepare`: gzip (zlib) and zstd.
loom_find_package(ZLIB)
find_path(ZSTD_INCLUDE_DIR zstd.h)
find_library(ZSTD_LIBRARY zstd)
if(NOT ZSTD_INCLUDE_DIR OR NOT ZSTD_LIBRARY)
  loom_dependency_missing("zstd" libzstd-dev)
endif()
loom_import_library(Loom::zstd "${ZSTD_LIBRARY}" "${ZSTD_INCLUDE_DIR}")

if(LOOM_CUDA)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
               ${CUDAToolkit_TARGET_DIR}/lib)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  if(NOT NCCL_LIBRARY OR NOT NCCL_INCLUDE_DIR)
    if(LOOM_FINDING_INSTALLED)
      loom_dependency_missing("NCCL (this Loom was built with CUDA)" libnccl-dev)
    endif()
    message(FATAL_ERROR "LOOM_CUDA=ON but NCCL was not found next to the CUDA toolkit; "
                        "install NCCL or configure with -DLOOM_CUDA=OFF")
  endif()
  loom_import_library(Loom::nccl "${NCCL_LIBRARY}" "${NCCL_INCLUDE_DIR}")
endif()
