# Writes the header of Loom's version and the git commit its sources are at, for
# core/base/version.cpp. Run at every build (cmake -P, by the loom_version_header target) with
# SOURCE_DIR, GIT (the git executable; empty when there is none), VERSION, TEMPLATE and OUTPUT.
# configure_file leaves OUTPUT untouched when its text is unchanged, so only a new commit, or a
# tree that became dirty or clean, recompiles anything.

set(LOOM_COMMIT "unknown commit")
# Only Loom's own repository counts: a Loom unpacked from a tarball inside another project's
# checkout would otherwise report that project's commit. (.git is a file in a worktree or a
# submodule; EXISTS is true for both.)
if(GIT AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT}" -C "${SOURCE_DIR}" rev-parse --short HEAD
                  OUTPUT_VARIABLE hash OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE rc ERROR_QUIET)
  if(rc EQUAL 0 AND hash)
    set(LOOM_COMMIT "${hash}")
    # Tracked files only: a build directory or a scratch file in the tree changes no source.
    # --no-optional-locks: a build must not take the index lock from a git command running beside it.
    execute_process(COMMAND "${GIT}" --no-optional-locks -C "${SOURCE_DIR}" status --porcelain
                            --untracked-files=no
                    OUTPUT_VARIABLE changes RESULT_VARIABLE rc ERROR_QUIET)
    if(NOT rc EQUAL 0 OR changes)
      string(APPEND LOOM_COMMIT "-dirty")
    endif()
  endif()
endif()
configure_file("${TEMPLATE}" "${OUTPUT}" @ONLY)
