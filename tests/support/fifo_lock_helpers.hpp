// Test support for FifoLock suites: child processes that take a hold when
// started and give it back when told, with their progress in shared memory.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>

#include "primitives/fifo_lock.hpp"
#include "segment/segment_impl.hpp"
#include "support/proc.hpp"

namespace test {

struct LockBoard {
  std::atomic<int> acquired[32];
  std::atomic<int> release[32];
  std::atomic<std::uint64_t> token[32];
  std::atomic<int> died[32];
  std::atomic<int> next;      // how many grants so far
  std::atomic<int> order[32]; // order[k] = index of the k-th grant
};

inline shmstate::detail::FifoLockState* lock_state(const shmstate::Segment& seg, const std::string& name) {
  auto info = seg.find(name);
  REQUIRE(info.has_value());
  return reinterpret_cast<shmstate::detail::FifoLockState*>(seg.impl().base + info->offset);
}

// Queued requests right now (read without the mutex: a test-only peek).
inline std::uint32_t queued(const shmstate::Segment& seg, const std::string& name) {
  return shmstate::detail::queued_count(lock_state(seg, name));
}

class Holders {
 public:
  Holders(const std::string& segment, const std::string& lock) : segment_(segment), lock_(lock) {}
  LockBoard& board() { return *mem_.as<LockBoard>(); }

  // Starts child i asking for `mode`; returns once it holds or is queued.
  void start(int i, const std::string& mode) {
    auto& b = board();
    auto before = queued(shmstate::Segment::open(segment_), lock_);
    children_.push_back(std::make_unique<Child>([&, i, mode] {
      auto lock = shmstate::Segment::open(segment_).open_fifo_lock(lock_);
      auto g = lock.acquire(mode);
      b.token[i] = g.token();
      b.died[i] = g.previous_holder_died() ? 1 : 0;
      b.order[b.next.fetch_add(1)] = i;
      b.acquired[i] = 1;
      while (b.release[i].load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      g.release();
      return 0;
    }));
    auto seg = shmstate::Segment::open(segment_);
    REQUIRE(eventually([&] { return b.acquired[i].load() == 1 || queued(seg, lock_) > before; }));
  }
  void complete(int i) {
    board().release[i] = 1;
    REQUIRE(children_.at(static_cast<std::size_t>(i))->exit_code_within(std::chrono::seconds(10)) == 0);
  }
  Child& child(int i) { return *children_.at(static_cast<std::size_t>(i)); }

  // Which children hold (or held), after letting grants settle.
  // Settled: each child holds, or sleeps in a futex wait (queued); a child
  // that was granted but has not run yet is neither, so a loaded machine
  // cannot make a grant look missing.
  std::vector<bool> acquired(int n) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    eventually(
        [&] {
          for (int i = 0; i < n && i < static_cast<int>(children_.size()); ++i)
            if (pid_t pid = children_[static_cast<std::size_t>(i)]->pid();
                board().acquired[i].load() != 1 && !asleep_in_futex(pid) &&
                shmstate::platform::liveness({pid, 0, 0}) == shmstate::platform::Liveness::Alive)
              return false;
          return true;
        },
        std::chrono::seconds(5));
    std::vector<bool> v;
    for (int i = 0; i < n; ++i) v.push_back(board().acquired[i].load() == 1);
    return v;
  }

 private:
  std::string segment_, lock_;
  SharedMemory mem_{sizeof(LockBoard) + 64};
  std::vector<std::unique_ptr<Child>> children_;
};

}  // namespace test
