# One static library per layer, each compiled against an include root that holds only the folders
# the layer may see, so that an upward include fails to compile (docs/architecture.md, "How the
# build enforces the layering"). Included by CMakeLists.txt, which defines the layers with
# loom_add_layer() from the bottom up.
#
# The include root of a layer is a directory of the build tree, layers/<layer>/, that holds
# symbolic links to its own folders and to those of every layer below it:
#
#   layers/kernels/src/core/base -> <source>/core/base       layers/kernels/gen/core/base -> gen/core/base
#   layers/kernels/src/kernels   -> <source>/kernels         layers/kernels/gen/kernels   -> gen/kernels
#
# src/ for the sources, gen/ for the generated headers (*.pb.h, version_info.h) of the same
# folders. A folder is linked whole, so a new file or subfolder (core/backend/, core/model/) is
# seen at once, without configuring again. A layer's library puts its root on its PRIVATE include
# path and gives its users none: the layers link downward PRIVATE and each sees the others only
# through its own root. What is built on top of every layer (the tests, the benchmarks, `loom`,
# a project that uses Loom) links the umbrella target loom_lib, whose include directory is the
# source root.
#
# The roots cover `#include "core/gpt.h"`, the one form Loom uses; an include that climbs out of
# its folder with "../" would be found next to the including file and is refused by the test
# layering.upward_include_fails instead.

# Sources that need the CUDA toolkit live in cuda/ folders, are named *_cuda.cpp or nccl_*.cpp,
# or are *.cu. They are not part of their layer's library but of its CUDA part, an object library
# loom_<layer>_cuda_objects compiled against the same include root: the CUDA parts of all layers
# make the CUDA plugin libloom_cuda.so that `loom` loads for a GPU run, and the static libraries
# loom_cuda and loom_launch_cuda that everything else links (CMakeLists.txt, launch/cuda_plugin.h).
set(LOOM_CUDA_SOURCE_REGEX "(/cuda/|/nccl_[^/]*\\.cpp$|_cuda\\.cpp$|\\.cu$)")

# Warnings and optimisation for C++ sources; CUDA sources get nvcc's.
set(LOOM_CXX_FLAGS $<$<COMPILE_LANGUAGE:CXX>:${LOOM_WARNINGS}> $<$<COMPILE_LANGUAGE:CXX>:${LOOM_OPT_FLAGS}>)
if(LOOM_CUDA)
  set(LOOM_CUDA_FLAGS -O3 -lineinfo --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra)
  if(LOOM_WERROR)
    list(APPEND LOOM_CUDA_FLAGS -Werror=all-warnings)
  endif()
endif()

set(LOOM_LAYERS_ROOT ${PROJECT_BINARY_DIR}/layers)

# loom_layer_view(<layer> <folder>...): (re)creates layers/<layer>/{src,gen}/ with links to the
# folders. A folder inside another of the list (core/base inside core) is covered by it.
function(loom_layer_view layer)
  set(view ${LOOM_LAYERS_ROOT}/${layer})
  set(folders)
  foreach(folder ${ARGN})
    set(covered FALSE)
    foreach(other ${ARGN})
      string(FIND "${folder}" "${other}/" at)
      if(at EQUAL 0)
        set(covered TRUE)
      endif()
    endforeach()
    if(NOT covered)
      list(APPEND folders ${folder})
    endif()
  endforeach()
  # A link an earlier configure made for a folder the layer may no longer see goes (the link only:
  # the glob does not follow links, and file(REMOVE) of a link removes the link).
  file(GLOB_RECURSE existing LIST_DIRECTORIES true ${view}/*)
  foreach(path ${existing})
    file(RELATIVE_PATH rel ${view} ${path})
    string(REGEX REPLACE "^(src|gen)/" "" folder "${rel}")
    if(IS_SYMLINK ${path} AND NOT folder IN_LIST folders)
      file(REMOVE ${path})
    endif()
  endforeach()
  foreach(folder ${folders})
    if(NOT IS_DIRECTORY ${PROJECT_SOURCE_DIR}/${folder})
      message(FATAL_ERROR "loom layer ${layer}: no folder ${folder} in the source tree")
    endif()
    file(MAKE_DIRECTORY ${LOOM_PROTO_OUT}/${folder})
    foreach(kind src gen)
      if(kind STREQUAL "src")
        set(target ${PROJECT_SOURCE_DIR}/${folder})
      else()
        set(target ${LOOM_PROTO_OUT}/${folder})
      endif()
      get_filename_component(parent ${view}/${kind}/${folder} DIRECTORY)
      file(MAKE_DIRECTORY ${parent})
      # Replaces a link left by an earlier configure; fails (never copies) where links cannot be made.
      file(CREATE_LINK ${target} ${view}/${kind}/${folder} SYMBOLIC)
    endforeach()
  endforeach()
endfunction()

# loom_use_layer(<target> <layer>): compiles <target> as a source of <layer>: against the layer's
# include root, with the usage requirements of the layers below it, linked to them PRIVATE.
function(loom_use_layer target layer)
  target_include_directories(${target} PRIVATE ${LOOM_LAYERS_ROOT}/${layer}/src
                                               ${LOOM_LAYERS_ROOT}/${layer}/gen)
  foreach(below ${LOOM_LAYER_${layer}_BELOW})
    target_link_libraries(${target} PRIVATE loom_${below})
  endforeach()
  target_compile_options(${target} PRIVATE ${LOOM_CXX_FLAGS})
  if(LOOM_CUDA)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${LOOM_CUDA_FLAGS}>)
  endif()
endfunction()

# loom_add_layer(<layer> FOLDERS <folder>... [EXCLUDE <path>...] [BELOW <layer>...]): the static
# library loom_<layer> of every *.cpp under the folders, at any depth, but those under or equal to
# an EXCLUDE path and the CUDA sources; with LOOM_CUDA, those (and the *.cu) make the object
# library loom_<layer>_cuda_objects, position-independent for the plugin, and the layer joins the
# global list LOOM_CUDA_LAYERS. BELOW: every layer it may use, not only the next.
function(loom_add_layer layer)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "FOLDERS;EXCLUDE;BELOW")
  set(sources)
  foreach(folder ${arg_FOLDERS})
    file(GLOB_RECURSE found RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
         ${PROJECT_SOURCE_DIR}/${folder}/*.cpp ${PROJECT_SOURCE_DIR}/${folder}/*.cu)
    list(APPEND sources ${found})
  endforeach()
  foreach(path ${arg_EXCLUDE})
    list(FILTER sources EXCLUDE REGEX "^${path}(/|$)")
  endforeach()
  set(cuda_sources ${sources})
  list(FILTER cuda_sources INCLUDE REGEX "${LOOM_CUDA_SOURCE_REGEX}")
  list(FILTER sources EXCLUDE REGEX "${LOOM_CUDA_SOURCE_REGEX}")
  list(TRANSFORM sources PREPEND ${PROJECT_SOURCE_DIR}/)
  list(TRANSFORM cuda_sources PREPEND ${PROJECT_SOURCE_DIR}/)

  set(visible ${arg_FOLDERS})
  foreach(below ${arg_BELOW})
    if(NOT TARGET loom_${below})
      message(FATAL_ERROR "loom layer ${layer}: layer ${below} must be added before it")
    endif()
    list(APPEND visible ${LOOM_LAYER_${below}_FOLDERS})
  endforeach()
  set(LOOM_LAYER_${layer}_FOLDERS ${arg_FOLDERS} PARENT_SCOPE)
  set(LOOM_LAYER_${layer}_BELOW ${arg_BELOW} PARENT_SCOPE)
  set(LOOM_LAYER_${layer}_BELOW ${arg_BELOW})
  loom_layer_view(${layer} ${visible})

  add_library(loom_${layer} STATIC ${sources})
  loom_use_layer(loom_${layer} ${layer})
  set_property(GLOBAL APPEND PROPERTY LOOM_LAYER_TARGETS loom_${layer})
  if(LOOM_CUDA AND cuda_sources)
    add_library(loom_${layer}_cuda_objects OBJECT ${cuda_sources})
    loom_use_layer(loom_${layer}_cuda_objects ${layer})
    # The layer's own third-party headers (MPI for parallel/, ...), as its other sources see them.
    target_link_libraries(loom_${layer}_cuda_objects PRIVATE loom_${layer})
    set_target_properties(loom_${layer}_cuda_objects PROPERTIES POSITION_INDEPENDENT_CODE ON)
    set_property(GLOBAL APPEND PROPERTY LOOM_CUDA_LAYERS ${layer})
  endif()
endfunction()
