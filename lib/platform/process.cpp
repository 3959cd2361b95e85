#include "platform/process.hpp"

#include <atomic>
#include <cerrno>
#include <new>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shmstate::platform {

namespace {

struct StatFields {
  char state;
  std::uint64_t start_time;
};

// 0 on success, else errno. Parses after the last ')' because comm may hold
// spaces and parentheses.
#if SHMSTATE_TEST_HOOKS
std::atomic<std::uint64_t> g_stat_reads{0};
#endif

int read_stat(pid_t pid, StatFields& out) noexcept {
#if SHMSTATE_TEST_HOOKS
  g_stat_reads.fetch_add(1, std::memory_order_relaxed);
#endif
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  int saved = errno;
  ::close(fd);
  if (n <= 0) return n < 0 ? saved : EIO;
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return EIO;
  p += 2;  // field 3 (state) starts here
  out.state = *p;
  // Skip fields 3..21 to reach field 22 (starttime).
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return EIO;
    ++p;
  }
  char* end = nullptr;
  out.start_time = std::strtoull(p, &end, 10);
  if (end == p) return EIO;
  return 0;
}

}  // namespace

thread_local ProcessIdentity t_self{};

ProcessIdentity refresh_self_identity(pid_t pid) noexcept {
  StatFields f{};
  ProcessIdentity id{static_cast<std::int32_t>(pid), 0, 0};
  if (read_stat(pid, f) == 0) id.start_time = f.start_time;
  t_self = id;
  return id;
}

namespace {
// One page per process, made at start-up: after a fork the child inherits the
// mapping (and this pointer) with the page zeroed.
std::atomic<pid_t>* make_pid_slot() noexcept {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (::madvise(p, page, MADV_WIPEONFORK) != 0) {
    ::munmap(p, page);
    return nullptr;
  }
  return new (p) std::atomic<pid_t>(0);
}
}  // namespace

std::atomic<pid_t>* const g_pid_slot = make_pid_slot();

pid_t refresh_current_pid() noexcept {
  pid_t pid = ::getpid();
  if (g_pid_slot != nullptr) g_pid_slot->store(pid, std::memory_order_relaxed);
  return pid;
}

Liveness liveness(const ProcessIdentity& id, std::uint64_t start_mask) noexcept {
  if (id.pid <= 0) return Liveness::Unknown;
  StatFields f{};
  int err = read_stat(id.pid, f);
  if (err == ENOENT || err == ESRCH) return Liveness::Dead;
  if (err != 0) return Liveness::Unknown;
  if (id.start_time != 0 && (f.start_time & start_mask) != id.start_time) return Liveness::Dead;
  if (f.state == 'Z' || f.state == 'X' || f.state == 'x') return Liveness::Dead;
  return Liveness::Alive;
}

std::uint64_t pid_namespace_id() noexcept {
  struct stat st;
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

}  // namespace shmstate::platform

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
std::uint64_t shmstate::testing::proc_stat_read_count() noexcept {
  return shmstate::platform::g_stat_reads.load(std::memory_order_relaxed);
}
#endif
