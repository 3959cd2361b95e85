#include "platform/robust_mutex.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <new>
#include <optional>
#include <ctime>
#include <string>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "platform/read_only.hpp"
#include "platform/spin.hpp"
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

// The device and inode of the file mapped at `addr` in this process (from
// /proc/self/maps), or nullopt when it is not a file mapping.
struct FileId {
  unsigned long major = 0, minor = 0, inode = 0;
  bool operator==(const FileId&) const = default;
};

// Calls f(start, end, id) for each file mapping of /proc/<pid>/maps; false
// when the file cannot be read (another user's process, gone).
template <class F>
bool for_each_mapping(const std::string& pid, F f) {
  std::FILE* maps = std::fopen(("/proc/" + pid + "/maps").c_str(), "re");
  if (maps == nullptr) return false;
  char line[4096];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long start = 0, end = 0, offset = 0;
    FileId id;
    char perms[8];
    if (std::sscanf(line, "%lx-%lx %7s %lx %lx:%lx %lu", &start, &end, perms, &offset, &id.major, &id.minor,
                    &id.inode) == 7 &&
        id.inode != 0 && f(start, end, id))
      break;
  }
  bool ok = std::ferror(maps) == 0;
  std::fclose(maps);
  return ok;
}

// A holder that exists but does not map the file this mutex lives in cannot
// hold it: the lock word is damage naming some unrelated thread (pid 1, say),
// which would otherwise be waited for forever. Only said when both maps files
// could be read; another user's holder (unreadable maps) is waited for.
// Costs two reads of /proc, so it runs only after a whole slice of waiting.
std::string foreign_holder(const void* mutex, std::uint32_t tid) {
  const auto addr = reinterpret_cast<unsigned long>(mutex);
  std::optional<FileId> mine;
  if (!for_each_mapping("self", [&](unsigned long start, unsigned long end, const FileId& id) {
        if (addr < start || addr >= end) return false;
        mine = id;
        return true;
      }) ||
      !mine)
    return {};
  bool maps_it = false;
  if (!for_each_mapping(std::to_string(tid), [&](unsigned long, unsigned long, const FileId& id) {
        maps_it = id == *mine;
        return maps_it;
      }))
    return {};
  if (maps_it) return {};
  return "mutex is held by thread " + std::to_string(tid) + ", which does not map this segment";
}

}  // namespace

std::string RobustMutex::type_problem() const noexcept {
  int kind = __atomic_load_n(&m_.__data.__kind, __ATOMIC_RELAXED);
  if ((kind & ~kElisionFlags) != kExpectedKind)
    return "mutex type field is " + std::to_string(kind) + ", expected " + std::to_string(kExpectedKind) +
           " (robust, process-shared, normal)";
  return {};
}

std::string RobustMutex::problem() const noexcept {
  if (std::string p = type_problem(); !p.empty()) return p;
  std::uint32_t word = lock_word(m_);
  std::uint32_t tid = word & kTidMask;
  if (tid == 0 || (word & kOwnerDiedBit) != 0) return {};
  if (liveness(ProcessIdentity{static_cast<std::int32_t>(tid), 0, 0}) != Liveness::Dead) return {};
  // The kernel sets OWNER_DIED in the word before a dying holder's tid
  // disappears, so an unchanged word now means no such holder ever will.
  if (lock_word(m_) != word) return {};
  return "mutex is held by thread " + std::to_string(tid) + ", which does not exist";
}

void RobustMutex::check(std::string_view what, bool holder) const {
  // Locking stores into the mutex: in a PROT_READ mapping that is SIGSEGV.
  if (is_read_only(this))
    throw Error(ErrorCode::PermissionDenied,
                std::string(what) + ": the segment is open read-only (a write would lock its mutex)");
  if (std::string p = holder ? problem() : type_problem(); !p.empty())
    throw Error(ErrorCode::Corrupt, std::string(what) + ": " + p);
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

namespace {
// pthread_mutex_clocklock, told to ThreadSanitizer (tools/test.sh's TSan
// build): GCC 12's libtsan intercepts lock, trylock and unlock but not
// clocklock, so without this every lock taken here would look unheld and
// each unlock an error.
int clocklock(pthread_mutex_t* m, const timespec* ts) {
#if defined(__SANITIZE_THREAD__)
  __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
  int rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, ts);
  bool held = rc == 0 || rc == EOWNERDEAD;
  __tsan_mutex_post_lock(m, __tsan_mutex_try_lock | (held ? 0 : __tsan_mutex_try_lock_failed), 0);
  return rc;
#else
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, ts);
#endif
}
}  // namespace

namespace {

// glibc's robust mutexes never spin: a locker that finds the mutex held
// sleeps in FUTEX_WAIT and its unlocker pays FUTEX_WAKE, microseconds each,
// for critical sections that last a few hundred ns (FifoLock's queue, an
// atom's commit). So a locker first watches the word for up to kSpin
// (platform/spin.hpp) and, once it reads free, goes on to the lock below,
// whose first step is a compare-and-swap in user space: no system call when
// the mutex is still free. Not trylock: on a mutex glibc marked not
// recoverable, glibc 2.36's trylock returns ENOTRECOVERABLE and leaves the
// word holding the caller's tid, so every later locker would wait forever;
// the lock below unlocks before it reports that (Corrupt).
constexpr auto kSpin = std::chrono::nanoseconds(2'000);
#if SHMSTATE_TEST_HOOKS
std::atomic<std::uint64_t> g_blocks{0};
#endif

// True when the word read free within the spin.
bool spin_until_free(const pthread_mutex_t& m) noexcept {
  if (!spinning_helps()) return false;
  return spin_until([&] { return lock_word(m) == 0; }, kSpin, [first = true]() mutable {
    if (first) SHMSTATE_CRASH_POINT("robust_mutex.lock.spinning");
    first = false;
    return true;
  });
}

}  // namespace

LockResult RobustMutex::lock_until(std::chrono::steady_clock::time_point deadline,
                                   std::string_view what) {
  // The type field before any pthread call (glibc aborts on some); whether
  // the holder exists (a read of /proc) only before a lock that may sleep,
  // not on the way to one the spin saw free.
  check(what, false);
  const bool free = spin_until_free(m_);
  for (bool first = true;; first = false) {
    if (!(first && free)) check(what);  // before every slice: the type field may be damaged while we wait
    auto now = std::chrono::steady_clock::now();
    auto slice_end = deadline - now > kSlice ? now + kSlice : deadline;
    // steady_clock is CLOCK_MONOTONIC in libstdc++.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(slice_end.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
#if SHMSTATE_TEST_HOOKS
    if (!(first && free)) g_blocks.fetch_add(1, std::memory_order_relaxed);
#endif
    int rc = clocklock(&m_, &ts);
    if (rc != ETIMEDOUT || slice_end >= deadline) return interpret(rc, what, "clocklock");
    // Timed out within the caller's deadline: a live holder is fine (wait on),
    // a holder that does not exist is reported by check() at the loop's top,
    // one that exists but does not map this segment here.
    std::uint32_t word = lock_word(m_);
    if (std::uint32_t tid = word & kTidMask; tid != 0 && (word & kOwnerDiedBit) == 0) {
      std::string p;
      try {
        p = foreign_holder(&m_, tid);
      } catch (const std::bad_alloc&) {
      }
      if (!p.empty() && lock_word(m_) == word) throw Error(ErrorCode::Corrupt, std::string(what) + ": " + p);
    }
  }
}

void RobustMutex::mark_consistent() noexcept { pthread_mutex_consistent(&m_); }

void RobustMutex::unlock() noexcept { pthread_mutex_unlock(&m_); }

}  // namespace shmstate::platform

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
std::uint64_t shmstate::testing::robust_mutex_block_count() noexcept {
  return shmstate::platform::g_blocks.load(std::memory_order_relaxed);
}
#endif
