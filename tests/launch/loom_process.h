// Runs the `loom` executable as a child process for end-to-end tests, and checks the contract for
// bad input: exit code 2 and one line on stderr naming the problem (never a crash).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace loom::testing {

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
  std::string err;  // stderr alone
};

// `args` goes through the shell, so it may redirect standard input ("... < file"); `env`, if
// given, is a list of NAME=VALUE assignments for loom's environment (as a launcher would set).
inline RunResult run_loom_env(const std::string& env, const std::string& args) {
  namespace fs = std::filesystem;
  const fs::path err_file = fs::temp_directory_path() / ("loom_cli_err_" + std::to_string(::getpid()));
  const std::string command =
      (env.empty() ? "" : "env " + env + " ") + std::string(LOOM_BINARY) + " " + args + " 2>" + err_file.string();
  RunResult r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(err_file);
  r.err.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(err_file);
  r.out += r.err;
  return r;
}

inline RunResult run_loom(const std::string& args) { return run_loom_env("", args); }

// The contract for bad input: exit 2, one line on stderr that contains `needle`.
inline void expect_user_error(const std::string& args, const std::string& needle) {
  RunResult r = run_loom(args);
  EXPECT_EQ(r.exit_code, 2) << "loom " << args << "\n" << r.out;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "loom " << args << "\nstderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected:\n" << r.err;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
}

}  // namespace loom::testing
