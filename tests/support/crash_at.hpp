// Test support: run a step in a child process that must die at a crash point.
#pragma once

#if SHMSTATE_TEST_HOOKS  // crash points need a build with -Dtest_hooks=true
#include <chrono>

#include <doctest/doctest.h>

#include <shmstate/testing.hpp>

#include "support/proc.hpp"

namespace test {

// Runs `body` in a child with crash point `point` armed; it must die there
// (within 10 s).
template <class Body>
void crash_at(const char* point, Body body) {
  Child c([&] {
    shmstate::testing::arm_crash_point(point);
    body();
    return 0;
  });
  REQUIRE(c.exit_code_within(std::chrono::seconds(10)) == shmstate::testing::kCrashExitCode);
}

}  // namespace test
#endif
