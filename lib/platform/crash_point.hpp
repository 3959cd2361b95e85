// Test-only crash points (ARCHITECTURE.md, "Testing that proves robustness").
//
// SHMSTATE_CRASH_POINT("atom.after_write") makes the process _exit(kCrashExitCode)
// right there if a test armed that name with shmstate::testing::arm_crash_point()
// (include/shmstate/testing.hpp). With -Dcrash_points=disabled (release) the
// macro expands to nothing.
#pragma once

namespace shmstate::platform {
void crash_point_hit(const char* name) noexcept;
}

#if SHMSTATE_CRASH_POINTS
#define SHMSTATE_CRASH_POINT(name) ::shmstate::platform::crash_point_hit(name)
#else
#define SHMSTATE_CRASH_POINT(name) ((void)0)
#endif
