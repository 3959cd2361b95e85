// The shared state of a FifoLock (layout version 1) and the process-local
// handle. See include/shmstate/fifo_lock.hpp for the contract.
//
// Layout: FifoLockState (1216 bytes) followed by slot_count FifoLockSlots of
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
//   - word: 0 while waiting, 1 once granted (stored with release after the
//     grant's fields), 2 when the waiter's own stop callback poked it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
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

inline constexpr std::uint32_t kFifoLockLayoutVersion = 1;
inline constexpr std::uint32_t kFifoLockMaxSlots = 4096;

enum FifoSlotState : std::uint32_t { kSlotFree = 0, kSlotWaiting = 1, kSlotHeld = 2 };
enum FifoWord : std::uint32_t { kWordWaiting = 0, kWordGranted = 1, kWordPoked = 2 };

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
};
static_assert(sizeof(FifoLockState) == 192 + 16 * 64);
static_assert(offsetof(FifoLockState, mutex) == 128);
static_assert(LockModes::kMaxModes == 16);

inline FifoLockSlot* fifo_slots(FifoLockState* s) noexcept {
  return reinterpret_cast<FifoLockSlot*>(reinterpret_cast<std::byte*>(s) + sizeof(FifoLockState));
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

  std::string where() const { return platform::where(segment, object); }
};

struct SegmentImpl;
struct ObjectSlot;

// Constructs a FifoLock's state (and its slots) at p.
void init_fifo_lock(std::byte* p, const LockModes& modes, std::uint32_t slots, std::uint64_t next_token);

// A handle on the state at s (`bytes` of it are the object's), validated:
// header, slot count against the size, mode table. Throws Corrupt naming
// segment and object. Monitors use it for the FifoLock inside them.
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
  double seconds;        // held for / waiting for
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

}  // namespace shmstate::detail
