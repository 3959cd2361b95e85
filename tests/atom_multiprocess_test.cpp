// Atom and AtomicReference across real processes: no lost updates, CAS
// accounting, watches of other processes' changes in version order,
// cross-process wake-ups, readers that never block, a writer killed inside
// swap_locked. Children report through exit codes and shared memory only.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "support/atom_helpers.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using atomtest::increment;
using atomtest::n_of;
using atomtest::stored;
using shmstate::Atom;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

namespace {

json::value counter(std::int64_t n) { return json::object{{"n", n}}; }

// The atom's event-count waiter counter: lets a test act only once a waiter
// in another process is really registered.
const std::atomic<std::uint32_t>& waiters_of(const Segment& seg, const char* name) {
  return atomtest::atom_state(seg, name).changes.waiters;
}

// What one watch call saw, copied out of the WatchEvent.
struct Seen {
  json::value old_value, new_value;
  std::uint64_t old_version, new_version;
  bool own, coalesced;
  std::thread::id thread;
};

struct Recorder {
  std::mutex mu;
  std::vector<Seen> events;
  void add(const shmstate::WatchEvent& e) {
    std::lock_guard<std::mutex> g(mu);
    events.push_back(
        Seen{e.old_value, e.new_value, e.old_version, e.new_version, e.own, e.coalesced(), std::this_thread::get_id()});
  }
  std::uint64_t last_version() {
    std::lock_guard<std::mutex> g(mu);
    return events.empty() ? 0 : events.back().new_version;
  }
  std::vector<Seen> copy() {
    std::lock_guard<std::mutex> g(mu);
    return events;
  }
};

// The chain property of atom.hpp: each event starts where the previous one
// ended, versions move forward, and (for atoms whose n equals the version)
// values match versions. Returns "" or the first violation.
std::string chain_problem(const std::vector<Seen>& events, std::uint64_t first_old) {
  std::uint64_t expect_old = first_old;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const Seen& e = events[i];
    std::string at = "event " + std::to_string(i) + " (" + std::to_string(e.old_version) + "->" +
                     std::to_string(e.new_version) + "): ";
    if (e.old_version != expect_old) return at + "old_version should be " + std::to_string(expect_old);
    if (e.new_version <= e.old_version) return at + "does not move forward";
    if (e.coalesced != (e.new_version - e.old_version > 1)) return at + "coalesced() does not match the gap";
    if (n_of(e.old_value) != static_cast<std::int64_t>(e.old_version)) return at + "old_value is not version's";
    if (n_of(e.new_value) != static_cast<std::int64_t>(e.new_version)) return at + "new_value is not version's";
    if (e.own && e.new_version - e.old_version != 1) return at + "an own event spans several versions";
    expect_old = e.new_version;
  }
  return "";
}

}  // namespace

TEST_CASE("10 processes x 1,000 swaps of a JSON object end at exactly 10,000") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("state", json::object{{"n", 0}, {"by", json::object{}}});
  auto codes = test::run_children(10, [&](int i) {
    Atom mine = Segment::open(t.name()).open_atom("state");
    std::string me = std::to_string(i);
    for (int k = 0; k < 1000; ++k) {
      auto [old_value, new_value] = mine.swap_vals([&](const json::value& v) {
        json::object o = v.as_object();
        o["n"] = o["n"].as_int64() + 1;
        json::object& by = o["by"].as_object();
        by[me] = by.contains(me) ? by[me].as_int64() + 1 : 1;
        return json::value(o);
      });
      if (n_of(*new_value) != n_of(*old_value) + 1) return 1;
    }
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  auto v = a.deref();
  CHECK(n_of(*v) == 10'000);
  CHECK(a.version() == 10'000);
  for (int i = 0; i < 10; ++i) CHECK(v->at("by").at(std::to_string(i)).as_int64() == 1000);
  CHECK(stored(seg, "state").value == *v);
}

TEST_CASE("10 processes x 1,000 compare_and_set attempts: the counter ends at the number that succeeded") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("state", counter(0));
  auto successes = seg.atomic<std::int64_t>("successes", 0);
  auto codes = test::run_children(10, [&](int) {
    Segment s = Segment::open(t.name());
    Atom mine = s.open_atom("state");
    auto total = s.open_atomic<std::int64_t>("successes");
    std::int64_t won = 0;
    for (int k = 0; k < 1000; ++k) {
      auto cur = mine.deref();
      if (mine.compare_and_set(*cur, increment(*cur))) ++won;
    }
    total.add_and_get(won);
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  std::int64_t won = successes.get();
  MESSAGE(won << " of 10000 compare_and_set attempts succeeded");
  CHECK(won > 0);
  CHECK(won <= 10'000);
  CHECK(n_of(*a.deref()) == won);
  CHECK(a.version() == static_cast<std::uint64_t>(won));
}

TEST_CASE("AtomicReference across processes: compare_and_set counts exactly, get_and_set loses nothing") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  auto ref = seg.atomic_reference("ref", counter(0));
  auto codes = test::run_children(4, [&](int) {
    auto r = Segment::open(t.name()).open_atomic_reference("ref");
    for (int k = 0; k < 500; ++k) {
      for (int tries = 0;; ++tries) {
        json::value cur = r.get();
        if (r.compare_and_set(cur, increment(cur))) break;
        if (tries > 100'000) return 1;
      }
    }
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  CHECK(ref.get() == counter(2000));
  CHECK(ref.version() == 2000);

  // get_and_set: every value set is handed back exactly once (or is the
  // final value): 4 children x 250 distinct tokens, olds recorded in shared memory.
  constexpr int kChildren = 4, kEach = 250;
  test::SharedMemory mem(kChildren * kEach * sizeof(std::int64_t));
  auto* olds = mem.as<std::int64_t>();
  auto tokens = seg.atomic_reference("tokens", -1);
  codes = test::run_children(kChildren, [&](int i) {
    auto r = Segment::open(t.name()).open_atomic_reference("tokens");
    for (int k = 0; k < kEach; ++k) olds[i * kEach + k] = r.get_and_set(i * kEach + k).as_int64();
    return 0;
  });
  for (int c : codes) CHECK(c == 0);
  std::vector<std::int64_t> seen(olds, olds + kChildren * kEach);
  seen.push_back(tokens.get().as_int64());
  std::sort(seen.begin(), seen.end());
  std::vector<std::int64_t> all;
  for (int k = -1; k < kChildren * kEach; ++k) all.push_back(k);
  CHECK(seen == all);
  CHECK(tokens.version() == kChildren * kEach);
}

TEST_CASE("watches in the parent see other processes' changes in version order, coalesced when behind") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));  // invariant of this test: n == version
  test::SharedMemory mem;
  auto* go = mem.as<std::atomic<int>>();
  auto* in_watch = go + 16;     // the watch is blocked in its first call
  auto* finished = go + 32;     // phase-1 children done writing
  auto swaps = [&](int count) {
    Atom mine = Segment::open(t.name()).open_atom("a");
    for (int k = 0; k < count; ++k) mine.swap(increment);
    return 0;
  };
  auto wait_flag = [](std::atomic<int>* flag, int value) {
    auto end = Clock::now() + 20s;
    while (flag->load() < value)
      if (Clock::now() > end) return false;
      else std::this_thread::sleep_for(100us);
    return true;
  };

  // Phase 1, forked before any watch exists: child 0 makes one change; the
  // watch blocks in its first call until all children made 3 x 300 more.
  // Whatever is delivered next must chain on and cover them, coalesced.
  std::vector<std::unique_ptr<test::Child>> phase1;
  for (int i = 0; i < 3; ++i)
    phase1.push_back(std::make_unique<test::Child>([&, i] {
      if (!wait_flag(go, 1)) return 97;
      if (i == 0) swaps(1);
      if (!wait_flag(in_watch, 1)) return 98;
      swaps(300);
      finished->fetch_add(1);
      return 0;
    }));

  Recorder rec;
  std::atomic<bool> blocked_once{false};
  std::atomic<int> phase{1};
  std::atomic<int> calls{0};
  auto main_thread = std::this_thread::get_id();
  atomtest::ScopedWatch order(a, "order", [&](const shmstate::WatchEvent& e) {
    rec.add(e);
    if (phase == 1 && !blocked_once.exchange(true)) {
      in_watch->store(1);
      auto end = Clock::now() + 20s;
      while (finished->load() < 3 && !order.stopping() && Clock::now() < end) std::this_thread::sleep_for(1ms);
    } else if (phase == 2 && ++calls % 16 == 0) {
      std::this_thread::sleep_for(2ms);
    }
  });
  go->store(1);
  for (auto& c : phase1) CHECK(c->exit_code_within(30s) == 0);
  CHECK(test::eventually([&] { return rec.last_version() == 901; }));
  auto events = rec.copy();
  CHECK(chain_problem(events, 0) == "");
  REQUIRE(events.size() >= 2);
  CHECK(events[0].old_version == 0);
  CHECK(events[0].new_version == 1);
  CHECK(std::any_of(events.begin(), events.end(), [](const Seen& e) { return e.coalesced; }));
  for (const Seen& e : events) {
    CHECK_FALSE(e.own);
    CHECK(e.thread != main_thread);  // other processes' changes: on the dispatcher thread
  }

  // Phase 2: three more writers, the watch merely records (sometimes slowly).
  phase = 2;
  auto codes = test::run_children(3, [&](int) { return swaps(300); });
  for (int c : codes) CHECK(c == 0);
  CHECK(test::eventually([&] { return rec.last_version() == 1801; }));

  // Phase 3: this process writes too, concurrently with two children. Own
  // changes are events of one version each, and the chain stays intact.
  std::size_t before = rec.copy().size();
  std::vector<std::unique_ptr<test::Child>> phase3;
  go->store(0);
  for (int i = 0; i < 2; ++i)
    phase3.push_back(std::make_unique<test::Child>([&] {
      if (!wait_flag(go, 1)) return 97;
      return swaps(300);
    }));
  go->store(1);
  for (int k = 0; k < 300; ++k) a.swap(increment);
  for (auto& c : phase3) CHECK(c->exit_code_within(30s) == 0);
  CHECK(a.version() == 2701);
  CHECK(test::eventually([&] { return rec.last_version() == 2701; }));

  events = rec.copy();
  CHECK(chain_problem(events, 0) == "");
  CHECK(events.back().new_version == 2701);
  std::size_t own = 0, own_elsewhere = 0;
  for (std::size_t i = before; i < events.size(); ++i)
    if (events[i].own) {
      ++own;
      if (events[i].thread != main_thread) ++own_elsewhere;
    }
  CHECK(own == 300);  // each of this process's changes is reported as its own
  // atom.hpp: own changes run "synchronously in the writing thread". Under
  // concurrent foreign changes the implementation hands an own event to the
  // dispatcher when that is delivering at the time (to keep version order).
  if (own_elsewhere != 0)
    MESSAGE(own_elsewhere << " of 300 own events ran on the dispatcher thread, not the writing thread");
}

TEST_CASE("wait_for_change in one process is woken by another process's reset") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  const auto& waiters = waiters_of(seg, "a");

  SUBCASE("the parent waits, a child resets") {
    test::Child writer([&] {
      // Only once the parent is really waiting.
      auto end = Clock::now() + 10s;
      while (waiters.load() == 0)
        if (Clock::now() > end) return 2;
      Segment::open(t.name()).open_atom("a").reset(counter(1));
      return 0;
    });
    const auto& seq = atomtest::atom_state(seg, "a").changes.seq;
    std::uint32_t seq_before = seq.load();
    auto t0 = Clock::now();
    CHECK(a.wait_for_change(0, 10s));
    CHECK(Clock::now() - t0 < 10s);
    CHECK(writer.exit_code_within(10s) == 0);
    CHECK(n_of(*a.deref()) == 1);
    // Woken by the writer's notify (the event count moved), not found by a
    // periodic re-check: a re-check would also return true, but only the
    // notifier bumps the sequence.
    CHECK(seq.load() != seq_before);
  }
  SUBCASE("a child waits, the parent resets") {
    test::Child waiter([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      if (!mine.wait_for_change(0, 10s)) return 1;
      return n_of(*mine.deref()) == 5 ? 0 : 2;
    });
    REQUIRE(test::eventually([&] { return waiters.load() > 0; }));
    a.reset(counter(5));
    CHECK(waiter.exit_code_within(15s) == 0);
  }
}

TEST_CASE("readers never block: deref sees the old value while another process holds the writer lock") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  CHECK(n_of(*a.deref()) == 0);  // this process caches version 0
  atomtest::Pipe inside, release;
  test::Child holder([&] {
    Atom mine = Segment::open(t.name()).open_atom("a");
    mine.reset(json::object{{"n", 1}, {"by", "child"}});  // makes this process's cache stale
    bool released = false;
    mine.swap_locked([&](const json::value&) {
      inside.send();
      released = release.receive(20s);  // holds the lock until the parent says so
      return counter(2);
    });
    return released ? 0 : 3;
  });
  REQUIRE(inside.receive(10s));
  // The child is inside f, holding the writer lock. A read must not wait for
  // it: bounded on a thread (a blocked read would time out, or return the
  // child's later value).
  auto read = atomtest::on_thread([a] {
    auto v = a.deref();
    return std::make_pair(*v, a.version());
  });
  REQUIRE(read.wait_for(5s) == std::future_status::ready);
  auto [value, version] = read.get();
  CHECK(value == json::parse(R"({"n": 1, "by": "child"})"));
  CHECK(version == 1);
  // Another writer does wait.
  auto writer = atomtest::on_thread([a]() mutable { return a.reset(counter(100)); });
  CHECK(writer.wait_for(200ms) == std::future_status::timeout);
  CHECK(a.version() == 1);
  release.send();
  CHECK(holder.exit_code_within(10s) == 0);
  REQUIRE(writer.wait_for(10s) == std::future_status::ready);
  CHECK(*writer.get() == counter(100));
  CHECK(*a.deref() == counter(100));
  CHECK(a.version() == 3);  // the child's change, then the parent's
}

TEST_CASE("a process killed inside swap_locked's f: the value stays the old one and the next writer goes on") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  a.swap(increment);

  SUBCASE("f raises SIGKILL") {
    test::Child victim([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      mine.swap_locked([](const json::value& v) {
        ::raise(SIGKILL);
        return increment(v);
      });
      return 0;
    });
    CHECK(victim.exit_code_within(10s) == 128 + SIGKILL);
    CHECK(*a.deref() == counter(1));
    CHECK(a.version() == 1);
    CHECK(stored(seg, "a").value == counter(1));
    // The next writer (this process) gets the lock, bounded.
    auto next = atomtest::on_thread([a]() mutable { return a.swap(increment); });
    REQUIRE(next.wait_for(10s) == std::future_status::ready);
    CHECK(*next.get() == counter(2));
    // And so does another process's swap_locked.
    test::Child again([&] {
      Segment::open(t.name()).open_atom("a").swap_locked(increment);
      return 0;
    });
    CHECK(again.exit_code_within(10s) == 0);
    CHECK(*a.deref() == counter(3));
    CHECK(a.version() == 3);
  }
  SUBCASE("killed from outside while another writer is blocked on the lock") {
    atomtest::Pipe inside;
    test::Child victim([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      mine.swap_locked([&](const json::value& v) {
        inside.send();
        std::this_thread::sleep_for(30s);  // killed long before
        return increment(v);
      });
      return 0;
    });
    REQUIRE(inside.receive(10s));
    auto blocked = atomtest::on_thread([a]() mutable { return a.reset(counter(50)); });
    CHECK(blocked.wait_for(100ms) == std::future_status::timeout);
    victim.kill(SIGKILL);
    CHECK(victim.exit_code_within(10s) == 128 + SIGKILL);
    REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
    CHECK(*blocked.get() == counter(50));
    CHECK(*a.deref() == counter(50));
    CHECK(a.version() == 2);  // the dead writer published nothing
  }
}

TEST_CASE("deref after another process's change parses once, then serves the same pointer") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  auto before = a.deref();
  test::Child writer([&] {
    Segment::open(t.name()).open_atom("a").reset(json::parse(R"({"n": 7, "from": "child"})"));
    return 0;
  });
  CHECK(writer.exit_code_within(10s) == 0);
  auto p1 = a.deref();
  CHECK(*p1 == json::parse(R"({"n": 7, "from": "child"})"));
  CHECK(p1.get() != before.get());
  CHECK(a.deref().get() == p1.get());
  CHECK(*before == counter(0));
}

TEST_CASE("watches and validators are not inherited by a fork()ed child") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  test::SharedMemory mem;
  auto* ran_in_child = mem.as<std::atomic<int>>();
  pid_t parent = ::getpid();
  Recorder rec;
  a.set_validator([](const json::value& v) { return n_of(v) >= 0; });
  atomtest::ScopedWatch w(a, "w", [&, parent](const shmstate::WatchEvent& e) {
    if (::getpid() != parent) ran_in_child->fetch_add(1);
    else rec.add(e);
  });

  SUBCASE("the child just writes") {
    test::Child child([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      mine.reset(counter(-1));  // the parent's validator does not apply here
      mine.swap(increment);
      return 0;
    });
    CHECK(child.exit_code_within(10s) == 0);
  }
  SUBCASE("the child sets its own validator, then writes") {
    test::Child child([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      mine.set_validator([](const json::value& v) { return v.is_object(); });
      mine.reset(counter(-1));
      mine.swap(increment);
      return 0;
    });
    CHECK(child.exit_code_within(10s) == 0);
  }
  SUBCASE("the child adds and removes its own watch, then writes") {
    test::Child child([&] {
      Atom mine = Segment::open(t.name()).open_atom("a");
      int own_calls = 0;
      mine.add_watch("mine", [&](const shmstate::WatchEvent&) { ++own_calls; });
      mine.reset(counter(-1));
      mine.remove_watch("mine");
      mine.swap(increment);
      return own_calls == 1 ? 0 : 1;
    });
    CHECK(child.exit_code_within(10s) == 0);
  }
  CHECK(ran_in_child->load() == 0);
  // The parent's watch saw the child's changes (foreign, on its dispatcher).
  CHECK(test::eventually([&] { return rec.last_version() == 2; }));
  CHECK(*a.deref() == counter(0));
}

TEST_CASE("an own change made while another process's change is being delivered comes after it, in order") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  test::SharedMemory mem;
  auto* go = mem.as<std::atomic<int>>();
  test::Child writer([&] {
    auto end = Clock::now() + 20s;
    while (go->load() == 0)
      if (Clock::now() > end) return 97;
    Segment::open(t.name()).open_atom("a").swap(increment);
    return 0;
  });
  Recorder rec;
  std::atomic<int> in_foreign{0};
  std::atomic<bool> release{false};
  std::atomic<int> inside{0}, most_inside{0};  // calls of the watch running at once
  atomtest::ScopedWatch w(a, "w", [&](const shmstate::WatchEvent& e) {
    int now = ++inside;
    for (int m = most_inside; now > m && !most_inside.compare_exchange_weak(m, now);) {
    }
    if (!e.own) {
      in_foreign = 1;
      auto end = Clock::now() + 20s;
      while (!release && !w.stopping() && Clock::now() < end) std::this_thread::sleep_for(1ms);
    }
    // Recorded as the call ends: were two threads to run this atom's
    // watches at once, the own event (not blocked) would be recorded first.
    rec.add(e);
    --inside;
  });
  go->store(1);
  CHECK(writer.exit_code_within(10s) == 0);
  REQUIRE(test::eventually([&] { return in_foreign.load() == 1; }));
  // The dispatcher is inside the watch for 0 -> 1. This process changes the atom now.
  CHECK(*a.swap(increment) == counter(2));
  bool delivered_before_return = rec.last_version() == 2;
  release = true;
  CHECK(test::eventually([&] { return rec.last_version() == 2; }));
  CHECK(most_inside.load() == 1);  // one call at a time
  auto events = rec.copy();
  REQUIRE(events.size() == 2);
  CHECK(chain_problem(events, 0) == "");
  CHECK_FALSE(events[0].own);
  CHECK(events[1].own);
  // atom.hpp promises both "one at a time, in version order" and "own changes
  // synchronously in the writing thread"; with a foreign event's watch still
  // running, both cannot hold without the writer waiting for that watch. The
  // implementation keeps the order and hands the own event to the dispatcher.
  if (!delivered_before_return)
    MESSAGE("the own event 1 -> 2 ran after swap returned (on the delivering thread), not synchronously");
}

TEST_CASE("children fork()ed while the watch dispatcher is busy do not inherit a locked mutex") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizer runtimes of g++ 12 do not hold their allocator lock across
  // fork(): a child forked while the dispatcher allocates can hang in there.
  MESSAGE("skipped under a sanitizer (its allocator is not fork-safe with a busy thread)");
  return;
#endif
  // Regression: the dispatcher thread takes each watched atom's process-local
  // mutexes all the time; a fork() at such an instant used to leave the
  // child's copy locked forever (its deref/swap hung, ~1 fork in 150 here).
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  std::atomic<long> events{0};
  atomtest::ScopedWatch busy(a, "busy", [&](const shmstate::WatchEvent&) { ++events; });
  auto stop = seg.atomic<std::int64_t>("stop", 0);
  test::Child writer([&] {
    Segment s = Segment::open(t.name());
    Atom mine = s.open_atom("a");
    auto halt = s.open_atomic<std::int64_t>("stop");
    auto end = Clock::now() + 30s;
    while (halt.get() == 0 && Clock::now() < end) mine.swap(increment);
    return 0;
  });
  REQUIRE(test::eventually([&] { return events.load() > 10; }));
  int hung = 0, failed = 0;
  for (int i = 0; i < 400; ++i) {
    test::Child child([&] {
      a.swap(increment);
      a.set_validator(nullptr);
      return a.deref() != nullptr ? 0 : 1;
    });
    int rc = child.exit_code_within(3s);
    if (rc == test::Child::kTimedOut) ++hung;
    else if (rc != 0) ++failed;
  }
  stop.set(1);
  CHECK(writer.exit_code_within(10s) == 0);
  CHECK(hung == 0);
  CHECK(failed == 0);
}


// ------------------------------------------- waits and watches end promptly (issue 12, items 1-2)

namespace {

std::int64_t stamp() { return Clock::now().time_since_epoch().count(); }  // CLOCK_MONOTONIC: one clock for all

// Issue 12 item 1: a writer that bumped the sequence without FUTEX_WAKE would
// still end waits, one slice later; these wakes must land well inside one.
constexpr auto kPrompt = shmstate::detail::kWaitSlice / 4;

}  // namespace

TEST_CASE("wait_for_change in another process returns well inside one wait slice after a swap") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  test::SharedMemory mem;
  auto* t_woke = mem.as<std::atomic<std::int64_t>>();
  auto best = std::chrono::nanoseconds::max();
  for (int attempt = 0; attempt < 5 && best >= kPrompt; ++attempt) {
    std::uint64_t since = a.version();
    test::Child waiter([&] {
      bool ok = Segment::open(t.name()).open_atom("a").wait_for_change(since, 20s);
      t_woke->store(stamp());
      return ok ? 0 : 1;
    });
    REQUIRE(test::eventually([&] { return waiters_of(seg, "a").load() != 0; }));
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));  // a wake must end it
    auto t_swap = stamp();
    a.swap(increment);
    REQUIRE(waiter.exit_code_within(10s) == 0);
    best = std::min(best, std::chrono::nanoseconds(t_woke->load() - t_swap));
  }
  MESSAGE("best wake latency: " << best.count() / 1000 << " us");
  CHECK(best < kPrompt);
}

TEST_CASE("a watch in another process sees a change well inside one wait slice") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  test::SharedMemory mem;
  auto* seen = mem.as<std::atomic<std::int64_t>>();  // [v]: when the child's watch saw version v
  constexpr int kTries = 5;
  test::Child watcher([&] {
    Atom mine = Segment::open(t.name()).open_atom("a");
    mine.add_watch("t", [&](const shmstate::WatchEvent& e) {
      if (e.new_version <= kTries) seen[e.new_version].store(stamp());
    });
    ::pause();  // killed by the parent
    return 0;
  });
  auto best = std::chrono::nanoseconds::max();
  for (std::uint64_t v = 1; v <= kTries && best >= kPrompt; ++v) {
    // The dispatcher re-arms the event count after each delivery.
    REQUIRE(test::eventually([&] { return waiters_of(seg, "a").load() != 0; }));
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(watcher.pid()); }));  // the dispatcher
    auto t_swap = stamp();
    a.swap(increment);
    REQUIRE(a.version() == v);
    REQUIRE(test::eventually([&] { return seen[v].load() != 0; }));
    best = std::min(best, std::chrono::nanoseconds(seen[v].load() - t_swap));
  }
  MESSAGE("best change -> watch latency: " << best.count() / 1000 << " us");
  CHECK(best < kPrompt);
}

#if SHMSTATE_TEST_HOOKS  // testing::after_next_arm and crash points need -Dtest_hooks=true

namespace {

// The hooks below run inside EventCount::arm, with no arguments.
std::string g_hook_segment;                   // where the atom "a" lives
std::atomic<std::int64_t> g_hook_published{0};  // when the hook's change was published

// A change of "a" that nobody notifies: a child process publishes it and
// dies at once (crash point after the publish, before the wake), as a writer
// killed at that instant would.
void publish_without_notify() {
  test::Child writer([] {
    Atom mine = Segment::open(g_hook_segment).open_atom("a");
    shmstate::testing::arm_crash_point("atom.after_publish");
    mine.swap(increment);
    return 0;
  });
  int rc = writer.exit_code();
  g_hook_published.store(rc == shmstate::testing::kCrashExitCode ? stamp() : -1);
}

}  // namespace

// Issue 12 item 2 for atoms: a waiter re-checks the version after arming,
// before it sleeps; a change landing in between with nobody notifying ends
// the wait at once, not a slice later.
TEST_CASE("wait_for_change: a change between arming and sleeping, with nobody notifying, returns at once") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  g_hook_segment = t.name();
  auto best = Clock::duration::max();
  for (int attempt = 0; attempt < 3 && best >= kPrompt; ++attempt) {
    std::uint64_t since = a.version();
    g_hook_published = 0;
    shmstate::testing::after_next_arm(&publish_without_notify);
    auto seq_before = atomtest::atom_state(seg, "a").changes.seq.load();
    CHECK(a.wait_for_change(since, 10s));
    auto t_back = stamp();
    REQUIRE(g_hook_published.load() > 0);  // the hook ran and its change was published
    CHECK(atomtest::atom_state(seg, "a").changes.seq.load() == seq_before);  // and nobody notified
    best = std::min(best, Clock::duration(t_back - g_hook_published.load()));
  }
  shmstate::testing::after_next_arm(nullptr);
  MESSAGE("best return after the unnotified change: " << best.count() / 1000 << " us");
  CHECK(best < kPrompt);
}

// The same for watches: the dispatcher arms each watched event count, then
// checks each atom, then sleeps.
TEST_CASE("a watch: a change between the dispatcher arming and sleeping, with nobody notifying, is delivered at once") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  g_hook_segment = t.name();
  std::atomic<std::int64_t> delivered{0};
  std::atomic<std::uint64_t> delivered_version{0};
  atomtest::ScopedWatch w(a, "t", [&](const shmstate::WatchEvent& e) {
    delivered_version = e.new_version;
    delivered = stamp();
  });
  auto best = Clock::duration::max();
  for (int attempt = 0; attempt < 3 && best >= kPrompt; ++attempt) {
    std::uint64_t v = a.version();
    g_hook_published = 0;
    shmstate::testing::after_next_arm(&publish_without_notify);
    // Makes the dispatcher run a pass (it arms "a" first, then "b<i>").
    Atom b = seg.atom("b" + std::to_string(attempt), counter(0));
    atomtest::ScopedWatch poke(b, "poke", [](const shmstate::WatchEvent&) {});
    REQUIRE(test::eventually([&] { return g_hook_published.load() != 0; }));
    REQUIRE(g_hook_published.load() > 0);
    REQUIRE(test::eventually([&] { return delivered_version.load() == v + 1; }));
    best = std::min(best, Clock::duration(delivered.load() - g_hook_published.load()));
  }
  shmstate::testing::after_next_arm(nullptr);
  MESSAGE("best delivery after the unnotified change: " << best.count() / 1000 << " us");
  CHECK(best < kPrompt);
}

// Issue 6 item 3 for atoms: a process killed in wait_for_change, or with a
// watch (its dispatcher asleep on the atom), leaves nothing that makes later
// writes take the slow path more than once.
TEST_CASE("a waiter or watcher SIGKILLed on an atom costs later writers at most one slow notify") {
  test::TempSegment t("atom-mp");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  Atom a = seg.atom("a", counter(0));
  std::function<void(Atom&)> wait;
  // A watcher's dispatcher sleeps on the segment's watch summary (layout 4):
  // its death costs the atom's next write one slow notify, and that write's
  // notify of the summary one more, once.
  std::uint64_t allowed = 1;
  SUBCASE("in wait_for_change") {
    wait = [](Atom& mine) { mine.wait_for_change(mine.version(), 60s); };
  }
  SUBCASE("with a watch") {
    wait = [](Atom& mine) {
      mine.add_watch("w", [](const shmstate::WatchEvent&) {});
      ::pause();
    };
    allowed = 2;
  }
  test::Child waiter([&] {
    Atom mine = Segment::open(t.name()).open_atom("a");
    wait(mine);
    return 0;
  });
  REQUIRE(test::eventually([&] { return waiters_of(seg, "a").load() != 0; }));
  std::this_thread::sleep_for(5ms);
  waiter.kill();
  waiter.wait();
  auto before = shmstate::testing::slow_notify_count();
  for (int i = 0; i < 1000; ++i) a.swap(increment);
  CHECK(shmstate::testing::slow_notify_count() - before <= allowed);
  CHECK(a.version() == 1000);
  CHECK(waiters_of(seg, "a").load() == 0);
}

#endif  // SHMSTATE_TEST_HOOKS
