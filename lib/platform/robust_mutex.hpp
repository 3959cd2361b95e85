// A process-shared robust mutex that lives in shared memory
// (ARCHITECTURE.md, fact 5; iceoryx's mutex.hpp for the "owner died" outcome).
//
// The kernel is the owner-death detector: when a holder dies, the next locker
// gets OwnerDied and owns the mutex; it must make the protected state
// consistent (roll the dead owner's half-done step forward or back) and then
// call mark_consistent() before unlock(). RobustLock does that dance.
//
// Never leave the mutex unlocked without mark_consistent() after OwnerDied:
// it would become ENOTRECOVERABLE for good, and glibc 2.36's trylock on such a
// mutex leaves it locked forever. We report that state as Error(Corrupt).
//
// Layout: one pthread_mutex_t (40 bytes on x86_64 glibc) padded to 64.
// Keep the segment mapped for the life of the process (fact 5, BZ 14485).
#pragma once

#include <pthread.h>

#include <chrono>
#include <string>
#include <string_view>
#include <type_traits>

namespace shmstate::platform {

enum class LockResult { Acquired, OwnerDied, Busy, TimedOut };

class RobustMutex {
 public:
  // Initialises the mutex in place (robust, process-shared, normal type).
  // REQUIRES: no other process can see this memory yet.
  void init();

  // Every lock call first validates the mutex (see problem()) and throws
  // Error(Corrupt) naming `what` if it is damaged, instead of handing glibc a
  // type it aborts on or waiting on a holder that does not exist.
  //
  // Blocks, in slices of 100 ms: between slices it re-validates, so a lock
  // word naming a thread that does not exist (and without the kernel's
  // OWNER_DIED bit) ends the wait with Corrupt; a live holder that holds for
  // long is waited for. Returns Acquired or OwnerDied (both mean: you hold it).
  // Throws Error(Corrupt) naming `what` if the mutex is unrecoverable.
  // Limit: thread ids are checked in the caller's PID namespace.
  LockResult lock(std::string_view what);
  // Returns Acquired, OwnerDied or Busy.
  LockResult try_lock(std::string_view what);
  // Returns Acquired, OwnerDied or TimedOut.
  LockResult lock_until(std::chrono::steady_clock::time_point deadline, std::string_view what);

  // Empty if the mutex looks sound; else what is wrong with it: a type field
  // other than robust, process-shared, normal; or a holder thread id that does
  // not exist while the word lacks OWNER_DIED. Reads only (for dump/info).
  std::string problem() const noexcept;
  // Throws Error(Corrupt) "<what>: <problem()>" if problem() is not empty
  // (only the type field's part when `holder` is false: no read of /proc).
  void check(std::string_view what, bool holder = true) const;

  void mark_consistent() noexcept;
  void unlock() noexcept;

 private:
  std::string type_problem() const noexcept;  // problem()'s type-field part
  pthread_mutex_t m_;
  [[maybe_unused]] char pad_[64 - sizeof(pthread_mutex_t)];  // keeps the size fixed
};
static_assert(sizeof(pthread_mutex_t) == 40, "layout assumes x86_64/aarch64 glibc");
static_assert(sizeof(RobustMutex) == 64);
static_assert(std::is_standard_layout_v<RobustMutex>);

// RAII lock. If the previous owner died, runs repair() (which must be
// noexcept: the state must be made consistent no matter what) and then marks
// the mutex consistent. owner_died() tells the caller it happened.
class RobustLock {
 public:
  template <class Repair>
  RobustLock(RobustMutex& m, std::string_view what, Repair&& repair) : m_(&m) {
    static_assert(std::is_nothrow_invocable_v<Repair&>, "repair must be noexcept");
    if (m.lock(what) == LockResult::OwnerDied) {
      owner_died_ = true;
      repair();
      m.mark_consistent();
    }
  }
  ~RobustLock() { m_->unlock(); }
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;

  bool owner_died() const noexcept { return owner_died_; }

 private:
  RobustMutex* m_;
  bool owner_died_ = false;
};

}  // namespace shmstate::platform
