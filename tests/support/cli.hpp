// Test support: run the built shmstate CLI (path in $SHMSTATE_CLI, which
// meson test sets) as a real process.
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support/run.hpp"

namespace test {

inline const std::string& cli_path() {
  static const std::string path = [] {
    const char* p = std::getenv("SHMSTATE_CLI");
    return std::string(p != nullptr ? p : "");
  }();
  return path;
}

// Runs `shmstate args...`.
inline RunResult shm(std::vector<std::string> args) {
  REQUIRE_MESSAGE(!cli_path().empty(), "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  args.insert(args.begin(), cli_path());
  return run(args);
}

// "status N, signal S" and both streams, for failure messages.
inline std::string describe(const RunResult& r) {
  return "status " + std::to_string(r.status) + ", signal " + std::to_string(r.signal) + "\n--- stdout:\n" + r.out +
         "--- stderr:\n" + r.err;
}

}  // namespace test
