// Atomic<T> across real processes: no lost updates, cross-process wake-ups.
#include <doctest/doctest.h>

#include <sched.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "segment/segment_impl.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kProcesses = 4;

using test::run_children;

// The event count's waiter counter of an Atomic's shared state: lets the test
// act only once a waiter in another process is really registered.
template <class T>
const shmstate::detail::EventCount& changes_of(const Segment& seg, const char* name) {
  auto info = seg.find(name);
  REQUIRE(info.has_value());
  auto* state = reinterpret_cast<shmstate::detail::AtomicState<T>*>(seg.impl().base + info->offset);
  return state->changes;
}
template <class T>
const std::atomic<std::uint32_t>& waiters_of(const Segment& seg, const char* name) {
  return changes_of<T>(seg, name).waiters;
}

}  // namespace

TEST_CASE("4 processes x 100,000 add_and_get end at exactly 400,000") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto counter = seg.atomic<std::int64_t>("counter", 0);
  auto codes = run_children(kProcesses, [&](int) {
    auto c = Segment::open(t.name()).open_atomic<std::int64_t>("counter");
    std::int64_t last = 0;
    for (int k = 0; k < 100'000; ++k) {
      std::int64_t now = c.add_and_get(1);
      if (now <= last) return 1;  // each process sees its own adds in order
      last = now;
    }
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  CHECK(counter.get() == 400'000);
}

TEST_CASE("a compare_and_set loop from 4 processes counts exactly") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto counter = seg.atomic<std::int64_t>("cas", 1'000'000'000'000LL);  // beyond 32 bits
  constexpr int kPer = 100'000;
  test::SharedMemory mem;
  auto* retries = mem.as<std::atomic<std::int64_t>>();
  auto codes = run_children(kProcesses, [&](int) {
    auto c = Segment::open(t.name()).open_atomic<std::int64_t>("cas");
    std::int64_t failed = 0;
    for (int k = 0; k < kPer; ++k) {
      for (;;) {
        std::int64_t v = c.get();
        // Now and then give the others the CPU between the read and the
        // CAS, so stale expectations (and retries) happen even on one core.
        if (k % 16 == 0) ::sched_yield();
        if (c.compare_and_set(v, v + 1)) break;
        ++failed;
      }
    }
    retries->fetch_add(failed);
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  CHECK(counter.get() == 1'000'000'000'000LL + kProcesses * kPer);
  MESSAGE("compare_and_set failures that were retried: " << retries->load());
}

TEST_CASE("a bool toggled by compare_and_set from 4 processes: every flip counted once") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto flag = seg.atomic<bool>("flag", false);
  auto flips = seg.atomic<std::int64_t>("flips", 0);
  constexpr int kPer = 5'000;
  // Each process takes the flag false->true, counts, releases true->false.
  auto codes = run_children(kProcesses, [&](int) {
    auto s = Segment::open(t.name());
    auto f = s.open_atomic<bool>("flag");
    auto n = s.open_atomic<std::int64_t>("flips");
    for (int k = 0; k < kPer; ++k) {
      while (!f.compare_and_set(false, true)) {
      }
      std::int64_t before = n.get();
      n.set(before + 1);  // not atomic on its own: only the flag makes it safe
      if (!f.compare_and_set(true, false)) return 1;
    }
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  CHECK(flips.get() == kProcesses * kPer);
  CHECK(flag.get() == false);
}

TEST_CASE("double add from several processes sums exactly") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto sum = seg.atomic<double>("sum", 0.0);
  constexpr int kPer = 20'000;
  auto codes = run_children(kProcesses, [&](int i) {
    auto d = Segment::open(t.name()).open_atomic<double>("sum");
    for (int k = 0; k < kPer; ++k) {
      if (i % 2 == 0)
        d.add_and_get(0.5);
      else
        d.get_and_add(0.25);
    }
    d.subtract_and_get(0.125);
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  // 2 processes x 20,000 x 0.5 + 2 x 20,000 x 0.25 - 4 x 0.125: all exact in binary64.
  CHECK(sum.get() == 2 * kPer * 0.5 + 2 * kPer * 0.25 - 4 * 0.125);
}

TEST_CASE("wait_while_equal in one process is woken by set() in another") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto value = seg.atomic<std::int64_t>("v", 0);
  const auto& waiters = waiters_of<std::int64_t>(seg, "v");
  constexpr auto kLong = 30s;

  SUBCASE("child waits, parent sets") {
    test::Child waiter([&] {
      auto v = Segment::open(t.name()).open_atomic<std::int64_t>("v");
      auto t0 = Clock::now();
      bool changed = v.wait_while_equal(0, kLong);
      if (!changed) return 1;
      if (Clock::now() - t0 >= kLong) return 2;
      return v.get() == 1 ? 0 : 3;
    });
    // Set only once the child sleeps on the event count, so the wake (not
    // the waiter's first look) is what ends its wait.
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));
    value.set(1);
    // The writer saw the waiter and took the wake path.
    CHECK(changes_of<std::int64_t>(seg, "v").seq.load() >= 1);
    CHECK(waiter.exit_code_within(kLong + 10s) == 0);
  }

  SUBCASE("parent waits, child sets") {
    test::Child setter([&] {
      auto v = Segment::open(t.name()).open_atomic<std::int64_t>("v");
      auto end = Clock::now() + 20s;
      while (waiters.load() == 0)
        if (Clock::now() > end) return 1;
      std::this_thread::sleep_for(20ms);
      v.set(7);
      return 0;
    });
    auto t0 = Clock::now();
    CHECK(value.wait_while_equal(0, kLong));
    CHECK(Clock::now() - t0 < kLong);
    CHECK(value.get() == 7);
    CHECK(setter.exit_code_within(10s) == 0);
  }

  SUBCASE("several waiters in several processes, each write op wakes them") {
    auto d = seg.atomic<double>("d", 1.0);
    auto b = seg.atomic<bool>("b", false);
    const auto& dw = waiters_of<double>(seg, "d");
    const auto& bw = waiters_of<bool>(seg, "b");
    std::vector<std::unique_ptr<test::Child>> children;
    for (int i = 0; i < 3; ++i) {
      children.push_back(std::make_unique<test::Child>([&] {
        auto s = Segment::open(t.name());
        if (!s.open_atomic<std::int64_t>("v").wait_while_equal(0, kLong)) return 1;
        if (!s.open_atomic<double>("d").wait_while_equal(1.0, kLong)) return 2;
        if (!s.open_atomic<bool>("b").wait_while_equal(false, kLong)) return 3;
        return 0;
      }));
    }
    // Each write only once all three sleep (on the object written).
    auto all_asleep = [&] {
      for (auto& c : children)
        if (!test::asleep_in_futex(c->pid())) return false;
      return true;
    };
    REQUIRE(test::eventually([&] { return waiters.load() != 0 && all_asleep(); }));
    CHECK(value.compare_and_set(0, 5));
    REQUIRE(test::eventually([&] { return dw.load() != 0 && all_asleep(); }));
    d.add_and_get(0.5);
    REQUIRE(test::eventually([&] { return bw.load() != 0 && all_asleep(); }));
    b.get_and_set(true);
    for (auto& c : children) CHECK(c->exit_code_within(kLong + 10s) == 0);
  }
  // A waiter re-arms before its last look, so a bit may outlive it; the next
  // write clears it, and nothing is left to make writes slow.
  value.add_and_get(0);
  CHECK(waiters.load() == 0);
}

TEST_CASE("processes at different mapping addresses share the same atomic") {
  test::TempSegment t("mp");
  test::SharedMemory mem;
  auto* child_base = mem.as<std::atomic<std::uintptr_t>>();
  auto* stage = reinterpret_cast<std::atomic<int>*>(mem.as<char>() + 64);
  // The child creates and maps the segment; this process has no mapping of
  // it and maps it afresh, after taking address space the child did not.
  test::Child creator([&] {
    auto seg = Segment::create(t.name(), {.size = 64 * 1024});
    auto n = seg.atomic<std::int64_t>("n", 41);
    child_base->store(reinterpret_cast<std::uintptr_t>(seg.impl().base));
    auto end = Clock::now() + 20s;
    while (stage->load() != 1)
      if (Clock::now() > end) return 2;
    if (n.get() != 42) return 1;
    n.add_and_get(1);
    return 0;
  });
  REQUIRE(test::eventually([&] { return child_base->load() != 0; }));
  // Keep the child's address taken here, so this mapping must land elsewhere
  // (if the address is already in use here, that does the same).
  void* blocker = ::mmap(reinterpret_cast<void*>(child_base->load()), 64 * 1024, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  Segment seg = Segment::open(t.name());
  if (blocker != MAP_FAILED) ::munmap(blocker, 64 * 1024);
  CHECK(reinterpret_cast<std::uintptr_t>(seg.impl().base) != child_base->load());
  auto n = seg.open_atomic<std::int64_t>("n");
  CHECK(n.add_and_get(1) == 42);
  stage->store(1);
  CHECK(creator.exit_code_within(10s) == 0);
  CHECK(n.get() == 43);
}

#if SHMSTATE_TEST_HOOKS  // the slow-notify counter needs a build with -Dtest_hooks=true
// Issue 6 item 3: a process SIGKILLed inside wait_while_equal must not make
// every later write pay a FUTEX_WAKE (it did, for good: 12 ns -> 4.4 us).
TEST_CASE("a waiter SIGKILLed in wait_while_equal costs later writers at most one slow notify") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto value = seg.atomic<std::int64_t>("v", 0);
  test::Child waiter([&] {
    Segment::open(t.name()).open_atomic<std::int64_t>("v").wait_while_equal(0, 60s);
    return 0;
  });
  REQUIRE(test::eventually([&] { return waiters_of<std::int64_t>(seg, "v").load() != 0; }));
  waiter.kill();
  waiter.wait();
  auto before = shmstate::testing::slow_notify_count();
  for (int i = 0; i < 10000; ++i) value.add_and_get(1);
  CHECK(shmstate::testing::slow_notify_count() - before <= 1);
  CHECK(value.get() == 10000);
}
#endif  // SHMSTATE_TEST_HOOKS

// Issue 12 item 1 for Atomic<T>: the writer's wake, not the waiter's next
// slice, ends a wait in another process (best of several tries).
TEST_CASE("wait_while_equal in another process returns well inside one wait slice after set()") {
  test::TempSegment t("mp");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto value = seg.atomic<std::int64_t>("v", 0);
  test::SharedMemory mem;
  auto* t_woke = mem.as<std::atomic<std::int64_t>>();
  auto best = std::chrono::nanoseconds::max();
  for (int attempt = 0; attempt < 5 && best >= shmstate::detail::kWaitSlice / 4; ++attempt) {
    value.set(0);
    test::Child waiter([&] {
      bool ok = Segment::open(t.name()).open_atomic<std::int64_t>("v").wait_while_equal(0, 20s);
      t_woke->store(Clock::now().time_since_epoch().count());
      return ok ? 0 : 1;
    });
    REQUIRE(test::eventually([&] { return waiters_of<std::int64_t>(seg, "v").load() != 0; }));
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));  // a wake must end it
    auto t_set = Clock::now();
    value.set(1);
    REQUIRE(waiter.exit_code_within(10s) == 0);
    best = std::min(best, std::chrono::nanoseconds(t_woke->load() - t_set.time_since_epoch().count()));
  }
  MESSAGE("best wake latency: " << best.count() / 1000 << " us");
  CHECK(best < shmstate::detail::kWaitSlice / 4);
}
