// Bounded spinning before a sleep (FifoLock's queue head, the robust mutex).
//
// A wait that is usually short (a critical section of a few hundred ns, a
// grant on its way) is cheaper watched than slept through: a futex sleep and
// wake cost microseconds and a trip through the scheduler on both sides. The
// spin is bounded, so a long hold or a preempted holder costs the spinner at
// most that bound of CPU, and it does not run when no other CPU can run the
// process waited for (spinning_helps), where it would only keep that process
// off the one CPU.
#pragma once

#include <sched.h>

#include <chrono>
#include <cstdint>

namespace shmstate::platform {

// True when the process we wait for can be running on another CPU while
// this one spins: this process may run on more than one CPU, or it is
// pinned to one (a worker per core, as benchmarks and servers pin them) but
// the machine, as its init process (pid 1: the container's, in a PID
// namespace) sees it, has more. A container or cpuset of one CPU has one
// CPU for pid 1 too, and nothing spins there. (Asking only this process's
// affinity made pinned workers never spin: every contended handover between
// two pinned processes went through FUTEX_WAIT and FUTEX_WAKE.) Without a PID
// namespace a cpuset of one CPU still spins (pid 1 sees all CPUs): at most
// the bound per wait. Read once per process: a process whose affinity
// changes later keeps its first answer, at the same cost.
inline bool spinning_helps_now() noexcept {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1) return true;
  return ::sched_getaffinity(1, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
}
inline bool spinning_helps() noexcept {
  static const bool many = spinning_helps_now();
  return many;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Calls done() until it returns true (returns true), `bound` passes or
// on_check() returns false (returns false). on_check and a clock read run
// after the first call of done() and then once per 64 (a crash point, a stop
// check).
template <class Done, class OnCheck>
bool spin_until(Done&& done, std::chrono::nanoseconds bound, OnCheck&& on_check) noexcept {
  using Clock = std::chrono::steady_clock;
  Clock::time_point end{};
  for (std::uint32_t i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 0) {
      if (!on_check()) return false;
      auto now = Clock::now();
      if (i == 0)
        end = now + bound;
      else if (now >= end)
        return false;
    }
    cpu_relax();
  }
}

}  // namespace shmstate::platform
