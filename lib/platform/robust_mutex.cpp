#include "platform/robust_mutex.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "platform/process.hpp"
#include "platform/system_error.hpp"

namespace shmstate::platform {

namespace {

void check_rc(int rc, const char* call) {
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

// glibc's kind word for what init() makes: PTHREAD_MUTEX_ROBUST_NORMAL_NP (16)
// | PTHREAD_MUTEX_PSHARED_BIT (128). Anything else is damage: robust+PI makes
// glibc abort, 0 is a silently non-robust process-private mutex.
// glibc also keeps its lock-elision flags (256, 512) there; those are ignored.
constexpr int kExpectedKind = 16 | 128;
constexpr int kElisionFlags = 256 | 512;
constexpr unsigned kOwnerDiedBit = 0x40000000u;  // FUTEX_OWNER_DIED
constexpr unsigned kTidMask = 0x3fffffffu;       // FUTEX_TID_MASK
// A locker waits in slices this long, checking between them that the holder
// can exist.
constexpr auto kSlice = std::chrono::milliseconds(100);

std::uint32_t lock_word(const pthread_mutex_t& m) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint32_t*>(&m.__data.__lock), __ATOMIC_ACQUIRE);
}

}  // namespace

std::string RobustMutex::problem() const noexcept {
  int kind = __atomic_load_n(&m_.__data.__kind, __ATOMIC_RELAXED);
  if ((kind & ~kElisionFlags) != kExpectedKind)
    return "mutex type field is " + std::to_string(kind) + ", expected " + std::to_string(kExpectedKind) +
           " (robust, process-shared, normal)";
  std::uint32_t word = lock_word(m_);
  std::uint32_t tid = word & kTidMask;
  if (tid == 0 || (word & kOwnerDiedBit) != 0) return {};
  if (liveness(ProcessIdentity{static_cast<std::int32_t>(tid), 0, 0}) != Liveness::Dead) return {};
  // The kernel sets OWNER_DIED in the word before a dying holder's tid
  // disappears, so an unchanged word now means no such holder ever will.
  if (lock_word(m_) != word) return {};
  return "mutex is held by thread " + std::to_string(tid) + ", which does not exist";
}

void RobustMutex::check(std::string_view what) const {
  if (std::string p = problem(); !p.empty()) throw Error(ErrorCode::Corrupt, std::string(what) + ": " + p);
}

void RobustMutex::init() {
  std::memset(this, 0, sizeof(*this));
  pthread_mutexattr_t attr;
  check_rc(pthread_mutexattr_init(&attr), "mutexattr_init");
  check_rc(pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), "setpshared");
  check_rc(pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST), "setrobust");
  check_rc(pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_NORMAL), "settype");
  int rc = pthread_mutex_init(&m_, &attr);
  pthread_mutexattr_destroy(&attr);
  check_rc(rc, "init");
}

LockResult RobustMutex::lock(std::string_view what) {
  return lock_until(std::chrono::steady_clock::time_point::max(), what);
}

LockResult RobustMutex::try_lock(std::string_view what) {
  check(what);
  return interpret(pthread_mutex_trylock(&m_), what, "trylock");
}

LockResult RobustMutex::lock_until(std::chrono::steady_clock::time_point deadline,
                                   std::string_view what) {
  for (;;) {
    check(what);  // before every slice: the type field may be damaged while we wait
    auto now = std::chrono::steady_clock::now();
    auto slice_end = deadline - now > kSlice ? now + kSlice : deadline;
    // steady_clock is CLOCK_MONOTONIC in libstdc++.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(slice_end.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    int rc = pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts);
    if (rc != ETIMEDOUT || slice_end >= deadline) return interpret(rc, what, "clocklock");
    // Timed out within the caller's deadline: a live holder is fine (wait on),
    // a holder that does not exist is reported by check() at the loop's top.
  }
}

void RobustMutex::mark_consistent() noexcept { pthread_mutex_consistent(&m_); }

void RobustMutex::unlock() noexcept { pthread_mutex_unlock(&m_); }

}  // namespace shmstate::platform
