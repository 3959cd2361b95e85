// Process identity that survives pid reuse, and a liveness check
// (ARCHITECTURE.md, fact 6): a process is (pid, start time in clock ticks since
// boot = field 22 of /proc/<pid>/stat). kill(pid, 0) is not enough: it says
// "alive" for zombies and for whoever got the pid next.
#pragma once

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

// The calling process (re-read after fork: the pid is checked on every call).
ProcessIdentity self_identity() noexcept;

// Alive: /proc/<pid>/stat exists, its start time matches and the state is not
// Z or X. Dead: no such process, another process has the pid, or a zombie.
// Unknown: pid <= 0, or /proc unreadable for another reason.
// Only meaningful in the PID namespace the identity was taken in.
Liveness liveness(const ProcessIdentity& id) noexcept;

inline bool same_process(const ProcessIdentity& a, const ProcessIdentity& b) noexcept {
  return a.pid == b.pid && a.start_time == b.start_time;
}

// For one scan over slots owned by processes: each distinct process's
// liveness is read from /proc once. Unknown counts as alive (never reclaim
// what we cannot prove dead).
class DeathCache {
 public:
  bool dead(const ProcessIdentity& id) noexcept {
    for (const auto& s : seen_)
      if (same_process(s.id, id)) return s.dead;
    bool d = liveness(id) == Liveness::Dead;
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
