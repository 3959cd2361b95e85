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
// kWatchBit (issue 13): "a watch dispatcher watches this atom through its
// segment's watch summary" (layout.hpp, WatchSummary). The dispatcher does
// not sleep on this event count: it sleeps on the summary's event count
// (one word per segment) and, per pass:
//   s = summary.seq; arm summary (kSleeperBit)              [1]
//   for each bucket b whose counter moved since its last look (all of them
//   in a full pass; only buckets holding an atom it watches): copy counter[b];  [2]
//     for each watched atom of b: arm(kWatchBit); check its version   [3]
//   FUTEX_WAIT(summary.seq, s)
// The check of [3] is one seq_cst load of the atom's published word,
// compared with the last version this process delivered (a process-local
// number, at most behind the truth): an unchanged atom costs that load and
// arm()'s loads, no lock and no read of its value; only a moved one is read
// and delivered.
// The atom's notifier, after publishing, takes the slow path only when a bit
// is set (the no-waiter fast path stays one load): bits = waiters.exchange(0);
// if (bits & kWatchBit) { counter[b]++; summary.notify_all() }. Why no change
// is lost, with every step seq_cst: either the notifier's load of the atom's
// `waiters` comes after the dispatcher's [3] (bit set; or seen set there,
// from an earlier arm, and then not cleared in between, else that clearing
// notifier's own counter bump and summary notify come after [1] too): it
// bumps counter[b] and then notifies the summary, whose sleeper bit [1]
// precedes it, so summary.seq moves past s (this notifier's bump, or that of
// whichever notifier cleared the bit after [1]) and the wait returns; the
// next pass re-arms [1] before reading counter[b] [2], so it sees the bump,
// or the bump comes after that re-arm and notifies it again. Or the load
// comes before [3], and then [3]'s version check sees the published change.
// Every bit a notifier clears is re-set by the dispatchers that still watch
// (they find the bucket moved); nothing in the summary is consumed by a
// reader, so any number of processes' dispatchers share it. A notifier
// killed between the exchange and the counter bump leaves the atom unarmed
// and its bucket unmoved: the dispatcher's periodic full pass re-arms it.
// A dead dispatcher's kWatchBit costs the atom's next notify one slow path
// (which clears it), and the summary's sleeper bit one slow notify of the
// summary, once: the same rule as kSleeperBit.
//
// Wide waits (issue 13): a wait on more words than one futex_waitv takes
// (128: a 200-way | of signals, say; condition.hpp, WaitSet) uses the same
// summary for the signals among them. A signal's word is a one-shot word,
// not an event count: its watch bit is one_shot::kWatch, which nobody clears
// (like kSleeper there: the word stops mattering once fired). Per slice:
//   for each segment, before the first of its words:
//     s = summary.seq; arm summary (kSleeperBit)                     [1]
//   for each word of that segment: set kWatch unless set              [2]
//   check the whole predicate (done(), the till)                       [3]
//   futex_waitv on every summary (seq == s) and the words of no
//   segment (local signals, event counts of the caller, armed as usual)
// The go() that fires a word (fetch_or kFired, seq_cst) whose old value has
// kWatch calls the atoms' SegmentImpl::note_watched_change: counter[b]++,
// then summary.notify_all(). go()'s fast path is unchanged: the fetch_or it
// always made, and one test of the old value it returns. Why no wake-up is
// lost, with every step seq_cst: the fetch_or and [2] are read-modify-writes
// (or [2] a load) of one word. If the fetch_or comes after [2] in that
// word's order, its old value has kWatch (set at [2] or before, never
// cleared), so it notifies the summary; that notify's load of
// summary.waiters comes after [2], hence after [1], so it finds the sleeper
// bit (or a notifier that cleared the bit after [1] bumps seq after the
// clearing) and seq moves past s: the futex_waitv returns at once or is
// woken. If the fetch_or comes before [2], [3] reads the word after it and
// sees kFired. The wide waiter does not read the bucket counters at all: it
// re-checks its predicate on every summary wake (cheap: one load per word),
// so a wake for an atom's change or another signal of the segment costs it
// one pass, and the counters, which nobody consumes, stay the dispatchers'.
// (A dispatcher that sees a signal's bump visits that bucket's atoms once
// for nothing.) A firer killed between the fetch_or and the notify is seen
// at the end of the slice (kWaitSlice), as with kSleeper. A dead wide
// waiter leaves kWatch on its words and its sleeper bit on each summary:
// the go() that fires each word pays one bucket increment and one load of
// summary.waiters (once per signal: later go()s find kFired), and the
// first of them per segment one slow notify of the summary, which clears
// its bit. A read-only mapping cannot be armed: its words are slept on
// directly. More than 127 segments: futex_wait_any's helper threads sleep
// on the summaries beyond the first 127 (futex.cpp), correct but slower.
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
  // A watch dispatcher sleeps on the segment's watch summary for this one
  // (atoms; a signal's word has its own, one_shot::kWatch: see above).
  static constexpr std::uint32_t kWatchBit = 1u << 1;

  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;

  // Returns the waiter bits it cleared (0 on the fast path): an atom's
  // notifier then tells the watch summary when kWatchBit was among them.
  std::uint32_t notify_all() noexcept { return has_waiters() ? notify_all_slow() : 0; }
  // The notifier's fast-path test: one load, and no store, when nobody waits.
  bool has_waiters() const noexcept { return waiters.load(std::memory_order_seq_cst) != 0; }
  // Clears every bit and wakes every sleeper (counted in
  // testing::slow_notify_count()). Returns the bits it cleared (an atom's
  // notifier then tells the watch summary when kWatchBit was among them).
  std::uint32_t notify_all_slow() noexcept;

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
