// The shared state of a FifoLock (layout version 3) and the process-local
// handle. See include/shmstate/fifo_lock.hpp for the contract.
//
// Layout: FifoLockState (1280 bytes) followed by slot_count FifoLockSlots of
// 64 bytes each. One slot per request: a queued request is a Waiting slot, a
// grant turns the same slot into Held (so a grant is one state change of one
// slot, and a waiter learns of it from its own futex word without moving).
//
// Invariants, under `mutex` (the only writer of everything but `word`):
//   - slot.state is Free, Waiting or Held; a Waiting or Held slot's mode <
//     mode_count and its owner is the requesting process.
//   - Waiting slots are queued in `ticket` order (tickets are unique, from
//     next_ticket); Held slots carry the `token` of their grant.
//   - held[m] = number of Held slots of mode m; waiting = number of Waiting
//     slots. These are derived and recomputed by the repair that runs when a
//     process died inside the mutex.
//   - died_modes: bit d set when a holder of mode d was reclaimed dead and no
//     grant of a mode conflicting with d has happened since.
//   - word: 0 while waiting, 1 once granted (exchanged with release after
//     the grant's fields), 2 when the waiter's own stop callback poked it;
//     plus kWordAsleep on 0 or 2 once the waiter has announced that it is
//     going to sleep in FUTEX_WAIT (it sleeps on the value with the bit).
//     A grant exchanges the word for 1 and issues FUTEX_WAKE only if the
//     value it replaced had kWordAsleep: a waiter still spinning on its word
//     (fifo_lock.cpp, "Spinning") sees the 1 by itself, without a syscall.
//     Why no wake is lost: the announcement (a compare-and-swap adding the
//     bit) and the grant (an exchange) are read-modify-writes of the same
//     word, so one of them is first in its modification order. Grant first:
//     the waiter's swap fails (it expected the value without the 1), it
//     re-reads the word and returns granted, without sleeping. Announcement
//     first: the grant's exchange returns the bit and the granter wakes the
//     word; the kernel compares the word with the expected value under its
//     futex bucket lock, which FUTEX_WAKE takes too, so a FUTEX_WAIT that
//     starts after the exchange returns at once (the value changed) and one
//     that started before it is woken. There is no store-then-load on two
//     different words (the Dekker pattern that needs seq_cst fences): both
//     sides only touch this one word, and coherence orders them.
//
// The uncontended fast path (version 2). `fast.word` lets a request that
// finds the lock idle take it with one compare-and-swap, without the mutex
// or a slot: kFastSlow | kFastHeld | mode << 58 | pid << 36 | the low 36 bits
// of the holder's start time (its whole identity, so a holder killed right
// after the swap is still recognised dead, and a recycled pid is not it).
//   - 0: idle. Nothing is held, nothing waits, no critical section runs; the
//     only state a fast acquire accepts.
//   - kFastSlow: every critical section sets it first (under the mutex) and
//     clears it last only if no slot is Waiting or Held. So while it is set
//     the word is frozen: no fast acquire succeeds and a fast holder's
//     release (its swap expects the bit clear) fails and releases under the
//     mutex instead, where it grants the queue. Hence "idle" really means
//     nobody waits: the fast path never barges.
//   - kFastHeld: the fast holder, counted by every critical section as a
//     holder of its mode (compatibility, capacity, reentrancy, reclaim).
// fast.token/tid/died describe the current fast hold; they are written just
// after the swap, so a reader under the mutex may see the previous hold's
// values in that window (dump then shows an older token). tid is cleared
// before a release so a stale tid never makes a thread think it holds the
// lock. The fast path reads no clock (a clock read was a tenth of an
// uncontended acquire+release): the first critical section that finds a
// fast hold stamps it (seen_token = its token, since_ns = now), so the age
// reclaim and dump use is "held at least since a request found it held",
// and a hold nobody has contended has no age (dump says so).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <shmstate/detail/object_header.hpp>
#include <shmstate/fifo_lock.hpp>

#include "platform/process.hpp"
#include "platform/robust_mutex.hpp"
#include "platform/system_error.hpp"

namespace boost::json {
class value;
}

namespace shmstate::detail {

// 2: the fast word; 3: a slot word's kWordAsleep (a version-2 waiter never announces its
// sleep, so a version-3 granter would skip its wake); 4: the fast hold's
// seen_token (its since_ns is stamped by the first critical section that finds
// it, not by the fast path).
inline constexpr std::uint32_t kFifoLockLayoutVersion = 4;
inline constexpr std::uint32_t kFifoLockMaxSlots = 4096;

enum FifoSlotState : std::uint32_t { kSlotFree = 0, kSlotWaiting = 1, kSlotHeld = 2 };
enum FifoWord : std::uint32_t { kWordWaiting = 0, kWordGranted = 1, kWordPoked = 2, kWordAsleep = 4 };

struct FifoLockModeRow {
  char name[32];             // NUL-terminated, NUL-padded
  std::uint32_t conflicts;   // bit j: conflicts with mode j
  std::uint32_t capacity;    // 0 = unlimited
  std::uint8_t reserved[24];
};
static_assert(sizeof(FifoLockModeRow) == 64);

struct alignas(64) FifoLockSlot {
  std::atomic<std::uint32_t> word;   // 0  futex word of this slot's waiter
  std::atomic<std::uint32_t> state;  // 4  FifoSlotState (atomic: dump reads it without the mutex)
  std::uint32_t mode;                // 8
  std::int32_t tid;                  // 12 requesting thread (reentrancy checks)
  platform::ProcessIdentity owner;   // 16
  std::uint64_t ticket;              // 32 queue order
  std::uint64_t token;               // 40 fencing token of the grant
  std::int64_t since_ns;             // 48 steady clock: queued at, then granted at
  std::uint32_t died;                // 56 died_modes bits this grant consumed (nonzero: told)
  std::uint32_t reserved;            // 60
};
static_assert(sizeof(FifoLockSlot) == 64);
static_assert(offsetof(FifoLockSlot, owner) == 16);

struct alignas(64) FifoFastHold {
  std::atomic<std::uint64_t> word;  // 0  see "The uncontended fast path" above
  std::uint64_t token;              // 8  the fast hold's fencing token
  std::int64_t since_ns;            // 16 steady clock: when a critical section first found hold `seen_token`
  std::int32_t tid;                 // 24 holding thread; 0 once released
  std::uint32_t died;               // 28 died_modes bits the grant consumed
  std::uint64_t seen_token;         // 32 the fast hold since_ns is about (0: none yet)
  std::uint8_t reserved[24];        // 40
};
static_assert(sizeof(FifoFastHold) == 64);

inline constexpr std::uint64_t kFastSlow = std::uint64_t{1} << 63;
inline constexpr std::uint64_t kFastHeld = std::uint64_t{1} << 62;
inline constexpr int kFastModeShift = 58;  // 4 bits
inline constexpr int kFastPidShift = 36;   // 22 bits (pid_max is at most 2^22)
inline constexpr std::uint64_t kFastStartMask = (std::uint64_t{1} << kFastPidShift) - 1;
inline constexpr std::uint64_t kFastOwnerMask = (std::uint64_t{1} << kFastModeShift) - 1;

// The fast word of a hold of `mode` by `id`; 0 if the pid does not fit (the
// fast path is then not taken).
inline std::uint64_t fast_word(const platform::ProcessIdentity& id, std::uint32_t mode) noexcept {
  if (id.pid <= 0 || id.pid >= (1 << 22)) return 0;
  return kFastHeld | std::uint64_t{mode} << kFastModeShift |
         static_cast<std::uint64_t>(id.pid) << kFastPidShift | (id.start_time & kFastStartMask);
}
inline std::uint32_t fast_mode(std::uint64_t w) noexcept { return (w >> kFastModeShift) & 15u; }
// The holder's identity as far as the word keeps it: compare start times
// under kFastStartMask (platform::liveness's start_mask).
inline platform::ProcessIdentity fast_owner(std::uint64_t w) noexcept {
  return {static_cast<std::int32_t>((w >> kFastPidShift) & ((1u << 22) - 1)), 0, w & kFastStartMask};
}

struct alignas(64) FifoLockState {
  ObjectHeader header;           // 0
  std::uint32_t mode_count;      // 8
  std::uint32_t slot_count;      // 12
  std::uint64_t next_token;      // 16 last token issued
  std::uint64_t next_ticket;     // 24 last ticket issued
  std::uint32_t waiting;         // 32 derived
  std::uint32_t died_modes;      // 36
  std::uint8_t reserved0[24];    // 40
  std::uint32_t held[16];        // 64 derived, per mode
  platform::RobustMutex mutex;   // 128
  FifoLockModeRow modes[16];     // 192
  FifoFastHold fast;             // 1216
};
static_assert(sizeof(FifoLockState) == 192 + 16 * 64 + 64);
static_assert(offsetof(FifoLockState, mutex) == 128);
static_assert(LockModes::kMaxModes == 16);

inline FifoLockSlot* fifo_slots(FifoLockState* s) noexcept {
  return reinterpret_cast<FifoLockSlot*>(reinterpret_cast<std::byte*>(s) + sizeof(FifoLockState));
}
// Requests queued right now, read without the mutex (slot states are
// atomic): for tests and the benchmark's handover row, which wait for one.
inline std::uint32_t queued_count(FifoLockState* s) noexcept {
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < s->slot_count; ++i)
    if (fifo_slots(s)[i].state.load(std::memory_order_acquire) == kSlotWaiting) ++n;
  return n;
}
inline std::uint64_t fifo_lock_bytes(std::uint32_t slots) noexcept {
  return sizeof(FifoLockState) + std::uint64_t{slots} * sizeof(FifoLockSlot);
}

struct FifoLockHandle {
  FifoLockState* s;
  std::string segment;
  std::string object;
  LockModes modes;
  std::uint32_t conflicts[16];  // process-local copy of the validated table
  std::uint32_t capacity[16];
  bool exclusive[16];      // conflicts with every mode, itself included
  std::string where_text;  // platform::where(segment, object), made once

  const std::string& where() const noexcept { return where_text; }
};

struct SegmentImpl;
struct ObjectSlot;

// Constructs a FifoLock's state (and its slots) at p.
void init_fifo_lock(std::byte* p, const LockModes& modes, std::uint32_t slots, std::uint64_t next_token);

// A handle on the state at s (`bytes` of it are the object's), validated:
// header, slot count against the size, mode table. Throws Corrupt naming
// segment and object. Monitors use it for the FifoLock inside them.
// Handles are interned: the same lock (same state, names, table) gives the
// same handle, kept until the process exits like the mapping it points into,
// so a Guard may keep a plain pointer to it.
std::shared_ptr<FifoLockHandle> fifo_lock_handle(FifoLockState* s, std::uint64_t bytes, const std::string& segment,
                                                 std::string_view object);

// InvalidArgument unless 1 <= slots <= kFifoLockMaxSlots.
void check_fifo_lock_slots(std::uint32_t slots, const std::string& where);

// The library's ways to make FifoLock handles (its constructor is private).
struct FifoLockAccess {
  // Segment::fifo_lock with a create mode, says whether it created, and a
  // starting token counter (restore).
  static FifoLock create(SegmentImpl& impl, std::string_view name, const LockModes& modes, std::uint32_t slots,
                         CreateMode mode, bool* created, std::uint64_t next_token);
  static FifoLock open(SegmentImpl& impl, const ObjectSlot& slot, std::string_view name);
  static FifoLock wrap(std::shared_ptr<FifoLockHandle> h) { return FifoLock(std::move(h)); }
  static const std::shared_ptr<FifoLockHandle>& handle(const FifoLock& l) { return l.h_; }
};

// `shmstate new --modes`: exclusive, rw (read_write), semaphore:N, or a JSON
// table (LockModes::from_json). InvalidArgument naming `where`.
LockModes parse_lock_modes(std::string_view text, const std::string& where);

// Reads the stored table (validating it); throws Corrupt naming the lock.
LockModes stored_modes(const FifoLockState& s, const std::string& where);

// The calling thread's kernel thread id (cached per thread, re-read after fork).
std::int32_t current_tid() noexcept;

// Steady-clock nanoseconds (CLOCK_MONOTONIC: the same clock in every process).
std::int64_t steady_ns() noexcept;
// now - since for a time read from shared memory: 0 when `since` is in the
// future or damaged (a hostile word must not overflow the subtraction).
inline std::int64_t age_ns(std::int64_t now, std::int64_t since) noexcept {
  return since >= 0 && since < now ? now - since : 0;
}

// What dump shows of a lock's state, read without its mutex (dump must not
// wait on a stuck holder): each field is read once, atomically; fields may be
// from different instants. Also used for the lock inside a Monitor.
struct FifoSlotView {
  platform::ProcessIdentity owner;
  platform::Liveness alive;
  std::string mode;
  std::uint64_t token;   // holders
  std::uint64_t ticket;  // waiters: queue order
  // Held for / waiting for. A fast hold (fifo_lock.hpp) is timed from when a
  // request first found it held (at_least); nullopt when none has.
  std::optional<double> seconds;
  bool at_least = false;
};
struct FifoLockView {
  std::uint64_t next_token = 0;
  std::vector<FifoSlotView> holders;  // in token order
  std::vector<FifoSlotView> waiters;  // in queue order
};
FifoLockView fifo_lock_view(const FifoLockHandle& h);

// dump's words for liveness ("alive", "dead", "unknown"; JSON true, false, null)
// and durations ("1.250s"; JSON seconds rounded to milliseconds).
const char* liveness_text(platform::Liveness l) noexcept;
boost::json::value liveness_json(platform::Liveness l);
std::string seconds_text(double seconds);
double rounded_seconds(double seconds) noexcept;
// A holder's age for dump: JSON seconds or null; text after "held":
// "for 1.250s", "for >= 1.250s" (a fast hold) or "(uncontended: not timed)".
boost::json::value held_for_json(const FifoSlotView& x);
std::string held_for_text(const FifoSlotView& x);

}  // namespace shmstate::detail
