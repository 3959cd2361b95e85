// Process identity that survives pid reuse, and a liveness check
// (ARCHITECTURE.md, fact 6): a process is (pid, start time in clock ticks since
// boot = field 22 of /proc/<pid>/stat). kill(pid, 0) is not enough: it says
// "alive" for zombies and for whoever got the pid next.
#pragma once

#include <cstdint>
#include <sys/types.h>

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

// Inode of /proc/self/ns/pid (0 if unreadable): equal values mean the same
// PID namespace, where pids from the segment mean the same processes.
std::uint64_t pid_namespace_id() noexcept;

}  // namespace shmstate::platform
