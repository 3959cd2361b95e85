// shmstate/fifo_lock.hpp: a strictly first-in-first-out lock with modes as
// data, shared by processes (fifolock's FifoLock, across processes).
//
// A FifoLock has a table of modes, fixed when it is created and stored in the
// segment so that every process agrees on it: per mode a name, the modes it
// conflicts with, and a capacity (how many holders of that mode at once; 0 =
// no limit). Presets: LockModes::exclusive() (one mode "exclusive"),
// LockModes::read_write() ("read", "write"), LockModes::semaphore(n) ("permit",
// capacity n). Users build their own tables (tests build the database
// intention locks IS/IX/S/SIX/X).
//
// What a request meets (mode m asked by thread T):
//
//   state of the lock                          | acquire(m)          | try_acquire(m)
//   -------------------------------------------+---------------------+----------------
//   no waiter queued, m compatible with every  | granted at once     | granted
//     holder and below m's capacity            |                     |
//   some waiter queued (even a compatible one) | queued at the tail  | nullopt
//   a holder conflicts, or m is at capacity    | queued at the tail  | nullopt
//   T itself holds a mode conflicting with m   | Error(InvalidArgument) (not reentrant; no deadlock)
//   T holds a mode and m would queue behind a  | Error(InvalidArgument) (it would wait on itself)
//     waiter that conflicts with T's hold, or  |                     |
//     m is at capacity with only T's holds     |                     |
//   every slot in use (holders + waiters)      | Error(SegmentFull) naming the lock
//
// Fairness, exactly. Requests are granted strictly in the order they were
// queued: a request is granted only when it is compatible with the current
// holders and no earlier request still waits; consecutive compatible requests
// at the head are granted together (R, R behind a W all go when the W leaves).
// No request ever overtakes an earlier one ("barging"), so a stream of readers
// cannot starve a writer, and a reader queued behind a writer waits for that
// writer even while other readers hold the lock. What is NOT promised: the
// order of two requests made at the same time by different threads or
// processes (whichever takes the internal mutex first is first); and that a
// granted waiter runs promptly (that is up to the scheduler). The price is
// convoys: a slow head blocks everything behind it (a granted process that
// is not on a CPU holds up all behind it).
//
// Also NOT promised: equal shares of the lock between processes that loop
// on it. FIFO governs requests that wait; a request that finds the lock idle
// (nothing held, nothing queued) takes it at once, so while one process is
// descheduled outside the lock another may take it thousands of times alone,
// and nobody is overtaken (nobody was waiting). Measured (tools/bench,
// 2026-12-03, 2 shared CPUs, empty hold, median of 5 runs): max/min
// acquisitions per process 1.19 with 2 processes and 2.59 with 4 (the
// robust pthread mutex 1.04 / 1.16), but 90% / 49% of FifoLock's
// acquisitions found the lock idle, and the max/min of the acquisitions
// that waited was 1.00 / 1.05 (the mutex's 1.05 / 1.18).
//
// Leaving the queue. A request ended by its timeout, its deadline or its
// std::stop_token leaves the queue, and the queue is rescanned at once: the
// requests behind it that are now at the head and compatible are granted
// immediately (fifolock left them blocked until the next release). A request
// stopped by its stop_token never returns a hold: if it had just been granted
// when it noticed the stop, it gives the hold back (and the queue moves on). A
// request whose deadline passes just as it is granted returns the hold.
//
// Release hands over to exactly the requests it grants: each waiter sleeps on
// its own futex word in its slot, and release wakes only those words (no
// thundering herd).
//
// Cost. A request that finds the lock idle (nothing held, nothing queued) is
// granted with one compare-and-swap on a word of the lock, and its release is
// one more, as cheap as a mutex (tools/bench: FifoLock uncontended). Any other
// request, and the release of a hold that others queue behind, takes the
// lock's robust mutex and its slot table; the fast path then stays shut until
// the table is empty again, so it never lets a request overtake a queued one.
// A queued request at the head of the queue watches its word for up to 4 us
// before it sleeps (not on a single CPU), and a waiter says in its word that
// it is about to sleep, so a grant to a waiter that is still watching costs
// no FUTEX_WAKE and the handover no trip through the scheduler.
//
// Death. Holds and queued requests belong to (pid, process start time), so a
// recycled pid is never mistaken for the old process, and an unreaped zombie
// counts as dead. A process killed while it holds the lock or while it waits
// (SIGKILL at any instant, also inside the library's own critical sections,
// which a robust mutex guards) loses its holds and queue slots: the other
// processes reclaim them themselves, within about one wait slice (100 ms, and
// well under 1 s) while anyone waits, and at the next request that has to
// queue behind a hold older than a slice. (A hold taken while the lock was
// idle keeps no clock: its age counts from the first request that found it
// held, so a caller that only tries sees such a dead hold go at a try made a
// slice after its first.) The queue then moves on, and the
// next grant of a mode that conflicts with a dead holder's mode says
// Guard::previous_holder_died() (like EOWNERDEAD for a mutex: the protected
// data may need repair). There is no daemon.
//
// Fencing tokens. Every grant gets Guard::token(), strictly increasing per lock
// across all processes, for as long as the segment exists (a process dying
// after taking a token only leaves a gap). Pass it to the protected resource so
// it can refuse a stale holder (one that was paused, declared dead and replaced).
//
// Memory ordering. Everything a holder wrote before its Guard released is
// visible to every later holder once its acquire returns: grants and releases
// happen under the lock's robust mutex or by a release/acquire pair on the
// lock's fast word, and a waiter that learns of its grant
// from its futex word reads the word with acquire, paired with the granter's
// release store made after it wrote the grant (token, died flag) into the slot.
//
// Thread safety. Handles are cheap to copy (one shared_ptr); every member
// function may be called from any thread. A Guard belongs to the thread that
// acquired it as far as reentrancy checks go, but may be released from any
// thread of the same process.
//
// Waits that end on a signal (issue 9, mo-threads' `till=`):
// acquire(mode, till) ends like acquire_until does at its deadline, when the
// signal or composition `till` is set (`please_stop | Till(5s)`, a segment
// signal fired by any process). The waiter sleeps on its slot's word and on
// every word of `till` at once (futex_waitv; beyond 128 words, on the till's segments' watch summaries) and leaves the
// queue as a timed-out request does: the requests behind it are rescanned at
// once.
#pragma once

#include <shmstate/config.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <shmstate/segment.hpp>

namespace boost::json {
class value;
}

namespace shmstate {

class Condition;

namespace detail {
struct FifoLockHandle;
struct FifoLockAccess;
}

// One row of a mode table.
struct LockMode {
  std::string name;                    // 1..31 characters from [A-Za-z0-9_.-]
  std::vector<std::string> conflicts;  // names of the modes this one cannot be held with
  std::uint32_t capacity = 0;          // holders of this mode at once; 0 = unlimited

  bool operator==(const LockMode&) const = default;
};

// A validated mode table: 1..16 modes, unique names, conflicts that name known
// modes and are symmetric (a conflicts with b exactly when b conflicts with a).
// Anything else is Error(InvalidArgument) naming the problem.
class SHMSTATE_API LockModes {
 public:
  static constexpr std::size_t kMaxModes = 16;
  static constexpr std::size_t kMaxNameLength = 31;

  explicit LockModes(std::vector<LockMode> modes);

  static LockModes exclusive();                 // "exclusive", conflicts with itself
  static LockModes read_write();                // "read" (conflicts write), "write" (conflicts both)
  static LockModes semaphore(std::uint32_t n);  // "permit", no conflicts, capacity n (>= 1)

  // {"modes":[{"name":"read","conflicts":["write"],"capacity":0}, ...]}, or
  // the bare array. from_json throws InvalidArgument for anything else.
  boost::json::value to_json() const;
  static LockModes from_json(const boost::json::value& json);

  // "read(conflicts: write), write(conflicts: read write)"; capacities as
  // "permit(capacity 2)". Used in error messages and dump.
  std::string to_string() const;

  const std::vector<LockMode>& modes() const noexcept { return modes_; }
  std::size_t size() const noexcept { return modes_.size(); }
  std::optional<std::size_t> index_of(std::string_view name) const noexcept;
  bool operator==(const LockModes&) const = default;

 private:
  std::vector<LockMode> modes_;
};

class SHMSTATE_API FifoLock {
 public:
  // A mode of this lock, resolved once (lock.mode("write")).
  class Mode {
   public:
    std::size_t index() const noexcept { return index_; }

   private:
    friend class FifoLock;
    explicit Mode(std::size_t index) : index_(index) {}
    std::size_t index_;
  };

  // Selects a mode by name or by handle.
  class ModeSelector {
   public:
    ModeSelector(Mode mode) : index_(mode.index()) {}  // NOLINT: implicit on purpose
    ModeSelector(std::string_view name) : name_(name) {}  // NOLINT
    ModeSelector(const char* name) : name_(name) {}  // NOLINT
    ModeSelector(const std::string& name) : name_(name) {}  // NOLINT

   private:
    friend class FifoLock;
    std::optional<std::size_t> index_;
    std::string_view name_;
  };

  // One hold. Movable; releases once (on destruction or release()), from any
  // thread of the holding process. If the process dies instead, the other
  // processes reclaim the hold (see Death above).
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&& other) noexcept;
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard();

    // Gives the hold back and grants the requests now at the head of the
    // queue. Does nothing if already released. Throws Corrupt if the slot no
    // longer holds this hold (another process overwrote it); the destructor
    // swallows that.
    void release();

    bool held() const noexcept { return handle_ != nullptr; }
    explicit operator bool() const noexcept { return held(); }
    std::uint64_t token() const noexcept { return token_; }
    bool previous_holder_died() const noexcept { return died_; }
    const std::string& mode() const;  // its name

   private:
    friend class FifoLock;
    Guard(detail::FifoLockHandle* handle, std::uint32_t slot, std::uint32_t mode, std::uint64_t token,
          bool died) noexcept
        : handle_(handle), slot_(slot), mode_(mode), token_(token), died_(died) {}

    // slot_ of a hold taken by the uncontended fast path (it has no slot).
    static constexpr std::uint32_t kFastSlot = 0xffffffff;

    // Handles live until the process exits (interned, like the mappings they
    // point into), so a Guard needs no reference count.
    detail::FifoLockHandle* handle_;
    std::uint32_t slot_ = 0;
    std::uint32_t mode_ = 0;
    std::uint64_t token_ = 0;
    bool died_ = false;
  };

  // The mode named `name`. Throws InvalidArgument naming the lock's modes.
  Mode mode(std::string_view name) const;
  const LockModes& modes() const noexcept;

  // Blocks until granted. The stop_token overloads return nullopt when a stop
  // is requested (from any thread) before the grant; the request has then
  // left the queue. Throws InvalidArgument (unknown mode; a conflicting
  // re-request from the holding thread), SegmentFull (all slots in use),
  // Corrupt (damaged state; nothing is granted then).
  Guard acquire(ModeSelector mode);
  std::optional<Guard> acquire(ModeSelector mode, std::stop_token stop);
  std::optional<Guard> try_acquire(ModeSelector mode);
  // Blocks until granted (a Guard) or until `till` is set (nullopt; the
  // request has then left the queue). The grant is checked first: a lock
  // free at the call is granted even if `till` is already set, and a grant
  // that comes just as `till` fires is kept, as at a deadline. Throws what
  // acquire throws, and Corrupt if a segment signal in `till` is damaged
  // (the request has left the queue then too).
  std::optional<Guard> acquire(ModeSelector mode, const Condition& till);
  std::optional<Guard> acquire_for(ModeSelector mode, std::chrono::nanoseconds timeout,
                                   std::stop_token stop = {});
  std::optional<Guard> acquire_until(ModeSelector mode, std::chrono::steady_clock::time_point deadline,
                                     std::stop_token stop = {});

  // The same for a lock with exactly one mode (else InvalidArgument).
  Guard acquire();
  std::optional<Guard> acquire(std::stop_token stop);
  std::optional<Guard> try_acquire();
  std::optional<Guard> acquire_for(std::chrono::nanoseconds timeout, std::stop_token stop = {});
  std::optional<Guard> acquire_until(std::chrono::steady_clock::time_point deadline, std::stop_token stop = {});

  // Slots for holders and waiters together, fixed at creation. A hold taken
  // while the lock was idle (the uncontended fast path) uses none, so one
  // more holder than this fits.
  std::uint32_t capacity() const noexcept;
  const std::string& name() const noexcept;
  const std::string& segment_name() const noexcept;

 private:
  friend class Segment;
  friend struct detail::FifoLockAccess;
  explicit FifoLock(std::shared_ptr<detail::FifoLockHandle> handle) : h_(std::move(handle)) {}
  std::size_t resolve(const ModeSelector& mode) const;
  std::size_t only_mode() const;
  std::optional<Guard> acquire_impl(std::size_t mode, std::chrono::steady_clock::time_point deadline,
                                    const std::stop_token* stop, bool try_only, const Condition* till = nullptr);
  // The uncontended fast path: true (and `out` holds) if the lock was idle.
  bool take_idle(std::size_t mode, Guard& out) const;

  std::shared_ptr<detail::FifoLockHandle> h_;
};

}  // namespace shmstate
