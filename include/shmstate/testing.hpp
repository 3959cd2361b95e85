// shmstate/testing.hpp: hooks for robustness tests. Not for production use.
//
// A crash point is a named step inside a library operation
// ("registry.after_reserve", ...). After arm_crash_point(name), the calling
// process _exit()s with kCrashExitCode when it reaches that step, leaving
// shared state exactly as a SIGKILL there would. Tests arm a point in a forked
// child, run an operation, and check what the surviving processes see.
// The list of points is in README.md ("Crash points").
#pragma once

#include <cstdint>

namespace shmstate::testing {

inline constexpr int kCrashExitCode = 86;

// False when the library was built with -Dcrash_points=disabled.
bool crash_points_compiled() noexcept;

void arm_crash_point(const char* name) noexcept;
void disarm_crash_point() noexcept;

// How many times this process's notifiers took the slow path (found a
// waiter bit set and went to clear it and wake), since the process started.
// Counted only where crash points are compiled (crash_points_compiled());
// always 0 elsewhere.
std::uint64_t slow_notify_count() noexcept;

}  // namespace shmstate::testing
