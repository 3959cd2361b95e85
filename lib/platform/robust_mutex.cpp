#include "platform/robust_mutex.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "platform/system_error.hpp"

namespace shmstate::platform {

namespace {

void check(int rc, const char* call) {
  if (rc != 0) throw_errno(rc, std::string("robust mutex: ") + call);
}

LockResult interpret(int rc, std::string_view what, const char* call) {
  switch (rc) {
    case 0: return LockResult::Acquired;
    case EOWNERDEAD: return LockResult::OwnerDied;
    case EBUSY: return LockResult::Busy;
    case ETIMEDOUT: return LockResult::TimedOut;
    case ENOTRECOVERABLE:
      throw Error(ErrorCode::Corrupt,
                  std::string(what) + ": mutex is unrecoverable (a previous owner died and the state was never made consistent)");
    case EDEADLK:
      throw Error(ErrorCode::InvalidArgument, std::string(what) + ": this thread already holds the mutex");
    default:
      throw_errno(rc, std::string(what) + ": " + call);
  }
}

}  // namespace

void RobustMutex::init() {
  std::memset(this, 0, sizeof(*this));
  pthread_mutexattr_t attr;
  check(pthread_mutexattr_init(&attr), "mutexattr_init");
  check(pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), "setpshared");
  check(pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST), "setrobust");
  check(pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_NORMAL), "settype");
  int rc = pthread_mutex_init(&m_, &attr);
  pthread_mutexattr_destroy(&attr);
  check(rc, "init");
}

LockResult RobustMutex::lock(std::string_view what) {
  return interpret(pthread_mutex_lock(&m_), what, "lock");
}

LockResult RobustMutex::try_lock(std::string_view what) {
  return interpret(pthread_mutex_trylock(&m_), what, "trylock");
}

LockResult RobustMutex::lock_until(std::chrono::steady_clock::time_point deadline,
                                   std::string_view what) {
  // steady_clock is CLOCK_MONOTONIC in libstdc++.
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  if (ns < 0) ns = 0;
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  return interpret(pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts), what, "clocklock");
}

void RobustMutex::mark_consistent() noexcept { pthread_mutex_consistent(&m_); }

void RobustMutex::unlock() noexcept { pthread_mutex_unlock(&m_); }

}  // namespace shmstate::platform
