// A writer dying at every step of an atom change (crash points), and a random
// kill -9 torture: survivors always see exactly the old or the new value,
// valid JSON with a consistent version, later writers go on, and the block
// allocator is not damaged.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
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

json::value padded(std::int64_t n, std::size_t pad, unsigned seed = 0) {
  return json::object{{"n", n}, {"pad", atomtest::filler(pad, seed)}};
}

// After whatever happened: writes of varying sizes from this process must
// each read back exactly from the segment, and fresh atoms of every block size
// (each takes a block from the free lists or the heap) must get memory no
// other atom owns and keep their values. A block freed twice, or freed while
// an atom still uses it, shows up as two atoms sharing memory. Returns "" or
// what went wrong.
std::string memory_problem(Segment& seg, Atom& a, const json::value& neighbour_value) {
  const std::size_t sizes[] = {5, 20'000, 700, 60'000, 3000, 150, 40'000, 9};
  std::vector<std::string> names{"a", "neighbour"};
  std::vector<json::value> extra_values;
  static int round = 0;
  ++round;
  for (int i = 0; i < 40; ++i) {
    json::value v = padded(1000 + i, sizes[i % 8], i);
    if (i % 3 == 0)
      a.reset(v);
    else
      a.swap([&](const json::value&) { return v; });
    auto s = stored(seg, "a");
    if (!s.valid || s.value != v) return "write " + std::to_string(i) + " does not read back";
    if (i % 2 == 0) {
      // A fresh atom whose value lands in block class i/2 % 12 (64 B .. 128 KB).
      std::size_t bytes = (std::size_t{64} << ((i / 2) % 12)) * 3 / 4;
      std::string name = "x" + std::to_string(round) + "-" + std::to_string(i);
      extra_values.push_back(padded(i, bytes, i + 100));
      seg.atom(name, extra_values.back());
      names.push_back(name);
    }
    if (auto p = atomtest::blocks_problem(seg, atomtest::value_blocks(seg, names)); !p.empty())
      return "after write " + std::to_string(i) + ": " + p;
    if (stored(seg, "neighbour").value != neighbour_value) return "write " + std::to_string(i) + " hit the neighbour";
    for (std::size_t k = 0; k < extra_values.size(); ++k)
      if (stored(seg, names[2 + k]).value != extra_values[k])
        return "write " + std::to_string(i) + " hit atom " + names[2 + k];
  }
  return "";
}

// The crash-point tests need a build with -Dtest_hooks=true.
#if SHMSTATE_TEST_HOOKS
struct Op {
  const char* name;
  std::function<void(Atom&, const json::value&)> run;
};

const std::vector<Op>& ops() {
  static const std::vector<Op> list{
      {"swap", [](Atom& a, const json::value& next) { a.swap([&](const json::value&) { return next; }); }},
      {"swap_locked",
       [](Atom& a, const json::value& next) { a.swap_locked([&](const json::value&) { return next; }); }},
      {"reset", [](Atom& a, const json::value& next) { a.reset(next); }},
      {"compare_and_set",
       [](Atom& a, const json::value& next) {
         if (!a.compare_and_set(*a.deref(), next)) ::_exit(5);
       }},
  };
  return list;
}

struct Point {
  const char* name;
  bool published;       // the change is visible after a crash here
  bool needs_growth;    // reached only when the target buffer must grow
  bool from_free_list;  // reached only when the grown buffer's block comes from a free list
};
#endif  // SHMSTATE_TEST_HOOKS

}  // namespace

#if SHMSTATE_TEST_HOOKS

TEST_CASE("a writer dying at each crash point leaves exactly the old or the new value") {
  const Point points[] = {
      {"atom.after_lock", false, false, false},     {"atom.after_allocate", false, true, false},
      {"atom.after_write", false, false, false},    {"atom.after_publish", true, false, false},
      {"blocks.before_push", false, true, false},   {"blocks.after_bump", false, true, false},
      {"blocks.after_pop", false, true, true},      {"blocks.after_claim", false, true, true},
      {"atom.after_allocate", false, true, true},
  };
  int cases = 0;
  for (const Point& point : points) {
    for (bool grow : {false, true}) {
      if (point.needs_growth && !grow) continue;
      for (const Op& op : ops()) {
        std::string point_name = point.name, op_name = op.name;
        CAPTURE(point_name);
        CAPTURE(grow);
        CAPTURE(op_name);
        ++cases;
        test::TempSegment t("atom-crash");
        Segment seg = Segment::create(t.name(), {.size = 2 << 20});
        Atom a = seg.atom("a", padded(0, 100));
        const json::value neighbour = json::object{{"keep", atomtest::filler(3000, 7)}};
        seg.atom("neighbour", neighbour);
        const json::value old_value = padded(2, 120, 2);
        // A big new value forces the target buffer (which holds a small
        // block after the warm-up) to be reallocated, and the old block freed.
        const json::value new_value = padded(3, grow ? 20'000 : 110, 3);
        if (point.from_free_list) {
          // A free 32 KB block for the grown buffer: "spare" outgrows its
          // buffer of that class, which goes to the free list.
          Atom spare = seg.atom("spare", padded(0, 20'000, 4));
          spare.reset(padded(1, 20'000, 5));
          spare.reset(padded(2, 40'000, 6));
          REQUIRE(seg.impl().header->free_heads[9].load() != 0);  // 2^(9+6) = 32 KB
        }

        // This process never reads before the crash, so the reads below parse
        // the segment rather than a cached value.
        auto waiter = atomtest::on_thread([a] { return a.wait_for_change(2, 10s); });
        // Fork only once the waiter sleeps (no other thread busy at fork()).
        REQUIRE(test::eventually([&] { return atomtest::atom_state(seg, "a").changes.waiters.load() > 0; }));
        test::Child child([&] {
          Atom mine = Segment::open(t.name()).open_atom("a");
          mine.swap(increment);                               // warm-up: both buffers
          mine.reset(old_value);                              // hold small blocks
          shmstate::testing::arm_crash_point(point.name);
          op.run(mine, new_value);
          return 0;  // the crash point was not reached
        });
        REQUIRE(child.exit_code_within(10s) == shmstate::testing::kCrashExitCode);

        const json::value& expected = point.published ? new_value : old_value;
        const std::uint64_t expected_version = point.published ? 3 : 2;
        auto s = stored(seg, "a");
        CHECK(s.valid);
        CHECK(s.version == expected_version);
        CHECK(s.value == expected);
        CHECK(a.version() == expected_version);
        CHECK(*a.deref() == expected);  // parsed from the segment
        if (point.published) {
          // The writer died before waking anyone: waiters still notice.
          REQUIRE(waiter.wait_for(10s) == std::future_status::ready);
          CHECK(waiter.get());
        }

        // Later writers go on: this process (bounded, on a thread), then another.
        auto later = atomtest::on_thread([a]() mutable {
          for (int i = 0; i < 4; ++i) a.swap(increment);
          return a.swap_locked(increment);
        });
        REQUIRE(later.wait_for(10s) == std::future_status::ready);
        CHECK(n_of(*later.get()) == n_of(expected) + 5);
        test::Child next([&] {
          Atom mine = Segment::open(t.name()).open_atom("a");
          for (int i = 0; i < 5; ++i) mine.swap(increment);
          return 0;
        });
        CHECK(next.exit_code_within(10s) == 0);
        CHECK(n_of(*a.deref()) == n_of(expected) + 10);
        CHECK(a.version() == expected_version + 10);
        CHECK(stored(seg, "a").value.at("pad") == expected.at("pad"));

        CHECK(memory_problem(seg, a, neighbour) == "");
        if (!point.published) {  // the later writes woke it
          REQUIRE(waiter.wait_for(10s) == std::future_status::ready);
          CHECK(waiter.get());
        }
      }
    }
  }
  CHECK(cases == 48);
}

TEST_CASE("an AtomicReference writer dying mid-set leaves the old or the new value") {
  for (const char* point : {"atom.after_lock", "atom.after_write", "atom.after_publish"}) {
    std::string point_name = point;
    CAPTURE(point_name);
    test::TempSegment t("atom-crash");
    Segment seg = Segment::create(t.name(), {.size = 1 << 20});
    auto r = seg.atomic_reference("r", json::parse(R"({"old": true})"));
    test::Child child([&] {
      auto mine = Segment::open(t.name()).open_atomic_reference("r");
      shmstate::testing::arm_crash_point(point);
      mine.get_and_set(json::parse(R"({"new": [1, 2, 3]})"));
      return 0;
    });
    REQUIRE(child.exit_code_within(10s) == shmstate::testing::kCrashExitCode);
    bool published = std::string(point) == "atom.after_publish";
    CHECK(r.get() == json::parse(published ? R"({"new": [1, 2, 3]})" : R"({"old": true})"));
    CHECK(r.version() == (published ? 1u : 0u));
    auto later = atomtest::on_thread([r]() mutable { return r.get_and_set("later"); });
    REQUIRE(later.wait_for(10s) == std::future_status::ready);
    CHECK(later.get() == json::parse(published ? R"({"new": [1, 2, 3]})" : R"({"old": true})"));
    CHECK(r.get() == json::value("later"));
  }
}
#endif  // SHMSTATE_TEST_HOOKS

// {"n", "len", "seed", "pad"}: pad is filler(len, seed), so a value mixed
// from two writes (a torn read) is caught even when it happens to parse.
json::value checked_value(std::int64_t n, std::size_t len, unsigned seed) {
  return json::object{{"n", n}, {"len", len}, {"seed", seed}, {"pad", atomtest::filler(len, seed)}};
}
bool whole(const json::value& v) {
  if (!v.is_object() || !v.as_object().contains("pad")) return false;
  return v.at("pad").as_string() ==
         atomtest::filler(v.at("len").to_number<std::size_t>(), v.at("seed").to_number<unsigned>());
}

TEST_CASE("random kill -9 torture: counts exact within the kills, whole values, writers go on") {
  test::TempSegment t("atom-torture");
  Segment seg = Segment::create(t.name(), {.size = 4 << 20});
  Atom a = seg.atom("a", checked_value(0, 0, 0));
  const json::value neighbour = json::object{{"keep", atomtest::filler(5000, 11)}};
  seg.atom("neighbour", neighbour);
  constexpr int kWorkers = 3;
  std::vector<shmstate::Atomic<std::int64_t>> records;
  for (int i = 0; i < kWorkers; ++i) records.push_back(seg.atomic<std::int64_t>("rec" + std::to_string(i), 0));
  auto stop = seg.atomic<std::int64_t>("stop", 0);
  auto errors = seg.atomic<std::int64_t>("errors", 0);  // torn values or errors seen by workers

  auto spawn = [&](int i) {
    return std::make_unique<test::Child>([&, i] {
      Segment s = Segment::open(t.name());
      Atom mine = s.open_atom("a");
      auto rec = s.open_atomic<std::int64_t>("rec" + std::to_string(i));
      auto halt = s.open_atomic<std::int64_t>("stop");
      auto errs = s.open_atomic<std::int64_t>("errors");
      std::minstd_rand rng(static_cast<unsigned>(::getpid()));
      while (halt.get() == 0) {
        std::size_t len = rng() % 4 == 0 ? rng() % 30'000 : rng() % 300;
        unsigned seed = static_cast<unsigned>(rng() % 1000);
        try {
          mine.swap([&](const json::value& v) {
            if (!whole(v)) errs.add_and_get(1);
            return checked_value(n_of(v) + 1, len, seed);
          });
        } catch (const std::exception&) {
          errs.add_and_get(1);
          continue;
        }
        rec.add_and_get(1);  // after the swap returned: a kill in between loses this record only
      }
      return 0;
    });
  };

  std::vector<std::unique_ptr<test::Child>> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(spawn(i));
  std::minstd_rand rng(12345);
  int kills = 0, bad_reads = 0, reads = 0;
  auto end = Clock::now() + 3s;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 20'000));
    int victim = static_cast<int>(rng() % kWorkers);
    workers[victim]->kill(SIGKILL);
    workers[victim]->wait();
    ++kills;
    workers[victim] = spawn(victim);
    // What a reader sees is always a whole value whose n is its version:
    // straight from the segment, and through this process's deref().
    ++reads;
    auto s = stored(seg, "a");
    if (!s.valid || !whole(s.value) || n_of(s.value) != static_cast<std::int64_t>(s.version)) ++bad_reads;
    try {
      auto [version, v] = a.deref_versioned();
      if (!whole(*v) || n_of(*v) != static_cast<std::int64_t>(version)) ++bad_reads;
    } catch (const std::exception&) {
      ++bad_reads;
    }
  }
  stop.set(1);
  for (auto& w : workers) CHECK(w->exit_code_within(20s) == 0);

  std::int64_t recorded = 0;
  for (auto& r : records) recorded += r.get();
  auto s = stored(seg, "a");
  REQUIRE(s.valid);
  std::int64_t n = n_of(s.value);
  MESSAGE(kills << " kills, n = " << n << ", recorded = " << recorded);
  CHECK(bad_reads == 0);
  CHECK(errors.get() == 0);
  CHECK(reads == kills);
  CHECK(recorded > 0);
  CHECK(n >= recorded);
  CHECK(n <= recorded + kills);
  CHECK(s.version == static_cast<std::uint64_t>(n));
  CHECK(whole(s.value));
  CHECK(*a.deref() == s.value);

  // A final swap works (bounded), and memory is sound.
  auto last = atomtest::on_thread([a]() mutable { return a.swap(increment); });
  REQUIRE(last.wait_for(10s) == std::future_status::ready);
  CHECK(n_of(*last.get()) == n + 1);
  CHECK(memory_problem(seg, a, neighbour) == "");
}
