// Internal: an event count in shared memory (ARCHITECTURE.md, fact 2).
//
// Layout (8 bytes, both words 32-bit futex-able):
//   seq      bumped by every notify that finds a sleeper; sleepers FUTEX_WAIT on it
//   waiters  a set of "someone may be waiting" bits (kSleeperBit, ...), NOT a count
//
// Protocol (all seq_cst; a Dekker pair on the object's value and `waiters`.
// seq_cst is required, not just acquire/release: each side stores one
// location and then loads the other, a StoreLoad pattern only a single total
// order makes safe. Whoever publishes the value must also do it seq_cst, or
// with a seq_cst RMW; see atom.hpp and atomic.hpp. The read of `seq` comes
// before the bit is set, so a notify that clears the bit after the waiter set
// it bumps seq past the value the waiter will sleep on):
//   waiter, every slice:  s = seq; arm (set kSleeperBit unless set);
//                         if (done()) stop; FUTEX_WAIT(seq, s, slice)
//   notifier:             <publish the change>;
//                         if (waiters != 0) { bits = waiters.exchange(0);
//                                             if (bits & kSleeperBit) { seq++; FUTEX_WAKE(seq, all) } }
// Why no wake-up is lost: either the notifier's load of `waiters` comes after
// the waiter armed (it wakes, and its seq++ comes after the waiter read s, so
// the waiter's FUTEX_WAIT returns at once or is woken), or it comes before,
// and then the waiter's done() (after arming) sees the published change. A
// notifier clears every bit it acts on; sleepers it wakes re-arm before their
// next sleep, so a live waiter is never left unarmed while it sleeps.
//
// Why a dead waiter costs nothing lasting (issue 6, item 3): nothing is per
// waiter. A waiter killed while armed leaves its bit set until the next
// notify, which clears it and pays one FUTEX_WAKE; from then on nobody
// re-arms, and notifies are back to one load. (The former design counted
// waiters, and a killed waiter left the count high for good: every later
// write paid a syscall, 12 ns -> 4.4 us per add_and_get.)
//
// A notifier killed between clearing the bits and the wake is covered by
// waiters sleeping in bounded slices (kWaitSlice) and re-checking.
//
// Cost: the common case (nobody waits) is one load of `waiters` for the
// notifier, and no store: keep the event count off the value's cache line
// where writers are hot (AtomicState gives it a line of its own).
#pragma once

#include <shmstate/config.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace shmstate::detail {

struct EventCount {
  // A thread or process is (or is about to be) asleep on `seq`.
  static constexpr std::uint32_t kSleeperBit = 1u << 0;

  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;

  void notify_all() noexcept {
    if (has_waiters()) notify_all_slow();
  }
  // The notifier's fast-path test: one load, and no store, when nobody waits.
  bool has_waiters() const noexcept { return waiters.load(std::memory_order_seq_cst) != 0; }
  // Clears every bit and wakes every sleeper (counted in
  // testing::slow_notify_count()).
  void notify_all_slow() noexcept;

  // The first half of one sleep slice: reads the sequence, then sets `bit`
  // (only when not already set: a waiter that re-arms every slice does not
  // write a line that notifiers keep reading). The caller then checks its
  // predicate and, if still false, sleeps while seq == the returned value.
  // (Out of line: the waiter's path, about to sleep anyway; test builds run
  // testing::after_next_arm's hook here.)
  std::uint32_t arm(std::uint32_t bit = kSleeperBit) noexcept;

  // Blocks until done() returns true (returns true) or the deadline passes
  // (returns false after one last check). done() is called with no lock held
  // and must be cheap; it may be called many times. A change published
  // without a notify (its notifier died) is seen within one kWaitSlice.
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
