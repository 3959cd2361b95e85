// shmstate/signal.hpp: one-shot signals across processes (mo-threads' Signal
// and Till), their compositions `a | b`, `a & b`, and then-callbacks.
//
// A Condition is true once and never false again ("transitions to true at
// most once"). Kinds of condition, all interchangeable in compositions and
// in every wait that takes a `till`:
//   Signal        segment.signal(name): a word in a segment; go() from any
//                 process fires it for every process.
//   LocalSignal   the same, but in this process's memory.
//   Till          fires at a steady_clock deadline (never early; on an idle
//                 machine within ~2 ms), whether or not anyone references it.
//   ProcessExit   fires when process `pid` ends, however it ends (a pidfd).
//   DONE, NEVER   the constants (also what `true` and `false` convert to).
//   a | b, a & b  compositions, with mo-threads' identities: a | DONE is DONE,
//                 a | NEVER is a, a & DONE is a, a & NEVER is NEVER.
//
// Waiting blocks without polling: the wait arms and sleeps on every futex
// word involved at once (futex_waitv, up to 128 words; beyond that, on one
// word per segment instead: the segment's watch summary, which the go() of
// a signal armed so bumps) with the nearest Till deadline as the timeout, in
// bounded slices (100 ms) so that a firer killed between its store and its
// wake is noticed within a slice. (Over more than 127 segments, helper
// threads of this process sleep on the words beyond the first 127.)
//
// Memory ordering: go() is a seq_cst read-modify-write on the signal's word;
// a waiter that returns true (or a then-callback that runs) has read the
// fired word, so everything the firing thread wrote before go() is visible
// to it.
//
// Process death. A signal's state is one word (pending -> fired) plus who
// fired it and when; a process killed at any instant leaves it pending or
// fired, never in between. Waiters keep no per-waiter state in the segment:
// a waiter killed mid-wait leaves at most a "sleeper" bit that the one go()
// clears (one FUTEX_WAKE, paid once: go() after the first is a load).
// A firer killed after firing but before recording who fired shows as fired
// by pid 0 ("unknown") in status/dump.
//
// Callbacks (then): run once, in the process that registered them: at once
// in the caller when already true; in the thread whose go() made it true
// when this process fires it; on the process's dispatcher thread when
// another process fires a segment signal; on the process's timer thread for
// a Till or ProcessExit. A callback that throws is reported on stderr and the
// others still run. Keep callbacks short: they run on a shared thread.
//
// Handles are cheap to copy (a shared pointer) and usable from any thread.
// After fork(), the child's handles still work (segment signals are shared;
// local ones are copies); callbacks registered in the parent do not run in
// the child.
#pragma once

#include <shmstate/config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>

#include <shmstate/detail/object_header.hpp>
#include <shmstate/segment.hpp>

namespace shmstate {

namespace detail {
class ConditionNode;
struct SignalState;
}  // namespace detail

class SHMSTATE_API Condition {
 public:
  using Callback = std::function<void()>;
  using CallbackId = std::uint64_t;

  // true and false are DONE and NEVER.
  Condition(bool value);  // NOLINT(google-explicit-constructor): mo-threads' `a | True`

  // True once fired (for a Till: once its deadline has passed). Never blocks.
  bool is_set() const;
  explicit operator bool() const { return is_set(); }

  // Blocks until set (wait() returns at once if already set). wait_for and
  // wait_until return true when set, false on timeout (unlike the seed, whose
  // wait returned True either way). wait(till) returns true when this is set,
  // false when `till` was set first (checked in that order).
  void wait() const;
  bool wait_for(std::chrono::nanoseconds timeout) const;
  bool wait_until(std::chrono::steady_clock::time_point deadline) const;
  bool wait(const Condition& till) const;

  // Runs `callback` once when set (see the header comment for which thread).
  // Returns an id for remove_then (an id of a callback that already ran, or
  // any unknown id, is fine to remove: nothing happens).
  CallbackId then(Callback callback) const;
  void remove_then(CallbackId id) const;

  // For the library's waits; not a stable API.
  const std::shared_ptr<detail::ConditionNode>& node() const noexcept { return node_; }
  explicit Condition(std::shared_ptr<detail::ConditionNode> node) : node_(std::move(node)) {}

 private:
  std::shared_ptr<detail::ConditionNode> node_;
};

// a | b: set when either is. a & b: set when both are.
SHMSTATE_API Condition operator|(const Condition& a, const Condition& b);
SHMSTATE_API Condition operator&(const Condition& a, const Condition& b);

// The constant conditions.
extern SHMSTATE_API const Condition DONE;
extern SHMSTATE_API const Condition NEVER;

// A signal that any holder may fire. Obtained from Segment::signal (shared by
// processes) or as a LocalSignal (this process only).
class SHMSTATE_API Signal : public Condition {
 public:
  // Fires the signal: idempotent and irreversible. Wakes every waiter and,
  // in this process, runs the then-callbacks in this thread (the call that
  // actually fired it runs them; a later go() returns at once). Never blocks
  // and never throws for a segment signal except Corrupt (a damaged word).
  void go() const;

  // Who fired it, for a segment signal: pid (0: unknown, the firer died
  // before recording it) and when (system_clock). nullopt while pending or
  // for a local signal.
  struct Fired {
    std::int32_t pid;
    std::chrono::system_clock::time_point when;
  };
  std::optional<Fired> fired() const;

  // Segment signals: the object's and segment's names ("" for a local signal).
  const std::string& name() const noexcept;
  const std::string& segment_name() const noexcept;

  explicit Signal(std::shared_ptr<detail::ConditionNode> node) : Condition(std::move(node)) {}
};

class SHMSTATE_API LocalSignal : public Signal {
 public:
  LocalSignal();
};

// Fires at `deadline` (Till::until) or `timeout` from now; a timeout <= 0 is
// DONE. Never fires early; a Till with a then-callback keeps itself alive
// until it fires.
class SHMSTATE_API Till : public Condition {
 public:
  template <class Rep, class Period>
  explicit Till(std::chrono::duration<Rep, Period> timeout)
      : Till(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)) {}
  explicit Till(std::chrono::nanoseconds timeout);
  static Till until(std::chrono::steady_clock::time_point deadline);

  std::chrono::steady_clock::time_point deadline() const noexcept { return deadline_; }

 private:
  Till(std::shared_ptr<detail::ConditionNode> node, std::chrono::steady_clock::time_point d)
      : Condition(std::move(node)), deadline_(d) {}
  std::chrono::steady_clock::time_point deadline_;
};

// Fires when process `pid` ends (exits, is killed; an unreaped zombie has
// ended). A pid that does not exist now is DONE. Throws Error(PermissionDenied
// or Io) if no pidfd can be opened (Linux < 5.3). The process's timer thread
// polls the pidfds and fires the condition's futex word, so waits and
// compositions treat it like any other word. Beware pid reuse: the pidfd is
// opened when the ProcessExit is made, and refers to that process only.
class SHMSTATE_API ProcessExit : public Condition {
 public:
  explicit ProcessExit(pid_t pid);
};

}  // namespace shmstate
