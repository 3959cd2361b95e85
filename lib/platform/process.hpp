// Process identity that survives pid reuse, and a liveness check
// (ARCHITECTURE.md, fact 6): a process is (pid, start time in clock ticks since
// boot = field 22 of /proc/<pid>/stat). kill(pid, 0) is not enough: it says
// "alive" for zombies and for whoever got the pid next.
#pragma once

#include <atomic>

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace shmstate::platform {

struct ProcessIdentity {
  std::int32_t pid;
  std::uint32_t reserved;    // zero; keeps start_time 8-aligned
  std::uint64_t start_time;  // clock ticks after boot; 0 = unknown
};
static_assert(sizeof(ProcessIdentity) == 16);

enum class Liveness { Alive, Dead, Unknown };

// getpid() without a system call on the hot paths (a segment signal's go()
// records its firer's pid; glibc no longer caches the pid). The value is kept
// in a page marked MADV_WIPEONFORK, which the kernel zeroes in the child of
// every fork (fork(), clone() without CLONE_VM, whoever calls it), so a child
// reads 0 and asks the kernel again: never the parent's pid. Where the page
// cannot be had (no MADV_WIPEONFORK, Linux < 4.14), every call is a getpid().
extern std::atomic<pid_t>* const g_pid_slot;  // the page; nullptr without MADV_WIPEONFORK (or before static init)
pid_t refresh_current_pid() noexcept;
inline pid_t current_pid() noexcept {
  if (g_pid_slot != nullptr)
    if (pid_t pid = g_pid_slot->load(std::memory_order_relaxed); pid != 0) return pid;
  return refresh_current_pid();
}

// The calling process (cached per thread, keyed by current_pid(), so a
// child of any fork computes its own; inline because the uncontended
// FifoLock path asks twice).
extern thread_local ProcessIdentity t_self;
ProcessIdentity refresh_self_identity(pid_t pid) noexcept;
inline ProcessIdentity self_identity() noexcept {
  pid_t pid = current_pid();
  return t_self.pid == pid ? t_self : refresh_self_identity(pid);
}

// Alive: /proc/<pid>/stat exists, its start time matches and the state is not
// Z or X. Dead: no such process, another process has the pid, or a zombie.
// Unknown: pid <= 0, or /proc unreadable for another reason.
// Only meaningful in the PID namespace the identity was taken in.
// start_mask: only those bits of the start time are compared (an identity
// packed into one word keeps only its low bits).
Liveness liveness(const ProcessIdentity& id, std::uint64_t start_mask = ~std::uint64_t{0}) noexcept;

inline bool same_process(const ProcessIdentity& a, const ProcessIdentity& b) noexcept {
  return a.pid == b.pid && a.start_time == b.start_time;
}

// For one scan over slots owned by processes: each distinct process's
// liveness is read from /proc once. Unknown counts as alive (never reclaim
// what we cannot prove dead).
class DeathCache {
 public:
  bool dead(const ProcessIdentity& id, std::uint64_t start_mask = ~std::uint64_t{0}) noexcept {
    for (const auto& s : seen_)
      if (same_process(s.id, id)) return s.dead;
    bool d = liveness(id, start_mask) == Liveness::Dead;
    seen_.push_back({id, d});
    return d;
  }

 private:
  struct Seen {
    ProcessIdentity id;
    bool dead;
  };
  std::vector<Seen> seen_;
};

// Inode of /proc/self/ns/pid (0 if unreadable): equal values mean the same
// PID namespace, where pids from the segment mean the same processes.
std::uint64_t pid_namespace_id() noexcept;

}  // namespace shmstate::platform
