// Test support: real child processes and unique, self-removing segments.
//
// Child processes are fork()ed; the child runs a function and _exit()s with
// its return value, so doctest's state in the child never reports anything.
// Cross-process claims are checked in the parent from exit codes and from the
// shared segment.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <shmstate/segment.hpp>

namespace test {

#ifdef SYS_futex_waitv
inline constexpr long SYS_futex_waitv_number = SYS_futex_waitv;
#else
inline constexpr long SYS_futex_waitv_number = 449;
#endif

// A segment name unique to this process and call; removes the segment on
// scope exit, also when the test fails.
class TempSegment {
 public:
  explicit TempSegment(const std::string& tag = "t") {
    static std::atomic<int> counter{0};
    name_ = "shmstate-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    shmstate::Segment::remove(name_);
  }
  ~TempSegment() {
    try {
      shmstate::Segment::remove(name_);
    } catch (...) {
      // Not a shmstate segment (a test wrote a foreign file under this name).
      ::unlink(path().c_str());
    }
  }
  TempSegment(const TempSegment&) = delete;
  TempSegment& operator=(const TempSegment&) = delete;
  const std::string& name() const { return name_; }
  const char* c_str() const { return name_.c_str(); }
  // The file behind the segment: /dev/shm/<name>.
  std::string path() const { return "/dev/shm/" + name_; }

 private:
  std::string name_;
};

class Child {
 public:
  // Forks; the child runs fn() and _exit(fn()) (exceptions exit 99).
  explicit Child(const std::function<int()>& fn) {
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      int rc = 99;
      try {
        rc = fn();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
      } catch (...) {
      }
      ::_exit(rc);
    }
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& o) noexcept : pid_(o.pid_), reaped_(o.reaped_), status_(o.status_) { o.pid_ = -1; }

  pid_t pid() const { return pid_; }
  void kill(int sig = SIGKILL) { ::kill(pid_, sig); }

  // Waits for exit; returns the raw wait status.
  int wait() {
    if (!reaped_) {
      while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
    return status_;
  }
  // Exit code, or 128+signal if killed by a signal.
  int exit_code() { return decode(wait()); }

  // Like exit_code(), but waits at most `limit`: a child still running then is
  // SIGKILLed, reaped, and kTimedOut is returned. Use it for children that
  // could hang if the library were wrong.
  static constexpr int kTimedOut = -2;
  int exit_code_within(std::chrono::milliseconds limit) {
    if (reaped_) return decode(status_);
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status_, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        return decode(status_);
      }
      if (r < 0 && errno != EINTR) return -1;
      if (std::chrono::steady_clock::now() >= end) {
        ::kill(pid_, SIGKILL);
        wait();
        return kTimedOut;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  static int decode(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Polls cond every millisecond up to `limit`; for waiting on *other
// processes'* progress in tests, never to assert speed.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return cond();
}

// True when some thread of process `pid` is blocked in futex() or
// futex_waitv() right now (/proc/<pid>/task/<tid>/syscall starts with the
// syscall's number while it blocks). Lets a test act only once a waiter in
// another process is really asleep, so a wake (not its first look) is what
// ends its wait. The parent may read it for its own children.
inline bool asleep_in_futex(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool asleep = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::FILE* f = std::fopen((dir + "/" + e->d_name + "/syscall").c_str(), "r");
    if (f == nullptr) continue;
    long nr = -1;
    if (std::fscanf(f, "%ld", &nr) == 1 && (nr == SYS_futex || nr == SYS_futex_waitv_number)) asleep = true;
    std::fclose(f);
  }
  ::closedir(d);
  return asleep;
}

// An anonymous MAP_SHARED region of `bytes`, zeroed, created before a fork
// so parent and children share it (for platform tests that must not depend on
// Segment, and for children's reports). Unmapped on scope exit.
class SharedMemory {
 public:
  explicit SharedMemory(std::size_t bytes = 4096) : bytes_(bytes) {
    p_ = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p_ == MAP_FAILED) std::abort();
  }
  ~SharedMemory() { ::munmap(p_, bytes_); }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  // Constructs a T at the start of the region (zero-initialised memory).
  template <class T>
  T* as() {
    return static_cast<T*>(p_);
  }

 private:
  std::size_t bytes_;
  void* p_;
};

// Forks n children released together; each runs body(index) and exits with
// its return value. Returns their exit codes (Child::kTimedOut for one still
// running after `limit`, which is then killed).
template <class Body>
std::vector<int> run_children(int n, Body body, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  test::SharedMemory mem;
  auto* go = mem.as<std::atomic<int>>();
  auto* ready = reinterpret_cast<std::atomic<int>*>(mem.as<char>() + 64);
  std::vector<std::unique_ptr<test::Child>> children;
  for (int i = 0; i < n; ++i)
    children.push_back(std::make_unique<test::Child>([&, i] {
      ready->fetch_add(1);
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (go->load() == 0) {
        if (std::chrono::steady_clock::now() > end) return 97;
        std::this_thread::yield();
      }
      return body(i);
    }));
  test::eventually([&] { return ready->load() == n; });
  go->store(1);
  std::vector<int> codes;
  for (auto& c : children) codes.push_back(c->exit_code_within(limit));
  return codes;
}

}  // namespace test
