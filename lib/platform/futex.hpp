// A futex wrapper for 32-bit words in shared memory (folly/detail/Futex.h in
// spirit). Never FUTEX_PRIVATE_FLAG: the waiter and the waker are usually in
// different processes, each with its own mapping of the word (ARCHITECTURE.md,
// fact 3: std::atomic::wait does not work across processes).
//
// After any return the atomic word is the truth, not the result: spurious
// wake-ups happen, and callers always re-check their predicate.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shmstate::platform {

enum class FutexResult {
  Woken,         // a wake (or a spurious return) ended the wait
  ValueChanged,  // *word != expected when the kernel looked (EAGAIN)
  TimedOut,      // the relative timeout elapsed
  Interrupted,   // a signal handler ran (EINTR)
};

// Sleeps while *word == expected, at most `timeout` (relative, CLOCK_MONOTONIC).
// A negative or zero timeout returns TimedOut at once without a syscall.
FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout) noexcept;

// Sleeps until any of `words[i]` != `expected[i]`, a wake on any of them, or
// the timeout (at most 128 words; futex_waitv, Linux 5.16+). Returns
// Unsupported... as TimedOut after sleeping min(timeout, 10 ms) on a kernel
// without futex_waitv, so callers that re-check in a loop still work.
FutexResult futex_wait_any(const std::atomic<std::uint32_t>* const* words, const std::uint32_t* expected,
                           unsigned count, std::chrono::nanoseconds timeout) noexcept;

// Wakes up to `count` waiters on `word`; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;

}  // namespace shmstate::platform
