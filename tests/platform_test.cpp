// lib/platform: futex, event count, robust mutex, process identity.
//
// Shared memory here is an anonymous MAP_SHARED region created before fork
// (test::SharedMemory), so these tests do not depend on Segment.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/error.hpp>

#include "platform/futex.hpp"
#include "platform/process.hpp"
#include "platform/robust_mutex.hpp"
#include "platform/spin.hpp"
#include "support/proc.hpp"

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

using namespace std::chrono_literals;
using shmstate::platform::FutexResult;
using shmstate::platform::LockResult;
using shmstate::platform::Liveness;
using Clock = std::chrono::steady_clock;

namespace {

// Field 22 and field 3 of /proc/<pid>/stat, read independently of the library.
struct ProcStat {
  char state = '?';
  std::uint64_t start_time = 0;
  bool ok = false;
};
ProcStat read_proc_stat(pid_t pid) {
  ProcStat r;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return r;
  char buf[2048] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr) return r;
  p += 2;
  r.state = *p;
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return r;
    ++p;
  }
  r.start_time = std::strtoull(p, nullptr, 10);
  r.ok = true;
  return r;
}

// The state the event-count and mutex tests share with their children.
struct Shared {
  std::atomic<std::uint32_t> word;
  std::atomic<std::uint32_t> flag;
  std::atomic<std::uint32_t> stage;
  std::atomic<std::uint32_t> in_progress;  // "protected state" for the robust mutex
  shmstate::detail::EventCount ec;
  alignas(64) shmstate::platform::RobustMutex mutex;
  alignas(64) shmstate::platform::RobustMutex mutex2;
};

}  // namespace

// ---------------------------------------------------------------- futex

TEST_CASE("futex_wait returns ValueChanged when the word is not the expected value") {
  test::SharedMemory mem;
  auto* word = mem.as<std::atomic<std::uint32_t>>();
  word->store(7);
  auto t0 = Clock::now();
  CHECK(shmstate::platform::futex_wait(*word, 6, 5s) == FutexResult::ValueChanged);
  CHECK(Clock::now() - t0 < 4s);  // returned at once, not after the timeout
}

TEST_CASE("futex_wait times out") {
  test::SharedMemory mem;
  auto* word = mem.as<std::atomic<std::uint32_t>>();
  word->store(1);
  auto t0 = Clock::now();
  CHECK(shmstate::platform::futex_wait(*word, 1, 30ms) == FutexResult::TimedOut);
  CHECK(Clock::now() - t0 >= 30ms);

  SUBCASE("zero and negative timeouts return TimedOut without sleeping") {
    t0 = Clock::now();
    CHECK(shmstate::platform::futex_wait(*word, 1, 0ns) == FutexResult::TimedOut);
    CHECK(shmstate::platform::futex_wait(*word, 1, -5s) == FutexResult::TimedOut);
    CHECK(Clock::now() - t0 < 1s);
  }
}

TEST_CASE("futex_wake with no waiter wakes nobody") {
  test::SharedMemory mem;
  auto* word = mem.as<std::atomic<std::uint32_t>>();
  CHECK(shmstate::platform::futex_wake(*word, INT_MAX) == 0);
}

TEST_CASE("futex_wait in one process is woken by futex_wake in another") {
  test::SharedMemory mem;
  auto* word = mem.as<std::atomic<std::uint32_t>>();
  word->store(5);
  test::Child child([&] {
    // The word never changes: only a wake from the parent ends this early.
    FutexResult r = shmstate::platform::futex_wait(*word, 5, 20s);
    return r == FutexResult::Woken ? 0 : 10 + static_cast<int>(r);
  });
  // futex_wake returns 1 only when the kernel found the child's waiter on the
  // same (shared, not private) futex key.
  int woken = 0;
  CHECK(test::eventually([&] { return (woken = shmstate::platform::futex_wake(*word, INT_MAX)) > 0; }));
  CHECK(woken == 1);
  CHECK(child.exit_code_within(10s) == 0);
}

// ---------------------------------------------------------------- event count

TEST_CASE("EventCount notify without waiters takes no slow path") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->ec.notify_all();
  s->ec.notify_all();
  CHECK(s->ec.seq.load() == 0);
  CHECK(s->ec.waiters.load() == 0);
}

TEST_CASE("EventCount notify with an armed waiter bumps the sequence once and clears the bit") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  CHECK(s->ec.arm() == 0);  // as a waiter between arming and sleeping
  CHECK(s->ec.waiters.load() == shmstate::detail::EventCount::kSleeperBit);
  s->ec.notify_all();
  CHECK(s->ec.seq.load() == 1);
  CHECK(s->ec.waiters.load() == 0);
  // Nobody re-armed: the next notifies are back to the fast path.
  s->ec.notify_all();
  CHECK(s->ec.seq.load() == 1);
  // Arming twice sets the bit once (a flag, not a count).
  s->ec.arm();
  s->ec.arm();
  s->ec.notify_all();
  CHECK(s->ec.seq.load() == 2);
  CHECK(s->ec.waiters.load() == 0);
}

TEST_CASE("EventCount wait_until") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();

  SUBCASE("returns true at once when done") {
    auto t0 = Clock::now();
    CHECK(s->ec.wait_until([] { return true; }, Clock::now() + 10s));
    CHECK(Clock::now() - t0 < 5s);
    CHECK(s->ec.waiters.load() == 0);  // never armed  // done at the first look: never armed
  }
  SUBCASE("returns false on timeout, after the deadline") {
    auto t0 = Clock::now();
    CHECK_FALSE(s->ec.wait_until([] { return false; }, t0 + 150ms));  // longer than one slice
    CHECK(Clock::now() - t0 >= 150ms);
    // The sleeper bit stays until the next notify clears it (no count to undo).
    CHECK(s->ec.waiters.load() == shmstate::detail::EventCount::kSleeperBit);
    s->ec.notify_all();
    CHECK(s->ec.waiters.load() == 0);
  }
  SUBCASE("a past deadline returns false after one check") {
    int calls = 0;
    CHECK_FALSE(s->ec.wait_until([&] { return ++calls, false; }, Clock::now() - 1s));
    CHECK(calls >= 1);
  }
}

TEST_CASE("EventCount waiter in another process is woken by notify_all") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  test::Child child([&] {
    auto t0 = Clock::now();
    bool ok = s->ec.wait_until([&] { return s->flag.load() != 0; }, t0 + 20s);
    if (!ok) return 1;
    if (Clock::now() - t0 >= 20s) return 2;
    return 0;
  });
  // Publish only once the child sleeps, so the wake (not the child's first
  // check) is what ends its wait.
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(child.pid()); }));
  s->flag.store(1);
  s->ec.notify_all();
  CHECK(s->ec.seq.load() >= 1);  // the notifier saw the waiter
  CHECK(child.exit_code_within(10s) == 0);
  s->ec.notify_all();  // clears the bit the child set before its last look
  CHECK(s->ec.waiters.load() == 0);
}

// Issue 12 item 1: a notifier that bumped the sequence but never called
// FUTEX_WAKE would still end waits, one slice late; so the wake must land
// well inside a slice. Best of several tries, so a busy machine does not flake.
TEST_CASE("EventCount: notify_all in one process wakes a sleeper in another well inside one slice") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  auto* t_notify = reinterpret_cast<std::atomic<std::int64_t>*>(reinterpret_cast<char*>(s) + 1024);
  auto* t_woke = t_notify + 1;
  auto best = std::chrono::nanoseconds::max();
  for (int attempt = 0; attempt < 5 && best >= shmstate::detail::kWaitSlice / 4; ++attempt) {
    s->flag.store(0);
    s->ec.notify_all();  // clears any bit left by the last round
    test::Child child([&] {
      bool ok = s->ec.wait_until([&] { return s->flag.load() != 0; }, Clock::now() + 20s);
      t_woke->store(Clock::now().time_since_epoch().count());
      return ok ? 0 : 1;
    });
    REQUIRE(test::eventually([&] { return s->ec.waiters.load() != 0; }));
    std::this_thread::sleep_for(5ms);  // let it reach FUTEX_WAIT
    t_notify->store(Clock::now().time_since_epoch().count());
    s->flag.store(1);
    s->ec.notify_all();
    REQUIRE(child.exit_code_within(10s) == 0);
    best = std::min(best, std::chrono::nanoseconds(t_woke->load() - t_notify->load()));
  }
  MESSAGE("best wake latency: " << best.count() / 1000 << " us");
  CHECK(best < shmstate::detail::kWaitSlice / 4);
}

// Issue 12 item 2: a waiter must check its predicate after registering and
// before sleeping; a change that lands in between, with nobody notifying
// (its notifier died, or notified before the registration), ends the wait at
// once, not one slice later.
TEST_CASE("EventCount: a predicate that turns true between registration and sleep returns at once") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  auto best = Clock::duration::max();
  for (int attempt = 0; attempt < 5 && best >= shmstate::detail::kWaitSlice / 4; ++attempt) {
    int calls = 0;
    auto t0 = Clock::now();
    // False at the first look (before registering), true from then on.
    CHECK(s->ec.wait_until([&] { return ++calls > 1; }, Clock::now() + 10s));
    best = std::min(best, Clock::now() - t0);
  }
  CHECK(best < shmstate::detail::kWaitSlice / 4);
}

// Issue 6 item 3: a waiter killed while waiting leaves nothing that makes
// later notifies slow. The first notify after the kill may clear its bit
// (one slow path); every later one is the one-load fast path.
TEST_CASE("EventCount: a SIGKILLed waiter costs later notifies at most one slow path") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  test::Child child([&] {
    s->ec.wait_until([] { return false; }, Clock::now() + 60s);
    return 0;
  });
  REQUIRE(test::eventually([&] { return s->ec.waiters.load() != 0; }));
  child.kill();
  child.wait();
  std::uint32_t seq0 = s->ec.seq.load();
  for (int i = 0; i < 1000; ++i) s->ec.notify_all();
  CHECK(s->ec.seq.load() - seq0 <= 1);  // each slow path bumps seq once
  CHECK(s->ec.waiters.load() == 0);
}

// ---------------------------------------------------------------- robust mutex

TEST_CASE("RobustMutex lock, unlock, try_lock") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();

  CHECK(s->mutex.lock("m") == LockResult::Acquired);
  CHECK(s->mutex.try_lock("m") == LockResult::Busy);  // normal type: no recursion
  // Another process sees it held too.
  test::Child other([&] { return s->mutex.try_lock("m") == LockResult::Busy ? 0 : 1; });
  CHECK(other.exit_code_within(10s) == 0);
  s->mutex.unlock();

  CHECK(s->mutex.try_lock("m") == LockResult::Acquired);
  s->mutex.unlock();
  CHECK(s->mutex.lock_until(Clock::now() + 1s, "m") == LockResult::Acquired);
  s->mutex.unlock();
  // A deadline in the past still takes a free mutex.
  CHECK(s->mutex.lock_until(Clock::now() - 1s, "m") == LockResult::Acquired);
  s->mutex.unlock();
}

TEST_CASE("RobustMutex lock_until times out while another process holds it") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  test::Child holder([&] {
    if (s->mutex.lock("m") != LockResult::Acquired) return 1;
    s->stage.store(1);
    while (s->stage.load() != 2) std::this_thread::sleep_for(1ms);  // bounded by the parent
    s->mutex.unlock();
    return 0;
  });
  REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
  auto t0 = Clock::now();
  CHECK(s->mutex.lock_until(t0 + 50ms, "m") == LockResult::TimedOut);
  CHECK(Clock::now() - t0 >= 50ms);
  CHECK(s->mutex.try_lock("m") == LockResult::Busy);
  s->stage.store(2);
  CHECK(holder.exit_code_within(10s) == 0);
  CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::Acquired);
  s->mutex.unlock();
}

TEST_CASE("RobustMutex: a process blocked on it is handed it when the holder (another process) unlocks") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  test::Child holder([&] {
    if (s->mutex.lock("m") != LockResult::Acquired) return 1;
    s->stage.store(1);
    auto end = Clock::now() + 10s;
    while (s->stage.load() != 2)
      if (Clock::now() > end) return 2;
    std::this_thread::sleep_for(50ms);  // let the parent block in the kernel
    s->mutex.unlock();
    return 0;
  });
  REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
  s->stage.store(2);
  // The holder's unlock must wake this process's wait (a shared futex); a
  // process-private wake would leave it asleep until the deadline.
  CHECK(s->mutex.lock_until(Clock::now() + 20s, "m") == LockResult::Acquired);
  s->mutex.unlock();
  CHECK(holder.exit_code_within(10s) == 0);
}

// A worker pinned to one CPU still spins when the machine has more: the
// process it waits for runs on another one (before, only this process's
// affinity counted, and pinned workers never spun).
TEST_CASE("spinning: a process pinned to one CPU spins when the machine has more, and only then") {
  cpu_set_t all;
  REQUIRE(::sched_getaffinity(1, sizeof all, &all) == 0);
  cpu_set_t mine;
  REQUIRE(::sched_getaffinity(0, sizeof mine, &mine) == 0);
  int first = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE && first < 0; ++cpu)
    if (CPU_ISSET(cpu, &mine)) first = cpu;
  REQUIRE(first >= 0);
  bool machine_has_more = CPU_COUNT(&all) > 1;
  test::Child pinned([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) return 2;
    return shmstate::platform::spinning_helps_now() == machine_has_more ? 0 : 1;
  });
  CHECK(pinned.exit_code_within(10s) == 0);
  if (!machine_has_more) MESSAGE("one CPU: only the no-spin half was checked");
}

#if SHMSTATE_TEST_HOOKS
namespace {
Shared* g_spin_shared = nullptr;

bool lockers_spin() {
  if (!shmstate::platform::spinning_helps()) MESSAGE("this process may run on one CPU only: lockers do not spin there");
  return shmstate::platform::spinning_helps();
}
}  // namespace

// glibc's robust mutexes never spin: a locker that finds one held sleeps in
// the kernel, and its unlocker pays a FUTEX_WAKE, for critical sections of a
// few hundred ns. Ours watch the word for a while first. Deterministic: the
// holder (another process) unlocks while the locker is inside its spin (the
// point robust_mutex.lock.spinning runs the release there), so a locker that
// spins takes it without a blocking call; one that does not sleeps (red
// before the spin: 1 block; the holder then unlocks after 1 s on its own).
TEST_CASE("RobustMutex: a mutex released while a locker spins is taken without sleeping in the kernel") {
  if (!lockers_spin()) return;
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  g_spin_shared = s;
  test::Child holder([&] {
    if (s->mutex.lock("m") != LockResult::Acquired) return 1;
    s->stage.store(1);
    auto end = Clock::now() + 1s;
    while (s->stage.load() != 2 && Clock::now() < end) {
    }
    s->mutex.unlock();
    s->stage.store(3);
    return 0;
  });
  REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
  shmstate::testing::at_next_point("robust_mutex.lock.spinning", [] {
    g_spin_shared->stage.store(2);  // the holder unlocks now
    while (g_spin_shared->stage.load() != 3) {
    }
  });
  auto blocks = shmstate::testing::robust_mutex_block_count();
  auto stat_reads = shmstate::testing::proc_stat_read_count();
  CHECK(s->mutex.lock("m") == LockResult::Acquired);
  CHECK(shmstate::testing::robust_mutex_block_count() - blocks == 0);
  // Nor a read of /proc for the holder (whether it exists matters only to a
  // lock that may sleep; red when check() ran in full before the spin: 1).
  CHECK(shmstate::testing::proc_stat_read_count() - stat_reads == 0);
  s->mutex.unlock();
  CHECK(holder.exit_code_within(10s) == 0);
  // Uncontended: taken at the spin's first look, no blocking call either.
  blocks = shmstate::testing::robust_mutex_block_count();
  CHECK(s->mutex.lock("m") == LockResult::Acquired);
  s->mutex.unlock();
  CHECK(shmstate::testing::robust_mutex_block_count() - blocks == 0);
}

// A mutex glibc marked not recoverable (a holder died and the next unlocked
// without making it consistent): every locker is told Corrupt, promptly, and
// none is left waiting. glibc 2.36's trylock there returns ENOTRECOVERABLE
// but leaves the word holding the caller's tid, so a spin that took the
// mutex with trylock (as 0314007 did) made the next lockers wait for good
// (found by review: the other process timed out instead).
TEST_CASE("RobustMutex: not recoverable: every locker gets Corrupt, none hangs, the word stays free") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  test::Child dier([&] { return s->mutex.lock("m") == LockResult::Acquired ? 0 : 1; });  // exits holding it
  REQUIRE(dier.exit_code_within(10s) == 0);
  REQUIRE(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::OwnerDied);
  s->mutex.unlock();  // without mark_consistent: now not recoverable
  auto* raw = reinterpret_cast<pthread_mutex_t*>(&s->mutex);
  auto corrupt = [&] {
    try {
      s->mutex.lock_until(Clock::now() + 2s, "m");
      return 1;
    } catch (const shmstate::Error& e) {
      return e.code() == shmstate::ErrorCode::Corrupt ? 0 : 2;
    }
  };
  CHECK(corrupt() == 0);
  CHECK(__atomic_load_n(&raw->__data.__lock, __ATOMIC_ACQUIRE) == 0);
  auto t0 = Clock::now();
  test::Child other([&] { return corrupt(); });
  CHECK(other.exit_code_within(10s) == 0);
  CHECK(Clock::now() - t0 < 1s);
  CHECK(corrupt() == 0);  // this thread again
}

// A locker killed while it spins holds nothing: the holder unlocks, the next
// locker takes the mutex at once and is not told of a death.
TEST_CASE("RobustMutex: a locker killed while spinning costs the others nothing") {
  if (!lockers_spin()) return;
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  REQUIRE(s->mutex.lock("m") == LockResult::Acquired);
  test::Child spinner([&] {
    shmstate::testing::arm_crash_point("robust_mutex.lock.spinning");
    s->mutex.lock("m");
    return 1;  // not reached: the crash point exits
  });
  CHECK(spinner.exit_code_within(10s) == shmstate::testing::kCrashExitCode);
  s->mutex.unlock();
  auto t0 = Clock::now();
  test::Child next([&] { return s->mutex.lock("m") == LockResult::Acquired ? 0 : 1; });
  CHECK(next.exit_code_within(10s) == 0);
  CHECK(Clock::now() - t0 < 5s);
}
#endif  // SHMSTATE_TEST_HOOKS

TEST_CASE("RobustMutex: a process blocked on it gets OwnerDied when the holder dies") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  test::Child holder([&] {
    if (s->mutex.lock("m") != LockResult::Acquired) return 1;
    s->stage.store(1);
    auto end = Clock::now() + 10s;
    while (s->stage.load() != 2)
      if (Clock::now() > end) return 2;
    std::this_thread::sleep_for(50ms);
    return 0;  // exits holding the mutex
  });
  REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
  s->stage.store(2);
  CHECK(s->mutex.lock_until(Clock::now() + 20s, "m") == LockResult::OwnerDied);
  s->mutex.mark_consistent();
  s->mutex.unlock();
  CHECK(holder.exit_code_within(10s) == 0);
  CHECK(s->mutex.try_lock("m") == LockResult::Acquired);
  s->mutex.unlock();
}

TEST_CASE("RobustMutex: a holder SIGKILLed mid-update; the next locker repairs; a third locks normally") {
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();

  test::Child victim([&]() -> int {
    if (s->mutex.lock("m") != LockResult::Acquired) return 1;
    s->in_progress.store(1);  // a half-done update
    s->stage.store(1);
    for (;;) std::this_thread::sleep_for(1s);  // killed here
  });
  REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
  victim.kill(SIGKILL);
  CHECK(victim.exit_code_within(10s) == 128 + SIGKILL);

  // Blocking calls that would hang forever if the mutex were not robust run
  // in children, waited for with a limit.
  SUBCASE("RobustLock runs repair and marks consistent; a third locker just acquires") {
    test::Child second([&] {
      int repairs = 0;
      bool died = false;
      {
        shmstate::platform::RobustLock lock(s->mutex, "m", [&]() noexcept {
          ++repairs;
          s->in_progress.store(0);  // roll the half-done update back
        });
        died = lock.owner_died();
      }
      if (!died) return 1;
      if (repairs != 1) return 2;
      if (s->in_progress.load() != 0) return 3;
      return 0;
    });
    CHECK(second.exit_code_within(10s) == 0);
    CHECK(s->in_progress.load() == 0);
    // Consistent again: the third locker (this process) acquires it plainly,
    // and so does a fourth in another process.
    CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::Acquired);
    s->mutex.unlock();
    test::Child fourth([&] {
      int repairs = 0;
      shmstate::platform::RobustLock lock(s->mutex, "m", [&]() noexcept { ++repairs; });
      return !lock.owner_died() && repairs == 0 ? 0 : 1;
    });
    CHECK(fourth.exit_code_within(10s) == 0);
    CHECK(s->mutex.try_lock("m") == LockResult::Acquired);
    s->mutex.unlock();
  }

  SUBCASE("try_lock reports OwnerDied too") {
    CHECK(s->mutex.try_lock("m") == LockResult::OwnerDied);
    s->mutex.mark_consistent();
    s->mutex.unlock();
    CHECK(s->mutex.try_lock("m") == LockResult::Acquired);
    s->mutex.unlock();
  }

  SUBCASE("lock_until reports OwnerDied too") {
    CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::OwnerDied);
    s->mutex.mark_consistent();
    s->mutex.unlock();
    CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::Acquired);
    s->mutex.unlock();
  }

  SUBCASE("a locker that dies without repairing passes OwnerDied on") {
    test::Child second([&] {
      // Takes the mutex with OwnerDied and dies holding it, never consistent.
      return s->mutex.lock("m") == LockResult::OwnerDied ? 0 : 1;
    });
    CHECK(second.exit_code_within(10s) == 0);
    CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::OwnerDied);
    s->mutex.mark_consistent();
    s->mutex.unlock();
  }

  SUBCASE("unlocking without mark_consistent makes it unrecoverable: Error(Corrupt) naming it") {
    CHECK(s->mutex.lock_until(Clock::now() + 5s, "m") == LockResult::OwnerDied);
    s->mutex.unlock();
    test::Child next([&] {
      try {
        s->mutex.lock("registry of X");
        return 1;  // lock on an unrecoverable mutex succeeded
      } catch (const shmstate::Error& e) {
        if (e.code() != shmstate::ErrorCode::Corrupt) return 2;
        if (std::string(e.what()).find("registry of X") == std::string::npos) return 3;
        return 0;
      }
    });
    CHECK(next.exit_code_within(10s) == 0);
  }
}

TEST_CASE("RobustMutex: the holding thread cannot take it again (try_lock Busy, lock_until not Acquired)") {
  // NORMAL type: the documented outcome for try_lock is Busy; lock_until
  // by the owner must time out rather than succeed.
  test::SharedMemory mem;
  auto* s = mem.as<Shared>();
  s->mutex.init();
  REQUIRE(s->mutex.lock("m") == LockResult::Acquired);
  CHECK(s->mutex.try_lock("m") == LockResult::Busy);
  LockResult r = LockResult::Acquired;
  try {
    r = s->mutex.lock_until(Clock::now() + 30ms, "m");
  } catch (const shmstate::Error& e) {
    r = LockResult::Busy;
    CHECK(e.code() == shmstate::ErrorCode::InvalidArgument);
  }
  CHECK(r != LockResult::Acquired);
  CHECK(r != LockResult::OwnerDied);
  s->mutex.unlock();
}

// ---------------------------------------------------------------- process identity

TEST_CASE("self_identity is (getpid, field 22 of /proc/self/stat)") {
  auto id = shmstate::platform::self_identity();
  CHECK(id.pid == ::getpid());
  CHECK(id.reserved == 0);
  ProcStat st = read_proc_stat(::getpid());
  REQUIRE(st.ok);
  CHECK(id.start_time != 0);
  CHECK(id.start_time == st.start_time);

  SUBCASE("a forked child gets its own identity, not the parent's cached one") {
    auto parent = id;
    test::SharedMemory mem;
    auto* out = mem.as<shmstate::platform::ProcessIdentity>();
    test::Child child([&] {
      *out = shmstate::platform::self_identity();
      return 0;
    });
    pid_t child_pid = child.pid();
    CHECK(child.exit_code_within(10s) == 0);
    CHECK(out->pid == child_pid);
    CHECK(out->pid != parent.pid);
    CHECK(out->start_time != 0);
  }
}

TEST_CASE("current_pid is getpid, also in children of fork and of a raw clone after the parent cached it") {
  using shmstate::platform::current_pid;
  CHECK(current_pid() == ::getpid());
  CHECK(current_pid() == ::getpid());  // the cached value
  test::SharedMemory mem;
  auto* seen = mem.as<std::atomic<pid_t>>();  // [0] child's, [1] its own getpid, [2] grandchild's, [3] its getpid
  SUBCASE("fork(), and a grandchild forked by a child that cached its own") {
    test::Child child([&] {
      seen[0].store(current_pid());
      seen[1].store(::getpid());
      test::Child grandchild([&] {
        seen[2].store(current_pid());
        seen[3].store(::getpid());
        return 0;
      });
      return grandchild.exit_code_within(10s);
    });
    CHECK(child.exit_code_within(10s) == 0);
    CHECK(seen[0].load() == child.pid());
    CHECK(seen[0].load() == seen[1].load());
    CHECK(seen[2].load() == seen[3].load());
    CHECK(seen[2].load() != seen[0].load());
  }
  SUBCASE("a raw clone(SIGCHLD) system call: glibc's fork handlers do not run, the child still reads its own pid") {
    long pid = ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    REQUIRE(pid >= 0);
    if (pid == 0) {
      seen[0].store(current_pid());
      seen[1].store(static_cast<pid_t>(::syscall(SYS_getpid)));
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(static_cast<pid_t>(pid), &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(seen[0].load() == static_cast<pid_t>(pid));
    CHECK(seen[1].load() == static_cast<pid_t>(pid));
  }
  CHECK(current_pid() == ::getpid());
}

TEST_CASE("liveness") {
  using shmstate::platform::liveness;
  using shmstate::platform::ProcessIdentity;
  auto self = shmstate::platform::self_identity();

  SUBCASE("Alive for self") { CHECK(liveness(self) == Liveness::Alive); }

  SUBCASE("Alive for a running child, Dead once it is reaped") {
    test::SharedMemory mem;
    auto* s = mem.as<Shared>();
    auto* id = reinterpret_cast<ProcessIdentity*>(reinterpret_cast<char*>(mem.as<char>()) + 1024);
    test::Child child([&] {
      *id = shmstate::platform::self_identity();
      s->stage.store(1);
      while (s->stage.load() != 2) std::this_thread::sleep_for(1ms);
      return 0;
    });
    REQUIRE(test::eventually([&] { return s->stage.load() == 1; }));
    CHECK(liveness(*id) == Liveness::Alive);
    s->stage.store(2);
    CHECK(child.exit_code_within(10s) == 0);
    CHECK(liveness(*id) == Liveness::Dead);
  }

  SUBCASE("Dead for an unreaped zombie child (kill(pid, 0) would say alive)") {
    test::SharedMemory mem;
    auto* id = mem.as<ProcessIdentity>();
    test::Child child([&] {
      *id = shmstate::platform::self_identity();
      return 0;
    });
    // Wait for the exit without reaping: the child stays a zombie.
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);
    REQUIRE(read_proc_stat(child.pid()).state == 'Z');
    REQUIRE(::kill(child.pid(), 0) == 0);
    CHECK(id->pid == child.pid());
    CHECK(liveness(*id) == Liveness::Dead);
    CHECK(child.exit_code() == 0);
  }

  SUBCASE("Dead when the start time does not match (pid reused)") {
    ProcessIdentity other = self;
    other.start_time = self.start_time + 1;
    CHECK(liveness(other) == Liveness::Dead);
    other.start_time = self.start_time - 1;
    CHECK(liveness(other) == Liveness::Dead);
  }

  SUBCASE("start time 0 means unknown start time: judged by the pid alone") {
    ProcessIdentity other = self;
    other.start_time = 0;
    CHECK(liveness(other) == Liveness::Alive);
  }

  SUBCASE("Dead for a pid no process has") {
    // Beyond pid_max (at most 2^22 on Linux).
    CHECK(liveness(ProcessIdentity{(1 << 22) + 12345, 0, 1}) == Liveness::Dead);
  }

  SUBCASE("Unknown for pid <= 0") {
    CHECK(liveness(ProcessIdentity{0, 0, 1}) == Liveness::Unknown);
    CHECK(liveness(ProcessIdentity{-1, 0, 1}) == Liveness::Unknown);
  }
}

TEST_CASE("pid_namespace_id is the inode of /proc/self/ns/pid") {
  auto ns = shmstate::platform::pid_namespace_id();
  CHECK(ns != 0);
  struct stat st;
  REQUIRE(::stat("/proc/self/ns/pid", &st) == 0);
  CHECK(ns == static_cast<std::uint64_t>(st.st_ino));
}
