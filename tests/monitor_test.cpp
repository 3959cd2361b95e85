// Monitor across real processes: mo-threads' Lock cases (many waiters, wait
// with a timeout returns false and holds the lock, every exit wakes a waiter),
// notify_one/notify_all, SIGKILL of holders and waiters, relock errors, wake
// latency, crash points, dump and snapshots.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/inspect.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "primitives/monitor.hpp"
#include "support/checks.hpp"
#include "support/crash_at.hpp"
#include "support/proc.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Monitor;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;

namespace {

struct Fixture {
  test::TempSegment t{"mon"};
  Segment seg = Segment::create(t.name());
  Monitor m;
  explicit Fixture(std::uint32_t waiters = 64) : m(seg.monitor("m", waiters)) {}
  Monitor open() const { return Segment::open(t.name()).open_monitor("m"); }
  shmstate::detail::MonitorState& state() const { return *shmstate::detail::MonitorAccess::handle(m)->s; }
  std::uint32_t waiting() const { return state().waiting.load(); }
  std::uint32_t woken() const { return state().woken.load(); }
  // Waiter slots in use (Waiting or Woken), counted from the slots.
  std::uint32_t slots_in_use() const {
    auto h = shmstate::detail::MonitorAccess::handle(m);
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < h->s->waiter_count; ++i) n += h->waiters[i].state.load() != 0;
    return n;
  }
};

struct Board {
  std::atomic<int> phase1;
  std::atomic<int> phase2;
  std::atomic<int> woke_true;
  std::atomic<int> order_next;
  std::atomic<int> order[64];
  std::atomic<int> flag[64];
  std::atomic<std::int64_t> at_ns[64];
  std::atomic<int> died[64];
};

// A child that locks, marks itself, waits (no timeout) and records its wake.
int waiter_body(const Fixture& f, Board* b, int i, std::chrono::nanoseconds timeout = 0ns) {
  auto m = f.open();
  auto g = m.lock();
  b->phase1.fetch_add(1);
  bool woke = timeout == 0ns ? m.wait(g) : m.wait(g, timeout);
  if (!g.held()) return 3;
  b->died[i] = g.previous_holder_died() ? 1 : 0;
  b->at_ns[i] = shmstate::detail::steady_ns();
  b->order[b->order_next.fetch_add(1)] = i;
  if (woke) b->woke_true.fetch_add(1);
  b->phase2.fetch_add(1);
  return woke ? 0 : 1;
}

// Starts waiter i in a child, lets it fall asleep in wait(), SIGKILLs and reaps it.
void kill_a_sleeping_waiter(const Fixture& f, Board* b, int i) {
  test::Child dead([&] { return waiter_body(f, b, i); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(dead.pid()); }));
  dead.kill();
  dead.wait();
}

}  // namespace

TEST_CASE("mo-threads: wait with a timeout returns false and holds the lock (test_lock_wait_timeout, _till)") {
  Fixture f;
  auto g = f.m.lock();
  auto start = Clock::now();
  CHECK_FALSE(f.m.wait(g, 50ms));
  CHECK(Clock::now() - start >= 50ms);
  CHECK(g.held());
  CHECK_FALSE(f.m.wait_until(g, Clock::now() + 20ms));
  CHECK(g.held());
  // Held for real: another process cannot take it, and can once it is released.
  test::Child other([&] { return f.open().try_lock().has_value() ? 1 : 0; });
  CHECK(other.exit_code_within(10s) == 0);
  CHECK(f.waiting() == 0);
  CHECK(f.slots_in_use() == 0);  // the timed-out waiter left the queue
  g.release();
  test::Child again([&] { return f.open().try_lock().has_value() ? 0 : 1; });
  CHECK(again.exit_code_within(10s) == 0);
}

TEST_CASE("mo-threads: many waiters; every exit wakes a waiter (test_thread_wait, across 20 processes)") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  constexpr int n = 20;
  std::vector<std::unique_ptr<test::Child>> kids;
  {
    auto g = f.m.lock();  // held while they start, as in the seed
    for (int i = 0; i < n; ++i) kids.push_back(std::make_unique<test::Child>([&, i] { return waiter_body(f, b, i); }));
  }
  REQUIRE(test::eventually([&] { return b->phase1.load() == n; }));
  // Empty `with locker` blocks until all have left wait(): each exit wakes one.
  REQUIRE(test::eventually(
      [&] {
        auto g = f.m.lock();
        return b->phase2.load() == n;
      },
      30s));
  for (auto& k : kids) CHECK(k->exit_code_within(10s) == 0);
  CHECK(b->woke_true.load() == n);
  CHECK(f.waiting() == 0);
  CHECK(f.woken() == 0);
}

TEST_CASE("mo-threads: waiters with no timeout are woken by other processes' lock activity (test_lock_and_till)") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  auto* got_signal = &b->flag[63];
  std::vector<std::unique_ptr<test::Child>> kids;
  for (int i = 0; i < 2; ++i)
    kids.push_back(std::make_unique<test::Child>([&] {
      auto m = f.open();
      auto g = m.lock();
      b->phase1.fetch_add(1);
      while (got_signal->load() == 0) m.wait(g, 10ms);
      m.wait(g);  // no till: only others' lock activity ends it
      b->phase2.fetch_add(1);
      return g.held() ? 0 : 3;
    }));
  REQUIRE(test::eventually([&] { return b->phase1.load() == 2; }));
  auto start = Clock::now();
  {
    auto g = f.m.lock();
    got_signal->store(1);
    while (b->phase2.load() < 2 && Clock::now() - start < 10s) f.m.wait(g, 100ms);
  }
  for (auto& k : kids) CHECK(k->exit_code_within(10s) == 0);
  CHECK(b->phase2.load() == 2);
  CHECK(Clock::now() - start < 5s);  // generous: the seed says "Took too long" at 1 s
}

TEST_CASE("notify_one, notify_all and unlocks wake the sleeping waiter of another process; a wait() wakes the oldest") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  for (int i = 0; i < 2; ++i) {
    test::Child w([&] { return waiter_body(f, b, i); });
    REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
    std::this_thread::sleep_for(20ms);
    CHECK(b->phase2.load() == i);  // asleep until told
    if (i == 0) f.m.notify_one(); else f.m.notify_all();
    CHECK(w.exit_code_within(10s) == 0);
  }
  f.m.notify_one();  // nobody waits: nothing happens
  f.m.notify_all();
  CHECK(f.waiting() == 0);
  // An unlock wakes the sleeping waiter, but only once the lock is given up.
  {
    test::Child w([&] { return waiter_body(f, b, 2); });
    REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
    auto g = f.m.lock();
    std::this_thread::sleep_for(20ms);
    CHECK(b->phase2.load() == 2);
    g.release();
    CHECK(w.exit_code_within(10s) == 0);
  }
  // The seed's semantics: wait() releases the lock, and that exit wakes the
  // oldest waiter, so the one before returns as the next one sleeps; and its
  // own exit (the guard's release) wakes the next one in turn.
  test::Child first([&] { return waiter_body(f, b, 3); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
  test::Child second([&] { return waiter_body(f, b, 4); });
  CHECK(first.exit_code_within(10s) == 0);
  CHECK(second.exit_code_within(10s) == 0);
  CHECK(b->woke_true.load() == 5);
  CHECK(b->order[3].load() == 3);
  CHECK(b->order[4].load() == 4);
}

TEST_CASE("relocking from the holding thread is InvalidArgument, never a hang; wait needs this monitor's guard") {
  Fixture f;
  auto g = f.m.lock();
  for (auto* what : {"lock", "try_lock", "lock_for"}) {
    CAPTURE(what);
    auto e = test::error_of([&] {
      std::string w = what;
      if (w == "lock") f.m.lock();
      if (w == "try_lock") (void)f.m.try_lock();
      if (w == "lock_for") (void)f.m.lock_for(1s);
    });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(std::string(e.what()).find("object 'm': this thread holds the monitor already") != std::string::npos);
  }
  // Another thread of the same process is an ordinary locker: it waits.
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto h = f.m.lock_for(5s);
    got = h.has_value();
  });
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(got.load());
  g.release();
  t.join();
  CHECK(got.load());
  auto other = f.seg.monitor("other");
  auto g2 = other.lock();
  CHECK(test::error_of([&] { f.m.wait(g2, 1ms); }).code() == ErrorCode::InvalidArgument);
  g2.release();
  CHECK(test::error_of([&] { other.wait(g2, 1ms); }).code() == ErrorCode::InvalidArgument);
  // Moved-from guards hold nothing.
  auto g3 = f.m.lock();
  auto g4 = std::move(g3);
  CHECK_FALSE(g3.held());
  CHECK(g4.held());
}

TEST_CASE("SIGKILL of a holder: the next locker gets the lock within 1 s and is told") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  test::Child holder([&] {
    auto g = f.open().lock();
    b->flag[0] = 1;
    std::this_thread::sleep_for(60s);
    return 0;
  });
  REQUIRE(test::eventually([&] { return b->flag[0].load() == 1; }));
  auto first = f.m.try_lock();
  CHECK_FALSE(first.has_value());
  holder.kill();  // left unreaped: a zombie holder
  auto start = Clock::now();
  auto g = f.m.lock_for(3s);
  REQUIRE(g.has_value());
  CHECK(Clock::now() - start < 1s);
  CHECK(g->previous_holder_died());
  g->release();
  auto again = f.m.lock();
  CHECK_FALSE(again.previous_holder_died());  // told once
}

TEST_CASE("SIGKILL of a sleeping waiter: no lasting cost; its slot is reclaimed within a slice of the next wait") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  kill_a_sleeping_waiter(f, b, 0);
  { auto g = f.m.lock(); }  // its wake goes to the dead waiter...
  CHECK(f.waiting() == 0);  // ...and from now on unlocks and notifies are one load again
  CHECK(f.woken() == 1);
  std::this_thread::sleep_for(150ms);  // older than a slice
  test::Child live([&] { return waiter_body(f, b, 1); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
  CHECK(f.woken() == 0);  // reclaimed by the live waiter's wait()
  CHECK(f.slots_in_use() == 1);
  f.m.notify_one();
  CHECK(live.exit_code_within(10s) == 0);
  CHECK(f.slots_in_use() == 0);
}

TEST_CASE("SIGKILL of a waiter that a wait() woke: the dead one's exit is emulated, the next waiter is woken") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  kill_a_sleeping_waiter(f, b, 0);
  // live's wait() wakes the oldest waiter, the dead one, which will never
  // hold the lock again and exit (which would wake live): the others pass
  // the wake on instead, within a couple of slices.
  auto start = Clock::now();
  test::Child live([&] { return waiter_body(f, b, 1); });
  CHECK(live.exit_code_within(5s) == 0);
  CHECK(Clock::now() - start < 1s);
  CHECK(f.slots_in_use() == 0);
  CHECK(f.waiting() == 0);
  CHECK(f.woken() == 0);
}

TEST_CASE("waiter slots: the dead are reclaimed when the table runs out; a table full of the living is an error") {
  Fixture f(2);
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  for (int i = 0; i < 2; ++i) {
    test::Child c([&] { return waiter_body(f, b, i); });
    REQUIRE(test::eventually([&] { return f.waiting() == 1 && f.slots_in_use() == static_cast<std::uint32_t>(i + 1); }));
    c.kill();
    c.wait();
  }
  CHECK(f.slots_in_use() == 2);  // one woken by the second's wait(), one asleep
  auto g = f.m.lock();
  CHECK_FALSE(f.m.wait(g, 10ms));  // reclaims both, waits, times out
  CHECK(g.held());
  CHECK(f.slots_in_use() == 0);
  CHECK(f.waiting() == 0);
  CHECK(f.woken() == 0);
  g.release();

  Fixture one(1);
  test::Child a([&] { return waiter_body(one, b, 2, 10s); });
  REQUIRE(test::eventually([&] { return one.waiting() == 1; }));
  auto h = one.m.lock();
  auto e = test::error_of([&] { one.m.wait(h, 10ms); });
  CHECK(e.code() == ErrorCode::SegmentFull);
  CHECK(std::string(e.what()).find("monitor has all 1 waiter slots in use") != std::string::npos);
  CHECK(h.held());
  CHECK(one.waiting() == 1);  // nothing happened
  h.release();
  CHECK(a.exit_code_within(10s) == 0);
}

TEST_CASE("a wake reaches a waiter asleep in another process well inside one wait slice") {
  Fixture f;
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  for (std::string how : {"unlock", "notify_one", "notify_all"}) {
    CAPTURE(how);  // a std::string: doctest prints a const char* as its address
    std::int64_t best = INT64_MAX;
    for (int attempt = 0; attempt < 3; ++attempt) {
      b->at_ns[0] = 0;
      test::Child w([&] { return waiter_body(f, b, 0); });
      REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(w.pid()); }));
      std::this_thread::sleep_for(2ms);  // into its slice, not at its first look
      std::int64_t sent = shmstate::detail::steady_ns();
      const std::string& h = how;
      if (h == "unlock") {
        auto g = f.m.lock();
        sent = shmstate::detail::steady_ns();
      } else if (h == "notify_one") {
        f.m.notify_one();
      } else {
        f.m.notify_all();
      }
      REQUIRE(w.exit_code_within(5s) == 0);
      best = std::min(best, b->at_ns[0].load() - sent);
    }
    CHECK(best < 30'000'000);  // 30 ms; a missing FUTEX_WAKE costs ~100 ms (one slice)
  }
}

TEST_CASE("dump, get and snapshots of a monitor") {
  Fixture f(8);
  namespace in = shmstate::inspect;
  auto st = in::dump_json(f.seg);
  std::string text = boost::json::serialize(st);
  CHECK(text.find("\"waiters_capacity\":8") != std::string::npos);
  CHECK(text.find("\"holder\":null") != std::string::npos);
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  test::Child w([&] { return waiter_body(f, b, 0); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
  {
    auto g = f.m.lock();
    text = boost::json::serialize(in::dump_json(f.seg));
    CHECK(text.find("\"pid\":" + std::to_string(::getpid()) + ",\"alive\":true") != std::string::npos);
    CHECK(text.find("\"waiters\":1") != std::string::npos);
    auto human = in::dump_text(f.seg);
    CHECK(human.find("held by pid " + std::to_string(::getpid()) + " (alive)") != std::string::npos);
    CHECK(human.find("1 waiting") != std::string::npos);
  }
  REQUIRE(w.exit_code_within(10s) == 0);
  // A snapshot keeps only the capacity.
  test::TempDir dir;
  auto file = dir.file("s.json");
  f.seg.snapshot(file);
  test::TempSegment copy{"monr"};
  auto restored = Segment::restore(copy.name(), file);
  auto m2 = restored.open_monitor("m");
  CHECK(m2.capacity() == 8);
  auto g = m2.lock();
  CHECK_FALSE(m2.wait(g, 1ms));
  // A damaged saved state is refused, nothing created.
  test::write_file(file, [&] {
    std::string s = test::read_file(file).value();
    auto at = s.find("\"waiters\":8");
    REQUIRE(at != std::string::npos);
    return s.replace(at, 11, "\"waiters\":0");
  }());
  test::TempSegment bad{"monb"};
  CHECK(test::error_of([&] { Segment::restore(bad.name(), file); }).code() == ErrorCode::Corrupt);
  CHECK_FALSE(Segment::exists(bad.name()));
}

TEST_CASE("a damaged monitor is Corrupt, naming segment and object") {
  Fixture f(4);
  auto& s = f.state();
  auto saved = s.waiter_count;
  s.waiter_count = 1'000'000;
  auto e = test::error_of([&] { f.seg.open_monitor("m"); });
  CHECK(e.code() == ErrorCode::Corrupt);
  CHECK(std::string(e.what()).find("object 'm': corrupt monitor: waiter count 1000000") != std::string::npos);
  s.waiter_count = 4000;  // plausible, but does not fit the object
  e = test::error_of([&] { f.seg.open_monitor("m"); });
  CHECK(e.code() == ErrorCode::Corrupt);
  CHECK(std::string(e.what()).find("do not fit") != std::string::npos);
  s.waiter_count = saved;
  auto h = shmstate::detail::MonitorAccess::handle(f.m);
  h->waiters[2].state.store(7);
  auto g = f.m.lock();
  e = test::error_of([&] { f.m.wait(g, 1ms); });
  CHECK(e.code() == ErrorCode::Corrupt);
  CHECK(std::string(e.what()).find("waiter slot 2 has state 7") != std::string::npos);
  CHECK(g.held());
  h->waiters[2].state.store(0);
  CHECK_FALSE(f.m.wait(g, 1ms));
}

#if SHMSTATE_TEST_HOOKS  // crash points need a build with -Dtest_hooks=true
using test::crash_at;

TEST_CASE("crash points inside wait, unlock, notify and reclaim: survivors go on") {
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();

  SUBCASE("wait.after_enqueue: died holding the lock; the next locker is told, a wake to the dead slot moves on") {
    Fixture f;
    crash_at("monitor.wait.after_enqueue", [&] {
      auto m = f.open();
      auto g = m.lock();
      m.wait(g);
    });
    auto g = f.m.lock_for(3s);
    REQUIRE(g.has_value());
    CHECK(g->previous_holder_died());
    CHECK(f.waiting() == 1);  // the dead one's slot
    g->release();             // its wake goes to the dead
    CHECK(f.waiting() == 0);
    std::this_thread::sleep_for(150ms);
    auto g2 = f.m.lock();
    CHECK_FALSE(f.m.wait(g2, 1ms));  // the next wait() reclaims it
    CHECK(f.slots_in_use() == 0);
  }
  SUBCASE("wait.after_release: died asleep-to-be; the lock is free and not 'died'") {
    Fixture f;
    crash_at("monitor.wait.after_release", [&] {
      auto m = f.open();
      auto g = m.lock();
      m.wait(g);
    });
    auto g = f.m.try_lock();
    REQUIRE(g.has_value());
    CHECK_FALSE(g->previous_holder_died());
  }
  SUBCASE("wait.after_reacquire: a woken waiter died holding again; the next waiter gets the lock and is told") {
    Fixture f;
    test::Child victim([&] {
      auto m = f.open();
      auto g = m.lock();
      shmstate::testing::arm_crash_point("monitor.wait.after_reacquire");
      m.wait(g);
      return 0;
    });
    REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
    test::Child live([&] { return waiter_body(f, b, 1); });  // its wait() wakes the victim
    REQUIRE(victim.exit_code_within(10s) == shmstate::testing::kCrashExitCode);
    CHECK(live.exit_code_within(5s) == 0);  // the victim's wake was passed on
    CHECK(b->died[1].load() == 1);
    CHECK(f.slots_in_use() == 0);
  }
  SUBCASE("unlock.after_wake and notify.after_wake: the picked waiter returns true within 1 s") {
    for (const char* point : {"monitor.unlock.after_wake", "monitor.notify.after_wake"}) {
      CAPTURE(point);
      Fixture f;
      b->phase2 = 0;
      test::Child w([&] { return waiter_body(f, b, 0); });
      REQUIRE(test::eventually([&] { return f.waiting() == 1; }));
      auto start = Clock::now();
      crash_at(point, [&] {
        auto m = f.open();
        if (std::string(point) == "monitor.unlock.after_wake") {
          auto g = m.lock();
          g.release();
        } else {
          m.notify_one();
        }
      });
      CHECK(w.exit_code_within(5s) == 0);
      CHECK(Clock::now() - start < 1500ms);
    }
  }
  SUBCASE("reclaim.after_pass_on: the reclaimer dies inside the queue's mutex; the next one finishes the job") {
    Fixture f;
    kill_a_sleeping_waiter(f, b, 0);
    { auto g = f.m.lock(); }  // the wake goes to the dead
    std::this_thread::sleep_for(150ms);
    crash_at("monitor.reclaim.after_pass_on", [&] {
      auto m = f.open();
      auto g = m.lock();
      m.wait(g, 1ms);  // its wait() reclaims the dead slot
    });
    auto g = f.m.lock_for(3s);
    REQUIRE(g.has_value());
    CHECK(g->previous_holder_died());  // it died holding the lock
    CHECK(f.slots_in_use() == 1);      // the dead slot it did not get to free
    CHECK_FALSE(f.m.wait(*g, 1ms));
    CHECK(f.slots_in_use() == 0);
    CHECK(f.woken() == 0);
  }
}
#endif  // SHMSTATE_TEST_HOOKS

// ---- Waits that end on a signal (issue 9): wait(guard, till) ----

namespace {

// A child's wait(guard, please_stop | Till(30s)): 0 woken, 1 ended by
// please_stop, 2 ended otherwise, 3 not holding after. It tells the parent it
// holds the lock again (flag[i] = 1) and keeps it until phase1 says go on.
int till_waiter_body(const Fixture& f, Board* b, int i) {
  auto s = Segment::open(f.t.name());
  auto stop = s.open_signal("please_stop");
  auto m = s.open_monitor("m");
  auto g = m.lock();
  bool woke = m.wait(g, stop | shmstate::Till(30s));
  if (!g.held()) return 3;
  b->flag[i] = 1;
  while (b->phase1.load() == 0) std::this_thread::sleep_for(1ms);
  if (woke) return 0;
  return stop.is_set() ? 1 : 2;
}

int go_from_another_process(const Fixture& f, const std::string& name) {
  test::Child firer([&] {
    Segment::open(f.t.name()).open_signal(name).go();
    return 0;
  });
  return firer.exit_code_within(10s);
}

}  // namespace

TEST_CASE("wait(guard, till): another process's go() ends it with false; it holds the lock again; the queue is clean") {
  Fixture f;
  f.seg.signal("please_stop");
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  test::Child w([&] { return till_waiter_body(f, b, 0); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(w.pid()); }));
  // The parent holds the lock when go() comes: the waiter leaves the queue
  // but cannot return before it holds the lock again.
  auto g = f.m.lock();
  CHECK(go_from_another_process(f, "please_stop") == 0);
  CHECK(test::eventually([&] { return f.waiting() == 0 && f.slots_in_use() == 0; }));
  std::this_thread::sleep_for(100ms);
  CHECK(b->flag[0].load() == 0);  // still waiting to hold the lock again
  g.release();
  REQUIRE(test::eventually([&] { return b->flag[0].load() == 1; }));
  CHECK_FALSE(f.m.try_lock().has_value());  // the waiter holds it for real
  b->phase1 = 1;
  CHECK(w.exit_code_within(10s) == 1);
  CHECK(f.woken() == 0);
  CHECK(f.m.try_lock().has_value());
}

TEST_CASE("wait(guard, till): a notify from another process returns true; please_stop stays unset") {
  Fixture f;
  auto stop = f.seg.signal("please_stop");
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  b->phase1 = 1;
  test::Child w([&] { return till_waiter_body(f, b, 0); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(w.pid()); }));
  test::Child notifier([&] {
    f.open().notify_one();
    return 0;
  });
  CHECK(notifier.exit_code_within(10s) == 0);
  CHECK(w.exit_code_within(10s) == 0);
  CHECK_FALSE(stop.is_set());
  CHECK(f.slots_in_use() == 0);
}

TEST_CASE("wait(guard, Till(50ms)) in another process ends on time with false, holding the lock; DONE at once") {
  Fixture f;
  test::Child w([&] {
    auto m = f.open();
    auto g = m.lock();
    auto start = Clock::now();
    bool woke = m.wait(g, shmstate::Till(50ms));
    auto took = Clock::now() - start;
    if (woke || !g.held()) return 1;
    if (took < 50ms) return 2;  // never early
    if (took > 5s) return 3;    // not stuck (generous: a shared machine)
    if (m.wait(g, shmstate::DONE) || !g.held()) return 4;
    return 0;
  });
  CHECK(w.exit_code_within(10s) == 0);
  CHECK(f.waiting() == 0);
  CHECK(f.slots_in_use() == 0);
  CHECK(f.m.try_lock().has_value());
}

TEST_CASE("wait(guard, till): a waiter SIGKILLed in it disturbs nobody; the next till waiter gets the passed-on wake") {
  Fixture f;
  f.seg.signal("please_stop");
  test::SharedMemory mem(sizeof(Board));
  auto* b = mem.as<Board>();
  b->phase1 = 1;
  {
    test::Child dead([&] { return till_waiter_body(f, b, 0); });
    REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(dead.pid()); }));
    dead.kill();
    dead.wait();
  }
  // live's wait() wakes the oldest waiter, the dead one: live, asleep on its
  // word and please_stop's, passes that wake on to itself within a few slices.
  test::Child live([&] { return till_waiter_body(f, b, 1); });
  CHECK(live.exit_code_within(5s) == 0);
  CHECK(f.waiting() == 0);
  CHECK(f.woken() == 0);
  // A later till waiter is ended by a go() as usual, and the lock is free.
  test::Child late([&] { return till_waiter_body(f, b, 2); });
  REQUIRE(test::eventually([&] { return f.waiting() == 1 && test::asleep_in_futex(late.pid()); }));
  CHECK(go_from_another_process(f, "please_stop") == 0);
  CHECK(late.exit_code_within(10s) == 1);
  CHECK(f.slots_in_use() == 0);
  CHECK(f.m.try_lock().has_value());
}
