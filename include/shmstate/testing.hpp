// shmstate/testing.hpp: hooks for robustness tests. Not for production use.
//
// A crash point is a named step inside a library operation
// ("registry.after_reserve", ...). After arm_crash_point(name), the calling
// process _exit()s with kCrashExitCode when it reaches that step, leaving
// shared state exactly as a SIGKILL there would. Tests arm a point in a forked
// child, run an operation, and check what the surviving processes see.
// The list of points is in README.md ("Crash points").
//
// Only in builds with -Dtest_hooks=true (tools/test.sh); never installed.
#pragma once

#if !SHMSTATE_TEST_HOOKS
#error "<shmstate/testing.hpp> exists only in builds with -Dtest_hooks=true (this project's tests)"
#endif

#include <cstdint>

namespace shmstate::testing {

inline constexpr int kCrashExitCode = 86;

void arm_crash_point(const char* name) noexcept;
void disarm_crash_point() noexcept;

// Runs fn once, in the thread that next reaches crash point `name` (instead
// of exiting there; an armed crash point of the same name still exits). For
// tests that need another thread or process to act inside that window.
void at_next_point(const char* name, void (*fn)()) noexcept;

// How many times this process's notifiers took the slow path (found a
// waiter bit set and went to clear it and wake), since the process started.
std::uint64_t slow_notify_count() noexcept;

// How many times this process's go()s (signals, and the words of local
// signals and ProcessExits) found the sleeper bit set and paid a FUTEX_WAKE.
std::uint64_t signal_wake_count() noexcept;

// How many passes the watch dispatcher thread of this process has begun
// (each: arm every watched word, deliver, sleep). A dispatcher that sleeps
// while nothing changes makes no pass then (issue 13).
std::uint64_t dispatcher_pass_count() noexcept;

// How many watched atoms the watch dispatcher of this process has visited
// (armed and checked for a change), summed over its passes. A wake-up for
// one changed atom visits that atom's bucket of the segment's watch summary,
// not every watched atom (issue 13).
std::uint64_t dispatcher_visit_count() noexcept;

// How many of those visits read the atom's value (found its version past the
// one this process delivered last). The other visits cost two loads: no
// lock, no copy, no JSON parse (issue 13).
std::uint64_t dispatcher_read_count() noexcept;

// How many passes this process's waits (detail::wait_any: Condition waits,
// and every wait with a `till`) have begun, each one sleep on all its words
// at once; a wait that polls makes one pass per poll (issue 13).
std::uint64_t wait_pass_count() noexcept;

// How many times this process's robust-mutex lockers (every critical section
// of atoms, FifoLocks, Monitors, the registry) called the blocking lock
// without having seen the mutex free in their spin (so most likely slept in
// the kernel), counting each further 100 ms slice too.
std::uint64_t robust_mutex_block_count() noexcept;

// How many waits on more than 128 words this process has handed to
// futex_wait_any's helper threads (each such sleep is one round: the caller
// on 127 words, helpers on the rest). A wide wait on signals of a few
// segments sleeps on their watch summaries instead and makes none (issue 13).
std::uint64_t futex_helper_round_count() noexcept;

// How many /proc/<pid>/stat reads (liveness checks) this process has made.
std::uint64_t proc_stat_read_count() noexcept;

// How many FUTEX_WAKEs this process's FifoLock grants have issued (one per
// granted waiter that had announced it was asleep; issue 8).
std::uint64_t fifo_lock_wake_count() noexcept;

// Runs fn once, the next time a thread of this process arms an event count
// (a waiter that has read the sequence and set its bit, and has not yet
// re-checked its predicate) or a one-shot word (a signal, local signal or
// ProcessExit: the word read and its sleeper bit set); then fn is cleared.
// For tests of that re-check: fn makes the predicate true without a notify
// (issue 12, item 2). A wait arms its own words first, then its till's, in
// order, so fn can also fire a part armed after the one that ran it.
void after_next_arm(void (*fn)()) noexcept;

}  // namespace shmstate::testing
