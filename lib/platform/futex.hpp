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

// The most words one futex_waitv takes (FUTEX_WAITV_MAX).
inline constexpr unsigned kWaitvMax = 128;

// Sleeps until any of `words[i]` != `expected[i]`, a wake on any of them, or
// the timeout: one futex_waitv (Linux 5.16+) for up to kWaitvMax words. More words
// are split into parts of 127: the caller sleeps on the first part, helper
// threads of this process (made on demand, kept for later waits) on the
// others, each part also on a process-local word that the first part to
// return sets and wakes (futex.cpp). A word in a helper's part thus reaches
// the caller through two wake-ups. On a kernel without futex_waitv, or when
// no helper thread can be made, it sleeps at most 10 ms and returns
// TimedOut, so callers that re-check in a loop still work.
FutexResult futex_wait_any(const std::atomic<std::uint32_t>* const* words, const std::uint32_t* expected,
                           unsigned count, std::chrono::nanoseconds timeout) noexcept;

// Wakes up to `count` waiters on `word`; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;

}  // namespace shmstate::platform
