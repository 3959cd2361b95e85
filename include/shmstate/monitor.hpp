// shmstate/monitor.hpp: a monitor shared by processes (mo-threads' Lock,
// across processes): a non-reentrant lock with wait/notify whose wait always
// holds the lock again before it returns, and whose every unlock wakes the
// oldest waiter.
//
//   auto m = segment.monitor("jobs");
//   auto g = m.lock();
//   while (!have_work()) m.wait(g, 1s);   // releases, waits, holds again
//   ... work, with the lock held ...
//   // g's destructor unlocks, which wakes the oldest waiter
//
// The lock. A Monitor is a one-mode FifoLock (<shmstate/fifo_lock.hpp>) plus a
// queue of waiters: lock(), try_lock(), lock_for() and lock_until() are its
// acquire calls and inherit its promises. Lockers are served strictly first in,
// first out (no barging); a holder killed at any instant (SIGKILL, also as an
// unreaped zombie) loses the lock to the other processes within about one wait
// slice (100 ms) while someone waits for it, and the next grant says
// Guard::previous_holder_died() (the protected data may need repair, as with
// EOWNERDEAD). There is no daemon.
//
//   lock() from a thread that      | Error(InvalidArgument): not reentrant (never a hang);
//     holds the monitor already    |   try_lock() and lock_for() the same
//   every lock slot in use         | Error(SegmentFull) naming the monitor
//
// Waiting. wait(guard, timeout) and wait_until(guard, deadline):
//   1. wake the oldest waiter (wait() gives the lock up, and every exit of the
//      lock wakes one: mo-threads' Lock does the same),
//   2. join the waiter queue at its tail,
//   3. release the lock,
//   4. sleep until woken or until the deadline,
//   5. take the lock again, queueing behind other lockers like any lock(); this
//      step has no deadline: wait() ALWAYS returns holding the lock, so every
//      line under a guard runs with the lock held,
//   6. return true if it was woken, false if only the deadline ended it.
// Steps 1 to 3 happen atomically with respect to other lockers: nothing that
// takes the lock after this wait() released it can miss that it waits. The
// guard then holds a new grant: guard.previous_holder_died() is about the
// holder just before this re-take.
// Woken by: any unlock (Guard::release or destruction, and the release inside
// another thread's wait()), which wakes the oldest waiter; notify_one(), which
// wakes the oldest waiter; notify_all(), which wakes every waiter. A wake
// goes to one queued waiter and is used up by it: a waiter that is woken just
// as its deadline passes returns true (it used the wake; none is lost), and a
// deadline that passes first makes the waiter leave the queue before any wake
// can pick it. Wakes do not say that anything changed (another thread's
// wait() wakes too): loop on your predicate, as the example does.
// notify_one()/notify_all() need not hold the lock. To be sure a waiter that
// is about to wait is woken, change what it waits for under the lock: the
// waiter either sees the change or is queued before your unlock, which wakes
// it. A notify with nobody waiting costs one load.
//
// A consequence of the seed's rule that wait() itself wakes the oldest waiter:
// in steady state at most one waiter sleeps (each wait() wakes the one before
// it, which then queues to take the lock again), and waiters that loop on a
// predicate take turns waking each other. notify_all() differs from
// notify_one() only when waits overlap with deaths or timeouts.
//
// Fairness. Waiters are woken oldest first. A woken waiter takes the lock again
// in FIFO order with everyone else, so others may hold the lock between the
// wake and the waiter's return.
//
// Death, at any instant, disturbs nobody else:
//   - a holder: see "The lock" above. Its unlock never happens, so it wakes
//     nobody; the next holder, told previous_holder_died(), wakes one when it
//     unlocks.
//   - a sleeping waiter: its queue slot stays until a wake picks it or the
//     queue runs out of slots (then the dead are reclaimed). A single wake
//     (an unlock, notify_one, another wait()) that picks a dead waiter is
//     passed on to the oldest waiter by the others within about two wait
//     slices, as if the dead one had woken, held the lock and left (its exit
//     would have woken the next): no wake is lost. The waiter it reaches may
//     be the one whose own wait() woke the dead one.
//   - a woken waiter that dies before it holds the lock again: the same (a
//     notify_all's wake is not passed on: everyone got one).
//   - a woken waiter that dies holding the lock again: a dead holder (above),
//     and its wake is passed on as well (a spare wake, harmless).
//   - inside the queue's own critical section (a robust mutex): the next user
//     repairs the queue's counts.
// A dead waiter costs nothing lasting: after the first unlock that picks it,
// unlocks and notifies are back to one load (the queue's count of sleeping
// waiters no longer includes it), and its slot is reclaimed at the latest when
// slots run out.
//
// Memory ordering. Everything a holder wrote before it unlocked (directly or
// by waiting) is visible to the next holder when its lock() or wait() returns:
// the hand-over goes through the FifoLock's grant (its robust mutex and its
// release/acquire futex word). A waiter learns of its wake from its own futex
// word, stored with release after the wake was recorded under the queue's
// mutex and read with acquire; the wake itself carries no data: read what
// changed under the lock, which wait() holds again before returning.
//
// Waits that end on a signal (issue 9, mo-threads' `till=`): wait(guard, till)
// is wait() whose sleep (step 4) ends when the signal or composition `till`
// is set (`please_stop | Till(5s)`, a segment signal fired by any process)
// instead of at a deadline. It returns true when woken, false when `till`
// ended it; like every wait() it holds the lock again before returning, in
// both cases. The wake is checked first: a waiter woken just as `till` fires
// returns true (it used the wake), and a waiter that `till` ends leaves the
// queue before any wake can pick it, as at a deadline (no wake is lost). One
// sleep on the waiter slot's word and every word of `till` at once
// (futex_waitv; no helper thread). A `till` already set still releases the
// lock, wakes the oldest waiter and takes the lock again (the wait itself
// returns at once, false). A waiter killed inside it is a dead waiter (see
// "Death" below).
//
// Thread safety. Handles are cheap to copy; every member function may be
// called from any thread. A Guard belongs to the thread that locked as far as
// reentrancy checks go; wait() must be called by a thread of the process that
// holds the guard.
#pragma once

#include <shmstate/config.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>

namespace shmstate {

class Condition;

namespace detail {
struct MonitorHandle;
struct MonitorAccess;
}  // namespace detail

class SHMSTATE_API Monitor {
 public:
  // One hold of the monitor. Movable; unlocks once (on destruction or
  // release()), which wakes the oldest waiter.
  class SHMSTATE_API Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&& other) noexcept;
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard();

    // Unlocks: wakes the oldest sleeping waiter (if any), then gives the lock
    // to the next locker. Does nothing if already released. Throws Corrupt if
    // the monitor's state is damaged (the destructor swallows it).
    void release();

    bool held() const noexcept { return lock_.has_value(); }
    explicit operator bool() const noexcept { return held(); }
    // True when this hold (the last re-take, after a wait) follows the death
    // of a holder that never unlocked.
    bool previous_holder_died() const noexcept { return lock_ && lock_->previous_holder_died(); }

   private:
    friend class Monitor;
    Guard(std::shared_ptr<detail::MonitorHandle> h, FifoLock::Guard lock) noexcept
        : h_(std::move(h)), lock_(std::move(lock)) {}

    std::shared_ptr<detail::MonitorHandle> h_;
    std::optional<FifoLock::Guard> lock_;
  };

  // Blocks until the lock is held. Throws InvalidArgument (this thread holds
  // it already), SegmentFull (all lock slots in use), Corrupt.
  Guard lock();
  // nullopt if the lock is held or others queue for it; the same throws.
  std::optional<Guard> try_lock();
  std::optional<Guard> lock_for(std::chrono::nanoseconds timeout);
  std::optional<Guard> lock_until(std::chrono::steady_clock::time_point deadline);

  // See "Waiting" above. `guard` must hold this monitor (else
  // InvalidArgument, and nothing happens). Returns true if woken, false on
  // timeout; holds the lock again in both cases. Throws SegmentFull when all
  // waiter slots are in use (the guard still holds: nothing happened);
  // Corrupt for damaged state (then the guard may have lost its hold: check
  // held()). wait(guard) waits with no deadline and returns true.
  bool wait(Guard& guard, std::chrono::nanoseconds timeout);
  bool wait_until(Guard& guard, std::chrono::steady_clock::time_point deadline);
  bool wait(Guard& guard);
  // See "Waits that end on a signal" above: true when woken, false when
  // `till` was set first; holds the lock again in both cases. Throws what
  // wait() throws, and Corrupt if a segment signal in `till` is damaged (the
  // waiter has left the queue and holds the lock again then).
  bool wait(Guard& guard, const Condition& till);

  // Wake the oldest sleeping waiter / every sleeping waiter. Need not hold
  // the lock. Cheap (one load) when nobody waits.
  void notify_one();
  void notify_all();

  // Waiter slots, fixed at creation (the lock has one more slot than this).
  std::uint32_t capacity() const noexcept;
  const std::string& name() const noexcept;
  const std::string& segment_name() const noexcept;

 private:
  friend class Segment;
  friend struct detail::MonitorAccess;
  explicit Monitor(std::shared_ptr<detail::MonitorHandle> h) : h_(std::move(h)) {}
  Guard wrap(FifoLock::Guard g) const { return Guard(h_, std::move(g)); }
  std::optional<Guard> wrap(std::optional<FifoLock::Guard> g) const;
  bool wait_impl(Guard& guard, std::chrono::steady_clock::time_point deadline, const Condition* till);

  std::shared_ptr<detail::MonitorHandle> h_;
};

}  // namespace shmstate
