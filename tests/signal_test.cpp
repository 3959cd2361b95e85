// Signals, compositions, Till, ProcessExit, then-callbacks (issue 9):
// mo-threads' Signal/Till cases, and the cross-process cases with real
// processes.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <shmstate/atomic.hpp>
#include <shmstate/signal.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "primitives/condition.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::Condition;
using shmstate::DONE;
using shmstate::NEVER;
using shmstate::Segment;

namespace {
bool same(const Condition& a, const Condition& b) { return a.node() == b.node(); }
}  // namespace

TEST_CASE("signal: go is idempotent and irreversible; is_set, bool, who fired") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("stop");
  CHECK_FALSE(s.is_set());
  CHECK_FALSE(static_cast<bool>(s));
  CHECK_FALSE(s.fired().has_value());
  CHECK_FALSE(s.wait_for(20ms));
  s.go();
  s.go();
  CHECK(s.is_set());
  CHECK(seg.open_signal("stop").is_set());
  REQUIRE(s.fired().has_value());
  CHECK(s.fired()->pid == ::getpid());
  CHECK(s.wait_for(0ms));
  s.wait();
}

TEST_CASE("signal: who fired is the firing process, also in a child forked after this process fired one") {
  // go() records its pid from a per-process cache (platform::current_pid):
  // a child forked after the parent fired must record its own pid.
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto mine = seg.signal("mine");
  auto theirs = seg.signal("theirs");
  mine.go();
  REQUIRE(mine.fired().has_value());
  CHECK(mine.fired()->pid == ::getpid());
  test::Child firer([&] {
    theirs.go();
    return 0;
  });
  CHECK(firer.exit_code_within(10s) == 0);
  REQUIRE(theirs.fired().has_value());
  CHECK(theirs.fired()->pid == firer.pid());
  CHECK(mine.fired()->pid == ::getpid());
}

TEST_CASE("then registered after a go() that found no callback runs at once; a go() with callbacks runs them") {
  // go() skips the callback list when nothing was ever registered
  // (CallbackList::run_all_if_any); a then() after it must still run.
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("s");
  s.go();
  int ran = 0;
  s.then([&] { ++ran; });
  CHECK(ran == 1);
  shmstate::LocalSignal l;
  l.go();
  l.then([&] { ++ran; });
  CHECK(ran == 2);
  auto s2 = seg.signal("s2");
  s2.then([&] { ++ran; });
  s2.go();
  CHECK(ran == 3);
  s2.go();
  CHECK(ran == 3);
}

TEST_CASE("identities with DONE, NEVER, true, false") {
  shmstate::LocalSignal a;
  CHECK(same(a | DONE, DONE));
  CHECK(same(a | NEVER, a));
  CHECK(same(a & DONE, a));
  CHECK(same(a & NEVER, NEVER));
  CHECK(same(a | true, DONE));
  CHECK(same(a | false, a));
  CHECK(same(a & true, a));
  CHECK(same(a & false, NEVER));
  CHECK(same(DONE | a, DONE));
  CHECK(same(NEVER & a, NEVER));
  CHECK(DONE.is_set());
  CHECK_FALSE(NEVER.is_set());
  CHECK_FALSE(NEVER.wait_for(5ms));
  CHECK(same(shmstate::Till(0s), DONE));
  CHECK(same(shmstate::Till(-5ms), DONE));
}

TEST_CASE("then before and after go, remove_then, a throwing callback does not stop others") {
  shmstate::LocalSignal s;
  int a = 0, b = 0, c = 0;
  s.then([&] { ++a; });
  auto id = s.then([&] { ++b; });
  s.then([] { throw std::runtime_error("expected in this test"); });
  s.then([&] { ++c; });
  s.remove_then(id);
  s.remove_then(123456789);  // unknown: fine
  s.go();
  s.go();
  CHECK(a == 1);
  CHECK(b == 0);
  CHECK(c == 1);
  int d = 0;
  s.then([&] { ++d; });  // already fired: at once, here
  CHECK(d == 1);
}

TEST_CASE("a.stopped & b.stopped & c.stopped; or; then on a composition runs once") {
  shmstate::LocalSignal a, b, c;
  auto all = a & b & c;
  auto any = a | b | c;
  REQUIRE(all.node()->parts() != nullptr);
  CHECK(all.node()->parts()->size() == 3);
  std::atomic<int> all_ran{0}, any_ran{0};
  all.then([&] { ++all_ran; });
  any.then([&] { ++any_ran; });
  a.go();
  CHECK(any.is_set());
  CHECK(any_ran == 1);
  CHECK_FALSE(all.is_set());
  CHECK_FALSE(all.wait_for(10ms));
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    b.go();
    c.go();
  });
  CHECK(all.wait_for(5s));
  t.join();
  CHECK(all_ran == 1);
  CHECK(any_ran == 1);
}

TEST_CASE("Till: never early, fires whether or not referenced; (Till | please_stop) loops") {
  auto start = std::chrono::steady_clock::now();
  shmstate::Till t(30ms);
  CHECK_FALSE(t.is_set());
  t.wait();
  CHECK(std::chrono::steady_clock::now() - start >= 30ms);
  CHECK(t.is_set());

  std::atomic<int> ran{0};
  std::atomic<std::int64_t> late_ns{-1};
  {
    auto deadline = std::chrono::steady_clock::now() + 20ms;
    shmstate::Till::until(deadline).then([&, deadline] {
      late_ns = (std::chrono::steady_clock::now() - deadline).count();
      ++ran;
    });
  }  // unreferenced from here on
  CHECK(test::eventually([&] { return ran.load() == 1; }, 5s));
  CHECK(late_ns.load() >= 0);

  shmstate::LocalSignal please_stop;
  int loops = 0;
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    please_stop.go();
  });
  while (!please_stop) {
    ++loops;
    (please_stop | shmstate::Till(10ms)).wait();
  }
  stopper.join();
  CHECK(loops >= 2);
  CHECK(please_stop.wait(shmstate::Till(1s)));
  shmstate::LocalSignal never;
  CHECK_FALSE(never.wait(shmstate::Till(10ms)));
}

TEST_CASE("across processes: 8 processes wait and one go() wakes all; they were asleep") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("go");
  std::vector<std::unique_ptr<test::Child>> kids;
  for (int i = 0; i < 8; ++i)
    kids.push_back(std::make_unique<test::Child>([&] {
      auto sg = Segment::open(t.name()).open_signal("go");
      return sg.wait_for(20s) ? 0 : 1;
    }));
  for (auto& k : kids) REQUIRE(test::eventually([&] { return test::asleep_in_futex(k->pid()); }));
  auto t0 = std::chrono::steady_clock::now();
  s.go();
  for (auto& k : kids) CHECK(k->exit_code_within(20s) == 0);
  // Woken, not found by a slice's re-check: well inside one 100 ms slice
  // (red when go() skips FUTEX_WAKE).
  CHECK(std::chrono::steady_clock::now() - t0 < 80ms);
}

TEST_CASE("across processes: a waiter SIGKILLed mid-wait disturbs nobody; then on the dispatcher") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("go");
  test::Child victim([&] {
    Segment::open(t.name()).open_signal("go").wait();
    return 0;
  });
  test::Child waiter([&] { return Segment::open(t.name()).open_signal("go").wait_for(20s) ? 0 : 1; });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(victim.pid()) && test::asleep_in_futex(waiter.pid()); }));
  victim.kill();
  victim.wait();
  std::atomic<int> ran{0};
  s.then([&] { ++ran; });
  test::Child firer([&] {
    Segment::open(t.name()).open_signal("go").go();
    return 0;
  });
  CHECK(firer.exit_code_within(10s) == 0);
  CHECK(waiter.exit_code_within(10s) == 0);
  CHECK(test::eventually([&] { return ran.load() == 1; }, 5s));
  REQUIRE(s.fired().has_value());
  CHECK(s.fired()->pid == firer.pid());
}

TEST_CASE("across processes: a composition over signals in two segments, and ProcessExit of a SIGKILLed child") {
  test::TempSegment t1("a"), t2("b");
  auto s1 = Segment::create(t1.name()).signal("x");
  auto s2 = Segment::create(t2.name()).signal("y");
  test::Child waiter([&] {
    auto a = Segment::open(t1.name()).open_signal("x");
    auto b = Segment::open(t2.name()).open_signal("y");
    if (!(a | b).wait_for(20s)) return 1;
    if ((a & b).is_set()) return 2;
    return (a & b).wait_for(20s) ? 0 : 3;
  });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));
  s2.go();
  std::this_thread::sleep_for(20ms);
  s1.go();
  CHECK(waiter.exit_code_within(20s) == 0);

  test::Child sleeper([] {
    ::pause();
    return 0;
  });
  shmstate::ProcessExit gone(sleeper.pid());
  shmstate::LocalSignal stopped;
  CHECK_FALSE(gone.is_set());
  std::atomic<int> ran{0};
  gone.then([&] { ++ran; });
  std::thread killer([&] {
    std::this_thread::sleep_for(30ms);
    sleeper.kill();
  });
  CHECK((stopped | gone).wait_for(10s));
  killer.join();
  CHECK(test::eventually([&] { return ran.load() == 1; }, 5s));
  CHECK(gone.is_set());
  sleeper.wait();
  CHECK(shmstate::ProcessExit(sleeper.pid()).is_set());
}

#if SHMSTATE_TEST_HOOKS
TEST_CASE("across processes: a waiter SIGKILLed mid-wait costs one wake, once; later go()s take no syscall") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("go");
  auto quiet = seg.signal("quiet");  // nobody ever waits on it
  test::Child victim([&] {
    Segment::open(t.name()).open_signal("go").wait();
    return 0;
  });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(victim.pid()); }));
  victim.kill();
  victim.wait();
  auto before = shmstate::testing::signal_wake_count();
  s.go();
  CHECK(shmstate::testing::signal_wake_count() - before == 1);  // the sleeper bit it left
  for (int i = 0; i < 1000; ++i) s.go();
  quiet.go();
  for (int i = 0; i < 1000; ++i) quiet.go();
  CHECK(shmstate::testing::signal_wake_count() - before == 1);
  CHECK(s.is_set());
  CHECK(s.wait_for(0ms));

  // A waiter killed in a wait with a till (Atomic::wait_while_equal) leaves
  // the event count's bit: the next change pays one slow notify, later ones none.
  auto n = seg.atomic<std::int64_t>("n", 0);
  auto stop = seg.signal("stop");
  test::Child w([&] {
    auto sg = Segment::open(t.name());
    sg.open_atomic<std::int64_t>("n").wait_while_equal(0, sg.open_signal("stop"));
    return 0;
  });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(w.pid()); }));
  w.kill();
  w.wait();
  auto slow = shmstate::testing::slow_notify_count();
  for (int i = 0; i < 1000; ++i) n.add_and_get(1);
  CHECK(shmstate::testing::slow_notify_count() - slow == 1);
  auto wakes = shmstate::testing::signal_wake_count();
  stop.go();  // its sleeper bit too: one wake, once
  stop.go();
  CHECK(shmstate::testing::signal_wake_count() - wakes == 1);
}

namespace {
std::atomic<std::uint64_t> g_passes_at_fire{0};
// Holds go() between its wake and its callbacks until the dispatcher, woken
// by that wake, has made a pass (or 2 s): the window in which a dispatcher
// that saw the word set would run the callbacks itself.
void hold_go_until_dispatcher_passed() {
  auto until = std::chrono::steady_clock::now() + 2s;
  while (shmstate::testing::dispatcher_pass_count() == g_passes_at_fire.load() &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);  // let that pass reach its deliveries
}
}  // namespace

TEST_CASE("a go() of this process runs the then-callbacks in its own thread, also when the dispatcher wakes first") {
  // Red without SegmentSignalNode's firing_ mark: the dispatcher, asleep on
  // the word for the then-callback and woken by go(), ran the callback on
  // its thread while go() was still between its wake and its callbacks.
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("go");
  std::atomic<int> ran{0};
  std::thread::id ran_on;
  s.then([&] {
    ran_on = std::this_thread::get_id();
    ++ran;
  });
  std::this_thread::sleep_for(50ms);  // the dispatcher asleep on the word
  g_passes_at_fire = shmstate::testing::dispatcher_pass_count();
  shmstate::testing::at_next_point("signal.go.before_callbacks", hold_go_until_dispatcher_passed);
  s.go();
  CHECK(shmstate::testing::dispatcher_pass_count() > g_passes_at_fire.load());  // the window was real
  CHECK(ran.load() == 1);
  CHECK(ran_on == std::this_thread::get_id());
  std::this_thread::sleep_for(50ms);
  CHECK(ran.load() == 1);  // and not again on the dispatcher
}

TEST_CASE("across processes: a firer killed between its wake and its callbacks: waiters and other processes' "
          "then-callbacks still run") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto s = seg.signal("go");
  std::atomic<int> ran{0};
  s.then([&] { ++ran; });
  test::Child waiter([&] { return Segment::open(t.name()).open_signal("go").wait_for(20s) ? 0 : 1; });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));
  test::Child firer([&] {
    auto f = Segment::open(t.name()).open_signal("go");
    f.then([] { ::_exit(3); });  // must not run: the firer dies first
    shmstate::testing::arm_crash_point("signal.go.before_callbacks");
    f.go();
    return 0;
  });
  CHECK(firer.exit_code_within(10s) == shmstate::testing::kCrashExitCode);
  CHECK(waiter.exit_code_within(10s) == 0);
  CHECK(test::eventually([&] { return ran.load() == 1; }, 5s));
  CHECK(s.is_set());
  REQUIRE(s.fired().has_value());
  CHECK(s.fired()->pid == firer.pid());
}
#endif

TEST_CASE("Till fires never early: 200 waits and 200 callbacks of 0-5 ms") {
  std::atomic<int> early{0}, ran{0};
  for (int i = 0; i < 200; ++i) {
    auto d = std::chrono::microseconds((i * 7919) % 5000);
    auto deadline = std::chrono::steady_clock::now() + d;
    shmstate::Till::until(deadline).then([&, deadline] {
      if (std::chrono::steady_clock::now() < deadline) ++early;
      ++ran;
    });
    shmstate::Till t(d);
    t.wait();
    if (std::chrono::steady_clock::now() < t.deadline()) ++early;
    CHECK(t.is_set());
  }
  CHECK(test::eventually([&] { return ran.load() == 200; }, 10s));
  CHECK(early.load() == 0);
  // A deadline in the past is DONE, at once.
  CHECK(same(shmstate::Till::until(std::chrono::steady_clock::now() - 1s), DONE));
}

TEST_CASE("mo-threads: (Till | please_stop) ends by the Till without setting please_stop; by please_stop set before") {
  // test_or_signal_timeout, test_or_signal_stop2, and wait(True).
  shmstate::LocalSignal please_stop;
  CHECK_FALSE((shmstate::Till(20ms) | please_stop).wait_for(0ms));
  (shmstate::Till(20ms) | please_stop).wait();
  CHECK_FALSE(please_stop.is_set());
  auto till = shmstate::Till(10s);
  please_stop.go();
  CHECK((till | please_stop).wait_for(0ms));
  CHECK(please_stop.wait(true));
  CHECK_FALSE(NEVER.wait(true));
  CHECK(please_stop.wait(false));
  CHECK(Condition(true).is_set());
  CHECK_FALSE(Condition(false).is_set());
}

TEST_CASE("across processes: please_stop for children that loop, fire their own stopped and are stopped in order") {
  test::TempSegment t;
  auto seg = Segment::create(t.name());
  auto please_stop = seg.signal("please_stop");
  constexpr int kChildren = 3;
  for (int i = 0; i < kChildren; ++i) seg.signal("stopped." + std::to_string(i));
  auto order = seg.atomic<std::int64_t>("order", 0);
  std::vector<std::unique_ptr<test::Child>> kids;
  for (int i = 0; i < kChildren; ++i)
    kids.push_back(std::make_unique<test::Child>([&, i] {
      auto s = Segment::open(t.name());
      auto stop = s.open_signal("please_stop");
      auto loops = 0;
      while (!stop) {
        ++loops;
        (stop | shmstate::Till(30s)).wait();  // ended by please_stop, not the Till
      }
      // The order in which children left: digit i at position k.
      auto o = s.open_atomic<std::int64_t>("order");
      std::int64_t old = o.get();
      while (!o.compare_and_set(old, old * 10 + (i + 1))) old = o.get();
      s.open_signal("stopped." + std::to_string(i)).go();
      return loops >= 1 ? 0 : 1;
    }));
  for (auto& k : kids) REQUIRE(test::eventually([&] { return test::asleep_in_futex(k->pid()); }));
  // A child SIGKILLed before it could fire `stopped`: ProcessExit ends the wait.
  auto victim = std::make_unique<test::Child>([&] {
    Segment::open(t.name()).open_signal("please_stop").wait();
    return 0;
  });
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(victim->pid()); }));
  shmstate::ProcessExit victim_exit(victim->pid());
  victim->kill();
  CHECK(victim_exit.wait_for(10s));
  please_stop.go();
  // Deterministic order: the parent waits for each child in turn.
  for (int i = 0; i < kChildren; ++i) {
    auto stopped = seg.open_signal("stopped." + std::to_string(i));
    CHECK((stopped | shmstate::ProcessExit(kids[static_cast<std::size_t>(i)]->pid())).wait_for(10s));
    CHECK(kids[static_cast<std::size_t>(i)]->exit_code_within(10s) == 0);
  }
  // All stopped, whatever the order they noticed.
  auto s = std::to_string(order.get());
  std::sort(s.begin(), s.end());
  CHECK(s == "123");
}
