// Waiting on many objects without polling (issue 13): watches and waits on
// more words than one futex_waitv takes (128), across segments and processes.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>

#include "support/atom_helpers.hpp"
#include "support/proc.hpp"

#if SHMSTATE_TEST_HOOKS  // the pass counters and slow_notify_count need -Dtest_hooks=true
#include <shmstate/testing.hpp>

using namespace std::chrono_literals;
using shmstate::Atom;
using shmstate::Condition;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

namespace {

constexpr int kSegments = 3;
constexpr int kAtoms = 1000;
// Well inside one wait slice: a wake that only a timed re-check found would
// come a slice (100 ms) late.
constexpr auto kPrompt = shmstate::detail::kWaitSlice / 4;

json::value counter(std::int64_t n) { return json::object{{"n", n}}; }
std::string atom_name(int i) { return "a" + std::to_string(i); }

// Atom i lives in segment i % kSegments.
struct ManyAtoms {
  std::vector<std::unique_ptr<test::TempSegment>> names;
  std::vector<Segment> segments;
  std::vector<Atom> atoms;

  ManyAtoms() {
    for (int s = 0; s < kSegments; ++s) {
      names.push_back(std::make_unique<test::TempSegment>("watch-many"));
      segments.push_back(Segment::create(names.back()->name(), {.size = 4 << 20, .max_objects = 512}));
    }
    for (int i = 0; i < kAtoms; ++i) atoms.push_back(segments[i % kSegments].atom(atom_name(i), counter(0)));
  }
  std::vector<Atom> open_all() const {
    std::vector<Segment> mine;
    for (auto& n : names) mine.push_back(Segment::open(n->name()));
    std::vector<Atom> out;
    for (int i = 0; i < kAtoms; ++i) out.push_back(mine[i % kSegments].open_atom(atom_name(i)));
    return out;
  }
};

// One atom's deliveries; the first violation of the chain (each event starts
// where the previous ended, values are their versions) is kept.
struct Chain {
  std::mutex mu;
  std::uint64_t last = 0;
  std::string problem;
  void add(const shmstate::WatchEvent& e) {
    std::lock_guard<std::mutex> g(mu);
    if (!problem.empty()) return;
    if (e.old_version != last || e.new_version <= e.old_version)
      problem = std::to_string(e.old_version) + "->" + std::to_string(e.new_version) + " after " + std::to_string(last);
    else if (atomtest::n_of(e.new_value) != static_cast<std::int64_t>(e.new_version) ||
             atomtest::n_of(e.old_value) != static_cast<std::int64_t>(e.old_version))
      problem = "values are not their versions at " + std::to_string(e.new_version);
    last = e.new_version;
  }
  std::uint64_t delivered() {
    std::lock_guard<std::mutex> g(mu);
    return last;
  }
};

std::int64_t stamp() { return Clock::now().time_since_epoch().count(); }  // CLOCK_MONOTONIC: one clock for all

// A watch "t" on every atom of m, each checking its own chain of events.
std::vector<std::unique_ptr<Chain>> watch_all(ManyAtoms& m) {
  std::vector<std::unique_ptr<Chain>> chains;
  for (int i = 0; i < kAtoms; ++i) {
    chains.push_back(std::make_unique<Chain>());
    Chain* c = chains.back().get();
    m.atoms[i].add_watch("t", [c](const shmstate::WatchEvent& e) { c->add(e); });
  }
  return chains;
}

}  // namespace

TEST_CASE("1,000 watched atoms in 3 segments: another process's random changes all arrive in order, none lost, "
          "and the dispatcher sleeps while nothing changes") {
  ManyAtoms m;
  auto chains = watch_all(m);
  constexpr int kChanges = 4000;
  test::Child writer([&] {
    std::vector<Atom> atoms = m.open_all();
    std::mt19937 rng(13);
    for (int k = 0; k < kChanges; ++k) {
      atoms[rng() % kAtoms].swap(atomtest::increment);
      if (k % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    }
    return 0;
  });
  REQUIRE(writer.exit_code_within(60s) == 0);
  std::uint64_t total = 0;
  for (auto& a : m.atoms) total += a.version();
  CHECK(total == kChanges);
  // Every atom's watch reaches its final version, by a chain of events.
  CHECK(test::eventually([&] {
    for (int i = 0; i < kAtoms; ++i)
      if (chains[i]->delivered() != m.atoms[i].version()) return false;
    return true;
  }));
  for (int i = 0; i < kAtoms; ++i) {
    INFO("atom " << i);
    CHECK(chains[i]->problem == "");
    CHECK(chains[i]->delivered() == m.atoms[i].version());
  }

  // Quiet: the dispatcher sleeps (no timed re-check in 300 ms but at most
  // the one per second that covers a killed notifier; the 10 ms polling of
  // old made 30 passes).
  std::this_thread::sleep_for(50ms);
  auto passes = shmstate::testing::dispatcher_pass_count();
  std::this_thread::sleep_for(300ms);
  CHECK(shmstate::testing::dispatcher_pass_count() - passes <= 1);

  // And wakes promptly: a change by another process to the last atom of
  // each segment (the last words of the dispatcher's wait) is delivered
  // well inside one wait slice (best of 3: the machine may be busy).
  for (int i = kAtoms - kSegments; i < kAtoms; ++i) {
    auto best = Clock::duration::max();
    for (int attempt = 0; attempt < 3 && best >= kPrompt; ++attempt) {
      std::uint64_t v = m.atoms[i].version();
      REQUIRE(test::eventually([&] { return chains[i]->delivered() == v; }));
      std::this_thread::sleep_for(20ms);  // the dispatcher is back asleep
      test::SharedMemory mem;
      auto* t_swap = mem.as<std::atomic<std::int64_t>>();
      test::Child one([&] {
        auto atoms = m.open_all();
        t_swap->store(stamp());
        atoms[i].swap(atomtest::increment);
        return 0;
      });
      REQUIRE(one.exit_code_within(30s) == 0);
      REQUIRE(test::eventually([&] { return chains[i]->delivered() == v + 1; }));
      auto t_seen = stamp();
      best = std::min(best, Clock::duration(t_seen - t_swap->load()));
    }
    INFO("atom " << i);
    CHECK(best < kPrompt);
  }
}

// Another process changes `changes` random atoms of m, one wake-up each;
// returns once every watch has delivered every change, each in order.
void change_random(ManyAtoms& m, std::vector<std::unique_ptr<Chain>>& chains, int changes, unsigned seed) {
  test::Child writer([&] {
    std::vector<Atom> atoms = m.open_all();
    std::mt19937 rng(seed);
    for (int k = 0; k < changes; ++k) {
      atoms[rng() % kAtoms].swap(atomtest::increment);
      std::this_thread::sleep_for(5ms);  // one wake-up each
    }
    return 0;
  });
  REQUIRE(writer.exit_code_within(60s) == 0);
  REQUIRE(test::eventually([&] {
    for (int i = 0; i < kAtoms; ++i)
      if (chains[i]->delivered() != m.atoms[i].version()) return false;
    return true;
  }));
  for (int i = 0; i < kAtoms; ++i) CHECK(chains[i]->problem == "");
}

TEST_CASE("1,000 watched atoms in 3 segments: a wake-up for one changed atom visits that atom's bucket, not every "
          "watched atom") {
  ManyAtoms m;
  auto chains = watch_all(m);
  std::this_thread::sleep_for(50ms);  // the adds' passes are over: asleep
  constexpr int kChanges = 20;
  auto visits = shmstate::testing::dispatcher_visit_count();
  change_random(m, chains, kChanges, 7);
  visits = shmstate::testing::dispatcher_visit_count() - visits;
  // A bucket holds about 1,000 / (3 * 64) atoms; allow a few passes per
  // change and one periodic full re-check (kQuietSlice). Visiting every
  // watched atom on every wake-up makes at least 20 * 1,000.
  INFO("visits: " << visits);
  CHECK(visits <= kAtoms + kChanges * 100);
}

TEST_CASE("1,000 watched atoms in 3 segments: only the changed atoms are read; the unchanged ones of a moved bucket, "
          "and of a full pass, cost two loads each") {
  ManyAtoms m;
  auto chains = watch_all(m);
  std::this_thread::sleep_for(50ms);  // the adds' passes are over: asleep
  constexpr int kChanges = 20;
  auto visits = shmstate::testing::dispatcher_visit_count();
  auto reads = shmstate::testing::dispatcher_read_count();
  change_random(m, chains, kChanges, 11);
  visits = shmstate::testing::dispatcher_visit_count() - visits;
  reads = shmstate::testing::dispatcher_read_count() - reads;
  INFO("visits: " << visits << ", reads: " << reads);
  // Each change is read once, twice if a pass runs while its notifier is
  // between publishing and bumping the bucket. Reading every visited atom
  // (the former visit) makes at least one bucket (about 5 atoms) per change.
  CHECK(visits >= kChanges);
  CHECK(reads <= 2 * kChanges);
}

TEST_CASE("a watcher of 300 atoms SIGKILLed while its dispatcher sleeps costs later writers at most one slow notify "
          "per atom, plus one of the segment's watch summary") {
  test::TempSegment t("watch-many");
  Segment seg = Segment::create(t.name(), {.size = 4 << 20, .max_objects = 512});
  std::vector<Atom> atoms;
  for (int i = 0; i < 300; ++i) atoms.push_back(seg.atom(atom_name(i), counter(0)));
  test::Child watcher([&] {
    auto mine = Segment::open(t.name());
    std::vector<Atom> w;
    for (int i = 0; i < 300; ++i) {
      w.push_back(mine.open_atom(atom_name(i)));
      w.back().add_watch("w", [](const shmstate::WatchEvent&) {});
    }
    ::pause();  // killed by the parent
    return 0;
  });
  // Every atom's event count armed by the watcher's dispatcher, asleep.
  REQUIRE(test::eventually([&] {
    for (int i = 0; i < 300; ++i)
      if (atomtest::atom_state(seg, atom_name(i)).changes.waiters.load() == 0) return false;
    return true;
  }));
  // ... with the watch bit, and its dispatcher asleep on the segment's
  // watch summary (one word for all 300).
  auto& summary = seg.impl().header->watch.changes;
  REQUIRE(test::eventually([&] { return summary.waiters.load() != 0; }));
  CHECK(atomtest::atom_state(seg, atom_name(0)).changes.waiters.load() == shmstate::detail::EventCount::kWatchBit);
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(watcher.pid()); }));
  std::this_thread::sleep_for(20ms);
  watcher.kill();
  watcher.wait();
  auto before = shmstate::testing::slow_notify_count();
  for (int round = 0; round < 10; ++round)
    for (auto& a : atoms) a.swap(atomtest::increment);
  CHECK(shmstate::testing::slow_notify_count() - before <= 300 + 1);
  for (int i = 0; i < 300; ++i) CHECK(atomtest::atom_state(seg, atom_name(i)).changes.waiters.load() == 0);
  CHECK(summary.waiters.load() == 0);
  // Nothing lasting: later writes are back on the fast path.
  before = shmstate::testing::slow_notify_count();
  for (auto& a : atoms) a.swap(atomtest::increment);
  CHECK(shmstate::testing::slow_notify_count() - before == 0);
}

namespace {

// An N-way | of segment signals spread over `segment_count` segments (signal
// i in segment i % segment_count), plus a local signal nobody fires: a wait
// wider than one futex_waitv (128 words) that sleeps on the segments' watch
// summaries (one word each) and the local word.
struct WideSignals {
  std::vector<std::unique_ptr<test::TempSegment>> names;
  std::vector<Segment> segments;
  std::vector<shmstate::Signal> signals;
  shmstate::LocalSignal local;
  Condition any = shmstate::NEVER;
  explicit WideSignals(int n, int segment_count = kSegments) {
    for (int s = 0; s < segment_count; ++s) {
      names.push_back(std::make_unique<test::TempSegment>("wide"));
      segments.push_back(Segment::create(names.back()->name(), {.size = 2 << 20, .max_objects = 512}));
    }
    any = local;
    for (int i = 0; i < n; ++i) {
      signals.push_back(segments[i % segment_count].signal("s" + std::to_string(i)));
      any = any | signals.back();
    }
  }
  shmstate::Signal open(int i) const {
    return Segment::open(names[i % names.size()]->name()).open_signal("s" + std::to_string(i));
  }
};

int random_below(int n) {
  std::random_device rd;
  return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rd));
}

}  // namespace

TEST_CASE("a wait on a 200-way | in one segment, or a 200-way or 1,000-way | over 3 segments, sleeps on the "
          "segments' watch summaries: another process fires a random one, the wait returns promptly, without "
          "periodic passes or helper threads") {
  int how = 0;
  SUBCASE("Condition::wait_for") { how = 0; }
  SUBCASE("Atomic::wait_while_equal(old, till)") { how = 1; }
  SUBCASE("Condition::wait(Till)") { how = 2; }
  for (auto [width, segments] : {std::pair{200, 1}, std::pair{200, kSegments}, std::pair{1000, kSegments}}) {
    WideSignals m(width, segments);
    auto x = m.segments[0].atomic<std::int64_t>("x", 0);
    int which = random_below(width);
    INFO(width << " signals in " << segments << " segments, fired s" << which);
    test::SharedMemory mem;
    auto* t_go = mem.as<std::atomic<std::int64_t>>();
    test::Child firer([&] {
      auto sig = m.open(which);
      std::this_thread::sleep_for(400ms);
      t_go->store(stamp());
      sig.go();
      return 0;
    });
    auto passes = shmstate::testing::wait_pass_count();
    auto rounds = shmstate::testing::futex_helper_round_count();
    auto t0 = Clock::now();
    if (how == 0) {
      CHECK(m.any.wait_for(30s));
    } else if (how == 1) {
      CHECK_FALSE(x.wait_while_equal(0, m.any));  // ended by the till, not by x
    } else {
      CHECK(m.any.wait(shmstate::Till(30s)));
    }
    auto t_back = stamp();
    auto took = Clock::now() - t0;
    passes = shmstate::testing::wait_pass_count() - passes;
    rounds = shmstate::testing::futex_helper_round_count() - rounds;
    REQUIRE(firer.exit_code_within(30s) == 0);
    REQUIRE(t_go->load() != 0);
    CHECK(m.signals[which].is_set());
    // No helper thread: the wait slept on the summaries and the local word
    // (before: 4-5 helper rounds, one per slice).
    CHECK(rounds == 0);
    // One pass per wait slice at most, plus the one that ends the wait (the
    // 10 ms polling of old made about 40).
    auto slices = static_cast<std::uint64_t>(took / shmstate::detail::kWaitSlice);
    INFO("passes: " << passes << " in " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                    << " ms");
    CHECK(passes <= slices + 2);
    INFO("wake latency " << (t_back - t_go->load()) / 1000 << " us");
    CHECK(Clock::duration(t_back - t_go->load()) < kPrompt);
  }
}

TEST_CASE("a wait on a 200-way | over 3 segments that nothing fires ends at its timeout, deadline or Till, "
          "without periodic passes or helper threads") {
  WideSignals m(200);
  auto passes = shmstate::testing::wait_pass_count();
  auto rounds = shmstate::testing::futex_helper_round_count();
  auto t0 = Clock::now();
  SUBCASE("wait_for") { CHECK_FALSE(m.any.wait_for(300ms)); }
  SUBCASE("wait_until") { CHECK_FALSE(m.any.wait_until(Clock::now() + 300ms)); }
  SUBCASE("wait(Till)") { CHECK_FALSE(m.any.wait(shmstate::Till(300ms))); }
  auto took = Clock::now() - t0;
  passes = shmstate::testing::wait_pass_count() - passes;
  rounds = shmstate::testing::futex_helper_round_count() - rounds;
  CHECK(took >= 300ms);
  CHECK(took < 300ms + kPrompt);
  CHECK(rounds == 0);
  INFO("passes: " << passes);
  CHECK(passes <= 300ms / shmstate::detail::kWaitSlice + 2);
  for (auto& s : m.signals) CHECK_FALSE(s.is_set());
}

TEST_CASE("a wide waiter SIGKILLed while asleep on the watch summaries costs the go()s of its 200 signals at most "
          "one slow notify per segment, once, and no wake; later go()s and writes nothing") {
  constexpr int kWidth = 200;
  constexpr int kTwo = 2;
  WideSignals m(kWidth, kTwo);
  std::vector<shmstate::Atomic<std::int64_t>> counters;
  for (auto& seg : m.segments) counters.push_back(seg.atomic<std::int64_t>("n", 0));
  test::Child waiter([&] {
    Condition any = shmstate::NEVER;
    for (int i = 0; i < kWidth; ++i) any = any | m.open(i);
    any.wait();
    return 0;
  });
  // Asleep on both segments' summaries (their sleeper bits set).
  REQUIRE(test::eventually([&] {
    for (auto& seg : m.segments)
      if (seg.impl().header->watch.changes.waiters.load() == 0) return false;
    return test::asleep_in_futex(waiter.pid());
  }));
  std::this_thread::sleep_for(20ms);
  waiter.kill();
  waiter.wait();
  auto slow = shmstate::testing::slow_notify_count();
  auto wakes = shmstate::testing::signal_wake_count();
  for (auto& s : m.signals) s.go();
  // Each summary's sleeper bit the dead waiter left: one slow notify per
  // segment; the signals' words had no sleeper bit (kWatch instead): no wake.
  CHECK(shmstate::testing::slow_notify_count() - slow <= kTwo);
  CHECK(shmstate::testing::signal_wake_count() - wakes == 0);
  for (auto& seg : m.segments) CHECK(seg.impl().header->watch.changes.waiters.load() == 0);
  // Nothing lasting.
  slow = shmstate::testing::slow_notify_count();
  for (auto& s : m.signals) s.go();
  for (auto& c : counters)
    for (int i = 0; i < 100; ++i) c.add_and_get(1);
  for (auto& seg : m.segments) seg.signal("later").go();
  CHECK(shmstate::testing::slow_notify_count() - slow == 0);
  CHECK(shmstate::testing::signal_wake_count() - wakes == 0);
}

#endif  // SHMSTATE_TEST_HOOKS
