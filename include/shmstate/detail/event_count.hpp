// Internal: an event count in shared memory (ARCHITECTURE.md, fact 2).
//
// Layout (8 bytes, both words 32-bit futex-able):
//   seq      incremented by every notify that finds a waiter; waiters sleep on it
//   waiters  number of processes/threads between prepare and the end of a wait
//
// Protocol (all seq_cst, a Dekker pair on `value` and `waiters`):
//   waiter:   waiters++; loop { s = seq; if (done()) break; FUTEX_WAIT(seq, s) }; waiters--
//   notifier: <publish the change>; if (waiters != 0) { seq++; FUTEX_WAKE(seq, all) }
// Either the notifier sees waiters != 0, or the waiter's done() sees the change.
// The common case (nobody waits) costs the notifier one load of a word on the
// same cache line as the value, and no syscall.
//
// Death: a waiter killed while waiting leaves `waiters` one too high; that only
// makes later notifies take the syscall path, it never blocks anyone. A
// notifier killed between seq++ and the wake is covered by waiters sleeping in
// bounded slices (kWaitSlice) and re-checking.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace shmstate::detail {

struct EventCount {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;

  void notify_all() noexcept {
    if (waiters.load(std::memory_order_seq_cst) != 0) notify_all_slow();
  }
  void notify_all_slow() noexcept;

  // Blocks until done() returns true (returns true) or the deadline passes
  // (returns false after one last check). done() is called with no lock held
  // and must be cheap; it may be called many times.
  bool wait_until(const std::function<bool()>& done,
                  std::chrono::steady_clock::time_point deadline) noexcept;
};
static_assert(sizeof(EventCount) == 8);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Longest single sleep; bounds how late a waiter notices a change whose
// notifier died between publishing and waking.
inline constexpr std::chrono::milliseconds kWaitSlice{100};

// steady_clock::now() + timeout without overflow for huge timeouts.
std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept;

}  // namespace shmstate::detail
