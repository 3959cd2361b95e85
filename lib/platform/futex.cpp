#include "platform/futex.hpp"

#include <cerrno>
#include <climits>
#include <ctime>
#include <algorithm>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

namespace shmstate::platform {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

namespace {
// The kernel reads the word through its own address; the const_cast is how
// the address is passed, the kernel never writes it for WAIT/WAKE.
std::uint32_t* address_of(const std::atomic<std::uint32_t>& word) noexcept {
  return reinterpret_cast<std::uint32_t*>(const_cast<std::atomic<std::uint32_t>*>(&word));
}
}  // namespace

FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout) noexcept {
  if (timeout <= std::chrono::nanoseconds::zero()) return FutexResult::TimedOut;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  long rc = ::syscall(SYS_futex, address_of(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
  if (rc == 0) return FutexResult::Woken;
  switch (errno) {
    case EAGAIN: return FutexResult::ValueChanged;
    case ETIMEDOUT: return FutexResult::TimedOut;
    case EINTR: return FutexResult::Interrupted;
    default: return FutexResult::Woken;  // EFAULT/EINVAL cannot happen for a mapped, aligned word
  }
}

FutexResult futex_wait_any(const std::atomic<std::uint32_t>* const* words, const std::uint32_t* expected,
                           unsigned count, std::chrono::nanoseconds timeout) noexcept {
  if (timeout <= std::chrono::nanoseconds::zero()) return FutexResult::TimedOut;
  if (count == 0 || count > FUTEX_WAITV_MAX) {
    ::usleep(static_cast<useconds_t>(std::min<std::int64_t>(timeout.count() / 1000, 10'000)));
    return FutexResult::TimedOut;
  }
  futex_waitv waiters[FUTEX_WAITV_MAX] = {};
  for (unsigned i = 0; i < count; ++i) {
    waiters[i].val = expected[i];
    waiters[i].uaddr = reinterpret_cast<std::uintptr_t>(address_of(*words[i]));
    waiters[i].flags = FUTEX_32;  // shared: no FUTEX_PRIVATE_FLAG
  }
  // futex_waitv takes an absolute deadline on the given clock.
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  std::int64_t ns = now.tv_nsec + timeout.count() % 1'000'000'000;
  timespec deadline{static_cast<time_t>(now.tv_sec + timeout.count() / 1'000'000'000 + ns / 1'000'000'000),
                    static_cast<long>(ns % 1'000'000'000)};
  long rc = ::syscall(SYS_futex_waitv, waiters, count, 0, &deadline, CLOCK_MONOTONIC);
  if (rc >= 0) return FutexResult::Woken;
  switch (errno) {
    case EAGAIN: return FutexResult::ValueChanged;
    case ETIMEDOUT: return FutexResult::TimedOut;
    case EINTR: return FutexResult::Interrupted;
    case ENOSYS:
      ::usleep(static_cast<useconds_t>(std::min<std::int64_t>(timeout.count() / 1000, 10'000)));
      return FutexResult::TimedOut;
    default: return FutexResult::Woken;
  }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  long rc = ::syscall(SYS_futex, address_of(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

}  // namespace shmstate::platform
