#include <shmstate/detail/event_count.hpp>

#include <climits>

#include "platform/futex.hpp"
#include "platform/read_only.hpp"

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>

#include "platform/arm_hook.hpp"

namespace shmstate {
namespace {
std::atomic<std::uint64_t> g_slow_notifies{0};
std::atomic<void (*)()> g_after_arm{nullptr};
}  // namespace

namespace testing {
std::uint64_t slow_notify_count() noexcept { return g_slow_notifies.load(std::memory_order_relaxed); }
void after_next_arm(void (*fn)()) noexcept { g_after_arm.store(fn, std::memory_order_seq_cst); }
}  // namespace testing

void detail::run_after_arm_hook() noexcept {
  if (g_after_arm.load(std::memory_order_relaxed) != nullptr)
    if (auto* fn = g_after_arm.exchange(nullptr, std::memory_order_seq_cst)) fn();
}
}  // namespace shmstate
#endif

namespace shmstate {
namespace detail {

using std::chrono::steady_clock;

steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  auto now = steady_clock::now();
  if (timeout <= std::chrono::nanoseconds::zero()) return now;
  if (timeout > steady_clock::time_point::max() - now) return steady_clock::time_point::max();
  return now + std::chrono::duration_cast<steady_clock::duration>(timeout);
}

std::uint32_t EventCount::arm(std::uint32_t bit) noexcept {
  std::uint32_t s = seq.load(std::memory_order_seq_cst);
  // A waiter on a read-only mapping cannot announce itself: it is not woken
  // and sees the change at the end of its slice (kWaitSlice), a poll.
  if ((waiters.load(std::memory_order_seq_cst) & bit) == 0 && !platform::is_read_only(this))
    waiters.fetch_or(bit, std::memory_order_seq_cst);
#if SHMSTATE_TEST_HOOKS
  run_after_arm_hook();
#endif
  return s;
}

std::uint32_t EventCount::notify_all_slow() noexcept {
#if SHMSTATE_TEST_HOOKS
  g_slow_notifies.fetch_add(1, std::memory_order_relaxed);
#endif
  // Clear first, then bump: a waiter that re-arms after the exchange read
  // its sequence before the bump, so it cannot sleep through this wake.
  std::uint32_t bits = waiters.exchange(0, std::memory_order_seq_cst);
  if ((bits & kSleeperBit) == 0) return bits;
  seq.fetch_add(1, std::memory_order_seq_cst);
  platform::futex_wake(seq, INT_MAX);
  return bits;
}

bool EventCount::wait_until(const std::function<bool()>& done,
                            steady_clock::time_point deadline) noexcept {
  if (done()) return true;
  for (;;) {
    std::uint32_t seen = arm();
    if (done()) return true;
    auto now = steady_clock::now();
    if (now >= deadline) return false;
    auto slice = std::min<steady_clock::duration>(deadline - now, kWaitSlice);
    platform::futex_wait(seq, seen, slice);
  }
}

}  // namespace detail
}  // namespace shmstate
