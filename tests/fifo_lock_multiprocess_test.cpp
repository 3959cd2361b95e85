// FifoLock across real processes: fifolock's suite translated, FIFO order of N
// processes, SIGKILL of holders, waiters and zombies, crash points, wake-ups.
#include <doctest/doctest.h>

#include <sched.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "support/crash_at.hpp"
#include "support/fifo_lock_helpers.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::FifoLock;
using shmstate::LockModes;
using shmstate::Segment;
using B = std::vector<bool>;
using Clock = std::chrono::steady_clock;

namespace {
struct Fixture {
  test::TempSegment t{"flmp"};
  Segment seg = Segment::create(t.name());
  Fixture(const LockModes& modes) { seg.fifo_lock("l", modes); }
  test::Holders holders{t.name(), "l"};
};
}  // namespace

TEST_CASE("fifolock: mutex blocks mutex; one lock object reused") {
  Fixture f(LockModes::exclusive());
  f.holders.start(0, "exclusive");
  f.holders.start(1, "exclusive");
  CHECK(f.holders.acquired(2) == B{true, false});
  f.holders.complete(0);
  CHECK(f.holders.acquired(2) == B{true, true});
  f.holders.complete(1);
}

TEST_CASE("fifolock: independent locks do not block each other") {
  test::TempSegment t("flmp");
  auto seg = Segment::create(t.name());
  seg.fifo_lock("a", LockModes::exclusive());
  seg.fifo_lock("b", LockModes::exclusive());
  test::Holders a(t.name(), "a"), b(t.name(), "b");
  a.start(0, "exclusive");
  b.start(0, "exclusive");
  CHECK(a.acquired(1) == B{true});
  CHECK(b.acquired(1) == B{true});
  a.complete(0);
  b.complete(0);
}

TEST_CASE("fifolock: an exception in the body releases the lock") {
  Fixture f(LockModes::exclusive());
  auto lock = f.seg.open_fifo_lock("l");
  bool caught = false;
  try {
    auto g = lock.acquire();
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught);
  f.holders.start(0, "exclusive");
  CHECK(f.holders.acquired(1) == B{true});
  f.holders.complete(0);
}

TEST_CASE("fifolock: cancel while queued grants the waiter behind at once (unlike the seed)") {
  Fixture f(LockModes::read_write());
  f.holders.start(0, "read");
  // A writer in this process queues, then is stopped; the reader behind it
  // (compatible with the held read) must be granted without any release.
  auto lock = f.seg.open_fifo_lock("l");
  std::stop_source src;
  std::optional<shmstate::FifoLock::Guard> w;
  std::thread writer([&] { w = lock.acquire("write", src.get_token()); });
  REQUIRE(test::eventually([&] { return test::queued(f.seg, "l") == 1; }));
  f.holders.start(1, "read");
  CHECK(f.holders.acquired(2) == B{true, false});
  src.request_stop();
  writer.join();
  CHECK_FALSE(w.has_value());
  CHECK(f.holders.acquired(2) == B{true, true});
  f.holders.complete(0);
  f.holders.complete(1);
}

TEST_CASE("fifolock: cancel while holding (a killed holder) lets the next in") {
  Fixture f(LockModes::exclusive());
  f.holders.start(0, "exclusive");
  f.holders.start(1, "exclusive");
  f.holders.start(2, "exclusive");
  f.holders.complete(0);
  REQUIRE(test::eventually([&] { return f.holders.board().acquired[1].load() == 1; }));  // a loaded machine
  CHECK(f.holders.acquired(3) == B{true, true, false});
  f.holders.child(1).kill();
  f.holders.child(1).wait();
  REQUIRE(test::eventually([&] { return f.holders.board().acquired[2].load() == 1; }, 2s));
  CHECK(f.holders.board().died[2] == 1);
  f.holders.complete(2);
}

TEST_CASE("fifolock: W blocks W, W blocks R, R allows R, R blocks W") {
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "write");
    f.holders.start(1, "write");
    CHECK(f.holders.acquired(2) == B{true, false});
    f.holders.complete(0);
    CHECK(f.holders.acquired(2) == B{true, true});
    f.holders.complete(1);
  }
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "write");
    f.holders.start(1, "read");
    CHECK(f.holders.acquired(2) == B{true, false});
    f.holders.complete(0);
    CHECK(f.holders.acquired(2) == B{true, true});
    f.holders.complete(1);
  }
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "read");
    f.holders.start(1, "read");
    CHECK(f.holders.acquired(2) == B{true, true});
    f.holders.complete(0);
    f.holders.complete(1);
  }
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "read");
    f.holders.start(1, "write");
    CHECK(f.holders.acquired(2) == B{true, false});
    f.holders.complete(0);
    CHECK(f.holders.acquired(2) == B{true, true});
    f.holders.complete(1);
  }
}

TEST_CASE("fifolock: reads released out of order still block W; W,R,W keep order") {
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "read");
    f.holders.start(1, "read");
    f.holders.start(2, "write");
    CHECK(f.holders.acquired(3) == B{true, true, false});
    f.holders.complete(1);
    CHECK(f.holders.acquired(3) == B{true, true, false});
    f.holders.complete(0);
    CHECK(f.holders.acquired(3) == B{true, true, true});
    f.holders.complete(2);
  }
  {
    Fixture f(LockModes::read_write());
    f.holders.start(0, "write");
    f.holders.start(1, "read");
    f.holders.start(2, "write");
    CHECK(f.holders.acquired(3) == B{true, false, false});
    f.holders.complete(0);
    CHECK(f.holders.acquired(3) == B{true, true, false});
    f.holders.complete(1);
    CHECK(f.holders.acquired(3) == B{true, true, true});
    f.holders.complete(2);
  }
}

TEST_CASE("fifolock: semaphore(2) in and out of order") {
  for (int first : {0, 1}) {
    Fixture f(LockModes::semaphore(2));
    f.holders.start(0, "permit");
    f.holders.start(1, "permit");
    f.holders.start(2, "permit");
    CHECK(f.holders.acquired(3) == B{true, true, false});
    f.holders.complete(first);
    CHECK(f.holders.acquired(3) == B{true, true, true});
    f.holders.complete(1 - first);
    f.holders.complete(2);
  }
}

TEST_CASE("8 processes queued in a known order are granted in exactly that order, tokens increasing") {
  Fixture f(LockModes::exclusive());
  auto lock = f.seg.open_fifo_lock("l");
  auto g = lock.acquire();
  constexpr int kN = 8;
  for (int i = 0; i < kN; ++i) f.holders.start(i, "exclusive");
  CHECK(test::queued(f.seg, "l") == kN);
  auto& b = f.holders.board();
  for (int i = 0; i < kN; ++i) b.release[i] = 1;  // each releases as soon as it holds
  g.release();
  for (int i = 0; i < kN; ++i) CHECK(f.holders.child(i).exit_code_within(10s) == 0);
  REQUIRE(b.next.load() == kN);
  for (int k = 0; k < kN; ++k) CHECK(b.order[k].load() == k);
  for (int k = 1; k < kN; ++k) CHECK(b.token[k].load() > b.token[k - 1].load());
  CHECK(b.token[0].load() > g.token());
}

TEST_CASE("SIGKILL of a queued waiter: the compatible request behind it is granted within 1 s") {
  Fixture f(LockModes::read_write());
  f.holders.start(0, "read");
  f.holders.start(1, "write");
  f.holders.start(2, "read");
  CHECK(f.holders.acquired(3) == B{true, false, false});
  f.holders.child(1).kill();
  f.holders.child(1).wait();
  auto start = Clock::now();
  REQUIRE(test::eventually([&] { return f.holders.board().acquired[2].load() == 1; }, 3s));
  CHECK(Clock::now() - start < 1s);
  CHECK(test::queued(f.seg, "l") == 0);
  CHECK(f.holders.board().died[2] == 0);  // a dead waiter is not a dead holder
  f.holders.complete(0);
  f.holders.complete(2);
}

TEST_CASE("SIGKILL of a holder left an unreaped zombie: the waiter is granted within 1 s and told") {
  Fixture f(LockModes::exclusive());
  f.holders.start(0, "exclusive");
  f.holders.start(1, "exclusive");
  f.holders.child(0).kill();  // not reaped: stays a zombie while we check
  auto start = Clock::now();
  REQUIRE(test::eventually([&] { return f.holders.board().acquired[1].load() == 1; }, 3s));
  CHECK(Clock::now() - start < 1s);
  CHECK(f.holders.board().died[1] == 1);
  f.holders.complete(1);
  // The next grant is not told again.
  auto g = f.seg.open_fifo_lock("l").acquire();
  CHECK_FALSE(g.previous_holder_died());
}

TEST_CASE("a dead holder found by a later request (nobody waiting at the time)") {
  Fixture f(LockModes::exclusive());
  f.holders.start(0, "exclusive");
  f.holders.child(0).kill();
  f.holders.child(0).wait();
  auto g = f.seg.open_fifo_lock("l").acquire_for(3s);
  REQUIRE(g.has_value());
  CHECK(g->previous_holder_died());
}

TEST_CASE("a dead holder found by try_acquire alone (nobody ever waits)") {
  Fixture f(LockModes::exclusive());
  f.holders.start(0, "exclusive");
  f.holders.child(0).kill();
  f.holders.child(0).wait();
  auto lock = f.seg.open_fifo_lock("l");
  auto start = Clock::now();
  std::optional<shmstate::FifoLock::Guard> g;
  REQUIRE(test::eventually([&] { return (g = lock.try_acquire()).has_value(); }, 3s));
  CHECK(Clock::now() - start < 1s);
  CHECK(g->previous_holder_died());
}

TEST_CASE("a release wakes a waiter in another process well inside one wait slice") {
  Fixture f(LockModes::exclusive());
  auto lock = f.seg.open_fifo_lock("l");
  test::SharedMemory mem;
  auto* got_ns = mem.as<std::atomic<std::int64_t>>();
  std::int64_t best = INT64_MAX;
  for (int attempt = 0; attempt < 3; ++attempt) {
    got_ns->store(0);
    auto g = lock.acquire();
    test::Child waiter([&] {
      auto l = Segment::open(f.t.name()).open_fifo_lock("l");
      auto h = l.acquire();
      got_ns->store(shmstate::detail::steady_ns());
      return 0;
    });
    // Asleep in the kernel: a release before its sleep would change the word
    // it sleeps on, and the wait would end without any FUTEX_WAKE.
    REQUIRE(test::eventually([&] { return test::queued(f.seg, "l") == 1 && test::asleep_in_futex(waiter.pid()); }));
    std::int64_t released = shmstate::detail::steady_ns();
    g.release();
    REQUIRE(waiter.exit_code_within(5s) == 0);
    best = std::min(best, got_ns->load() - released);
  }
  CHECK(best < 30'000'000);  // 30 ms; a missing FUTEX_WAKE costs ~100 ms (one slice)
}

#if SHMSTATE_TEST_HOOKS  // crash points and the wake counter need a build with -Dtest_hooks=true
using test::crash_at;

namespace {
// Process state letter from /proc/<pid>/stat ('T' once SIGSTOP took effect).
char proc_state(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return '?';
  char buf[512] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* close = std::strrchr(buf, ')');
  return n > 0 && close != nullptr && close[1] == ' ' ? close[2] : '?';
}

// The slot of the one request queued on lock "l".
shmstate::detail::FifoLockSlot* queued_slot(const Segment& seg) {
  auto* st = test::lock_state(seg, "l");
  for (std::uint32_t i = 0; i < st->slot_count; ++i)
    if (shmstate::detail::fifo_slots(st)[i].state.load() == shmstate::detail::kSlotWaiting)
      return &shmstate::detail::fifo_slots(st)[i];
  return nullptr;
}

bool several_cpus() {
  cpu_set_t set;
  return ::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
}
}  // namespace

TEST_CASE("a waiter announces its sleep in its slot word; a grant wakes only a waiter that announced it") {
  using shmstate::detail::kWordAsleep;
  using shmstate::detail::kWordGranted;
  using shmstate::detail::kWordWaiting;
  for (const bool announced : {true, false}) {
  CAPTURE(announced);
  Fixture f(LockModes::exclusive());
  auto lock = f.seg.open_fifo_lock("l");
  std::optional<FifoLock::Guard> g = lock.acquire();
  test::Child waiter([&] {
    auto h = Segment::open(f.t.name()).open_fifo_lock("l").acquire();
    return 0;
  });
  REQUIRE(test::eventually([&] { return test::queued(f.seg, "l") == 1 && test::asleep_in_futex(waiter.pid()); }));
  auto* sl = queued_slot(f.seg);
  REQUIRE(sl != nullptr);
  // Asleep in FUTEX_WAIT: it said so first (red when waiters sleep unannounced).
  CHECK(sl->word.load() == (kWordWaiting | kWordAsleep));
  if (!announced) {
    // What a waiter still spinning on its word looks like: stopped, so it
    // cannot announce again, and the announcement taken away.
    waiter.kill(SIGSTOP);
    REQUIRE(test::eventually([&] { return proc_state(waiter.pid()) == 'T'; }));
    sl->word.store(kWordWaiting);
  }
  auto wakes = shmstate::testing::fifo_lock_wake_count();
  g.reset();
  CHECK(sl->word.load() == kWordGranted);
  // One FUTEX_WAKE for the sleeper; none for a waiter that never said it
  // sleeps (red when every grant pays a FUTEX_WAKE).
  CHECK(shmstate::testing::fifo_lock_wake_count() - wakes == (announced ? 1u : 0u));
  if (!announced) waiter.kill(SIGCONT);
  // Either way the waiter takes its grant (the unannounced one at the latest
  // when its slice ends), releases, and the lock is idle again.
  REQUIRE(waiter.exit_code_within(5s) == 0);
  CHECK(test::queued(f.seg, "l") == 0);
  CHECK(test::lock_state(f.seg, "l")->fast.word.load() == 0);
  }
}

TEST_CASE("crash points inside acquire, release and reclaim: survivors go on") {
  auto name = [](const Fixture& f) { return f.t.name(); };
  SUBCASE("acquire.after_grant: the next acquire is told the holder died") {
    // A grant at once under the mutex: the lock is not idle (a reader holds
    // it by the fast path), so a second reader takes a slot.
    Fixture f(LockModes::read_write());
    auto lock = f.seg.open_fifo_lock("l");
    auto reader = lock.acquire("read");
    crash_at("fifo_lock.acquire.after_grant", [&] { Segment::open(name(f)).open_fifo_lock("l").acquire("read"); });
    reader.release();
    auto g = lock.acquire_for("write", 3s);
    REQUIRE(g.has_value());
    CHECK(g->previous_holder_died());
  }
  SUBCASE("fast.after_claim: a holder killed right after the fast swap is reclaimed within 1 s, and told") {
    Fixture f(LockModes::exclusive());
    crash_at("fifo_lock.fast.after_claim", [&] { Segment::open(name(f)).open_fifo_lock("l").acquire(); });
    auto start = Clock::now();
    auto g = f.seg.open_fifo_lock("l").acquire_for(3s);
    REQUIRE(g.has_value());
    CHECK(Clock::now() - start < 1s);
    CHECK(g->previous_holder_died());
    // No lasting cost: once the table is empty the lock is idle again and
    // the next request takes the fast path (its word names this process).
    g->release();
    auto* st = test::lock_state(f.seg, "l");
    CHECK(st->fast.word.load() == 0);
    auto again = f.seg.open_fifo_lock("l").acquire();
    CHECK(st->fast.word.load() == shmstate::detail::fast_word(shmstate::platform::self_identity(), 0));
  }
  SUBCASE("acquire.after_enqueue: the dead request leaves the queue") {
    Fixture f(LockModes::exclusive());
    auto lock = f.seg.open_fifo_lock("l");
    {
      auto g = lock.acquire();
      crash_at("fifo_lock.acquire.after_enqueue", [&] { Segment::open(name(f)).open_fifo_lock("l").acquire(); });
    }
    f.holders.start(0, "exclusive");
    CHECK(f.holders.acquired(1) == B{true});
    f.holders.complete(0);
    CHECK(test::queued(f.seg, "l") == 0);
  }
  SUBCASE("release.after_free/after_grant, fast_release.after_drop/after_grant: the waiter is granted within 1 s") {
    for (const char* point : {"fifo_lock.release.after_free", "fifo_lock.release.after_grant",
                              "fifo_lock.fast_release.after_drop", "fifo_lock.fast_release.after_grant"}) {
      CAPTURE(point);
      Fixture f(LockModes::exclusive());
      test::SharedMemory mem;
      auto* held = mem.as<std::atomic<int>>();
      // The slot release points need a hold with a slot: one granted from the
      // queue (this process holds first, by the fast path).
      const bool slot_hold = std::string_view(point).starts_with("fifo_lock.release.");
      std::optional<FifoLock::Guard> first;
      if (slot_hold) first = f.seg.open_fifo_lock("l").acquire();
      test::Child holder([&] {
        auto g = Segment::open(name(f)).open_fifo_lock("l").acquire();
        held->store(1);
        while (held->load() != 2) std::this_thread::sleep_for(100us);
        shmstate::testing::arm_crash_point(point);
        g.release();
        return 0;
      });
      if (slot_hold) {
        REQUIRE(test::eventually([&] { return test::queued(f.seg, "l") == 1; }));
        first->release();
      }
      REQUIRE(test::eventually([&] { return held->load() == 1; }));
      f.holders.start(0, "exclusive");
      held->store(2);
      REQUIRE(holder.exit_code_within(10s) == shmstate::testing::kCrashExitCode);
      auto start = Clock::now();
      REQUIRE(test::eventually([&] { return f.holders.board().acquired[0].load() == 1; }, 3s));
      CHECK(Clock::now() - start < 1s);
      CHECK(f.holders.board().died[0] == 0);  // it had released
      f.holders.complete(0);
    }
  }
  SUBCASE("wait.spinning, wait.after_announce: a waiter killed mid-spin or between announcing its sleep and "
          "sleeping costs the others nothing lasting") {
    for (const char* point : {"fifo_lock.wait.spinning", "fifo_lock.wait.after_announce"}) {
      const std::string where = point;
      CAPTURE(where);
      if (std::string_view(point) == "fifo_lock.wait.spinning" && !several_cpus()) {
        MESSAGE("one CPU: waiters do not spin; skipping " << point);
        continue;
      }
      Fixture f(LockModes::exclusive());
      auto lock = f.seg.open_fifo_lock("l");
      std::optional<FifoLock::Guard> g = lock.acquire();
      // Queued first (the head, so it spins), and dies there.
      crash_at(point, [&] { Segment::open(name(f)).open_fifo_lock("l").acquire(); });
      f.holders.start(0, "exclusive");
      auto start = Clock::now();
      g.reset();
      REQUIRE(test::eventually([&] { return f.holders.board().acquired[0].load() == 1; }, 3s));
      CHECK(Clock::now() - start < 1s);
      f.holders.complete(0);
      // Nothing left behind: no queued request, the fast path open again,
      // and a release with nobody queued wakes nobody.
      CHECK(test::queued(f.seg, "l") == 0);
      CHECK(test::lock_state(f.seg, "l")->fast.word.load() == 0);
      auto wakes = shmstate::testing::fifo_lock_wake_count();
      for (int i = 0; i < 100; ++i) lock.acquire();
      CHECK(shmstate::testing::fifo_lock_wake_count() == wakes);
    }
  }
  SUBCASE("reclaim.after_free: the reclaimer dies midway; the next one finishes the job") {
    Fixture f(LockModes::exclusive());
    {
      auto first = f.seg.open_fifo_lock("l").acquire();  // so that child 0's hold has a slot
      f.holders.start(0, "exclusive");
    }
    REQUIRE(test::eventually([&] { return f.holders.board().acquired[0].load() == 1; }));
    f.holders.child(0).kill();
    f.holders.child(0).wait();
    std::this_thread::sleep_for(150ms);  // older than a slice: the next request reclaims it
    crash_at("fifo_lock.reclaim.after_free", [&] { Segment::open(name(f)).open_fifo_lock("l").acquire_for(5s); });
    auto g = f.seg.open_fifo_lock("l").acquire_for(3s);
    REQUIRE(g.has_value());
    CHECK(g->previous_holder_died());
  }
  SUBCASE("reclaim.after_drop_fast: the reclaimer of a dead fast holder dies midway; the next one is told") {
    Fixture f(LockModes::exclusive());
    f.holders.start(0, "exclusive");  // an idle lock: the fast path
    REQUIRE(f.holders.acquired(1) == B{true});
    f.holders.child(0).kill();
    f.holders.child(0).wait();
    std::this_thread::sleep_for(150ms);
    crash_at("fifo_lock.reclaim.after_drop_fast",
             [&] { Segment::open(name(f)).open_fifo_lock("l").acquire_for(5s); });
    auto g = f.seg.open_fifo_lock("l").acquire_for(3s);
    REQUIRE(g.has_value());
    CHECK(g->previous_holder_died());
  }
}
#endif  // SHMSTATE_TEST_HOOKS

// A caller that only tries, long after a fast holder died: the first try
// starts the hold's clock (the fast path keeps none), a try a slice later
// reclaims it and is told (fifo_lock.hpp, "Death").
TEST_CASE("try_acquire after a fast holder died: a try a slice after the first reclaims it") {
  Fixture f(LockModes::exclusive());
  test::Child holder([&] {
    auto g = Segment::open(f.t.name()).open_fifo_lock("l").acquire();  // idle: the fast path
    ::_exit(0);                                                        // dies holding it
    return 0;
  });
  REQUIRE(holder.exit_code_within(10s) == 0);
  auto l = f.seg.open_fifo_lock("l");
  auto first = l.try_acquire();  // may be Busy: the hold's age starts now
  std::this_thread::sleep_for(150ms);
  auto g = first ? std::move(first) : l.try_acquire();
  REQUIRE(g.has_value());
  CHECK(g->previous_holder_died());
}
