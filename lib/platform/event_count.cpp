#include <shmstate/detail/event_count.hpp>

#include <climits>

#include "platform/futex.hpp"

namespace shmstate::detail {

using std::chrono::steady_clock;

steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  auto now = steady_clock::now();
  if (timeout <= std::chrono::nanoseconds::zero()) return now;
  if (timeout > steady_clock::time_point::max() - now) return steady_clock::time_point::max();
  return now + std::chrono::duration_cast<steady_clock::duration>(timeout);
}

void EventCount::notify_all_slow() noexcept {
  seq.fetch_add(1, std::memory_order_seq_cst);
  platform::futex_wake(seq, INT_MAX);
}

bool EventCount::wait_until(const std::function<bool()>& done,
                            steady_clock::time_point deadline) noexcept {
  if (done()) return true;
  waiters.fetch_add(1, std::memory_order_seq_cst);
  bool result = false;
  for (;;) {
    std::uint32_t seen = seq.load(std::memory_order_seq_cst);
    if (done()) {
      result = true;
      break;
    }
    auto now = steady_clock::now();
    if (now >= deadline) break;
    auto slice = std::min<steady_clock::duration>(deadline - now, kWaitSlice);
    platform::futex_wait(seq, seen, slice);
  }
  waiters.fetch_sub(1, std::memory_order_seq_cst);
  return result;
}

}  // namespace shmstate::detail
