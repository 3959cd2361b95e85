// The shared state of a Monitor (layout version 2) and the process-local
// handle. See include/shmstate/monitor.hpp for the contract.
//
// Layout (all offsets from the object's start, all 64-aligned):
//   0    MonitorState (128 bytes): header, counts, the waiter queue's mutex
//   128  a FifoLockState with one mode ("exclusive") and lock_slots slots:
//        the monitor's lock, a complete FifoLock (fifo_lock.hpp) validated
//        by the same code; its header says FifoLock, layout version 2
//   128 + fifo_lock_bytes(lock_slots)
//        waiter_count MonitorWaiters of 64 bytes: the waiter queue
//
// Waiter slots, under `mutex` (the only writer of everything but `word`):
//   Free -> Waiting   wait() queues (holding the monitor's lock), with a
//                     ticket from next_ticket: queue order
//   Waiting -> Woken  an unlock or notify_one (pass_on = 1) or notify_all
//                     (pass_on = 0) picks it; word := 1 with release
//   Waiting -> Free   its deadline passed first (the waiter leaves)
//   Woken -> Free     the waiter holds the lock again; or it died, and a
//                     reclaimer passes a pass_on wake to the oldest Waiting
//                     slot first (a crash in between only adds a spare wake)
//   any -> Free       a dead owner's slot, when slots run out
// waiting = number of Waiting slots, woken = number of Woken slots: derived,
// recomputed by the repair after a death inside the mutex. `waiting` is what
// unlock and notify read without the mutex (0: nothing to do); it only counts
// sleeping waiters, so a dead one stops costing at the first wake that picks it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <shmstate/detail/object_header.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/monitor.hpp>

#include "platform/process.hpp"
#include "platform/robust_mutex.hpp"
#include "platform/system_error.hpp"
#include "primitives/fifo_lock.hpp"

namespace shmstate::detail {

// 2: its lock has the fast word; 3: its slot words announce sleep; 4: its
// lock's fast hold has seen_token (kFifoLockLayoutVersion 4).
inline constexpr std::uint32_t kMonitorLayoutVersion = 4;
inline constexpr std::uint32_t kMonitorMaxWaiters = kFifoLockMaxSlots - 1;

enum MonitorWaiterState : std::uint32_t { kWaiterFree = 0, kWaiterWaiting = 1, kWaiterWoken = 2 };
enum MonitorWord : std::uint32_t { kWaiterAsleep = 0, kWaiterWakeUp = 1 };

struct alignas(64) MonitorWaiter {
  std::atomic<std::uint32_t> word;   // 0  futex word of this slot's waiter
  std::atomic<std::uint32_t> state;  // 4  MonitorWaiterState (atomic: dump reads it without the mutex)
  std::uint32_t pass_on;             // 8  Woken by a single wake: pass it on if the waiter dies
  std::int32_t tid;                  // 12 waiting thread
  platform::ProcessIdentity owner;   // 16
  std::uint64_t ticket;              // 32 queue order
  std::int64_t since_ns;             // 40 steady clock: queued at, then woken at
  std::uint8_t reserved[16];         // 48
};
static_assert(sizeof(MonitorWaiter) == 64);
static_assert(offsetof(MonitorWaiter, owner) == 16);

struct alignas(64) MonitorState {
  ObjectHeader header;                 // 0
  std::uint32_t waiter_count;          // 8
  std::uint32_t reserved0;             // 12
  std::uint64_t next_ticket;           // 16 last ticket issued
  std::atomic<std::uint32_t> waiting;  // 24 derived: Waiting slots
  std::atomic<std::uint32_t> woken;    // 28 derived: Woken slots
  std::uint8_t reserved1[32];          // 32
  platform::RobustMutex mutex;         // 64 the waiter queue's
};
static_assert(sizeof(MonitorState) == 128);
static_assert(offsetof(MonitorState, mutex) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

inline FifoLockState* monitor_lock(MonitorState* s) noexcept {
  return reinterpret_cast<FifoLockState*>(reinterpret_cast<std::byte*>(s) + sizeof(MonitorState));
}
inline MonitorWaiter* monitor_waiters(MonitorState* s) noexcept {
  return reinterpret_cast<MonitorWaiter*>(reinterpret_cast<std::byte*>(monitor_lock(s)) +
                                          fifo_lock_bytes(monitor_lock(s)->slot_count));
}
inline std::uint64_t monitor_bytes(std::uint32_t waiters) noexcept {
  return sizeof(MonitorState) + fifo_lock_bytes(waiters + 1) + std::uint64_t{waiters} * sizeof(MonitorWaiter);
}

struct MonitorHandle {
  MonitorState* s;
  MonitorWaiter* waiters;
  FifoLock lock;  // the lock inside (same name as the monitor in messages)
  std::string segment;
  std::string object;

  std::string where() const { return platform::where(segment, object); }
};

struct SegmentImpl;
struct ObjectSlot;

struct MonitorAccess {
  static Monitor create(SegmentImpl& impl, std::string_view name, std::uint32_t waiters, CreateMode mode,
                        bool* created);
  static Monitor open(SegmentImpl& impl, const ObjectSlot& slot, std::string_view name);
  static const std::shared_ptr<MonitorHandle>& handle(const Monitor& m) { return m.h_; }
};

// InvalidArgument unless 1 <= waiters <= kMonitorMaxWaiters.
void check_monitor_waiters(std::uint32_t waiters, const std::string& where);

}  // namespace shmstate::detail
