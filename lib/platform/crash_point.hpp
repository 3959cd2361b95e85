// Test-only crash points (docs/design.md, "Testing that proves robustness").
//
// SHMSTATE_CRASH_POINT("atom.after_write") makes the process _exit(kCrashExitCode)
// right there if a test armed that name with shmstate::testing::arm_crash_point()
// (include/shmstate/testing.hpp). Only builds with -Dtest_hooks=true have
// them; elsewhere (the default, and every installed library) the macro
// expands to nothing and crash_point.cpp is not compiled.
#pragma once

#if SHMSTATE_TEST_HOOKS
namespace shmstate::platform {
void crash_point_hit(const char* name) noexcept;
}
#define SHMSTATE_CRASH_POINT(name) ::shmstate::platform::crash_point_hit(name)
#else
#define SHMSTATE_CRASH_POINT(name) ((void)0)
#endif
