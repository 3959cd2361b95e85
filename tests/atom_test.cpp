// Atom and AtomicReference in one process: atomos' own suite translated, plus
// the contracts of atom.hpp (validators, watches, swap_locked, sizes, errors).
// Cross-process behaviour is in atom_multiprocess_test.cpp and
// atom_crash_test.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>

#include "support/atom_helpers.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using atomtest::increment;
using atomtest::n_of;
using atomtest::stored;
using shmstate::Atom;
using shmstate::ErrorCode;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

namespace {

// The code of the shmstate::Error fn throws; nullopt if it throws nothing.
template <class F>
std::optional<ErrorCode> error_code(F&& fn) {
  try {
    fn();
  } catch (const shmstate::Error& e) {
    return e.code();
  }
  return std::nullopt;
}

struct Fixture {
  test::TempSegment t{"atom"};
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
};

json::value counter(std::int64_t n) { return json::object{{"n", n}}; }

}  // namespace

// ---------------------------------------------------------------- atomos' suite

TEST_CASE_FIXTURE(Fixture, "deref of {} is {}, at version 0") {
  Atom a = seg.atom("a", json::object{});
  auto v = a.deref();
  REQUIRE(v != nullptr);
  CHECK(v->is_object());
  CHECK(v->as_object().empty());
  CHECK(a.version() == 0);
  CHECK(stored(seg, "a").bytes == "{}");
  CHECK(a.name() == "a");
  CHECK(a.segment_name() == t.name());
}

TEST_CASE_FIXTURE(Fixture, "swap with extra arguments (by capture): atomos' chat-server state") {
  Atom state = seg.atom("state", json::parse(R"({"conns": 0, "active_clients": []})"));
  auto new_client = [](const json::value& cur, const std::string& client) {
    json::object o = cur.as_object();
    o["conns"] = o["conns"].as_int64() + 1;
    o["active_clients"].as_array().push_back(json::value(client));
    return json::value(o);
  };
  for (std::string client : {"foo", "bar"}) {
    json::value r = *state.swap([&](const json::value& cur) { return new_client(cur, client); });
    CHECK(r == *state.deref());
  }
  CHECK(*state.deref() == json::parse(R"({"conns": 2, "active_clients": ["foo", "bar"]})"));
  CHECK(state.version() == 2);
  CHECK(stored(seg, "state").value == *state.deref());
}

TEST_CASE_FIXTURE(Fixture, "reset returns its argument and sets it") {
  Atom a = seg.atom("a", json::object{});
  json::value v = json::parse(R"({"foo": "bar", "list": [1, 2.5, null, true]})");
  CHECK(*a.reset(v) == v);
  CHECK(*a.deref() == v);
  CHECK(a.version() == 1);
  CHECK(stored(seg, "a").value == v);
  CHECK(*a.reset(42) == json::value(42));
  CHECK(*a.deref() == json::value(42));
  CHECK(a.version() == 2);
}

TEST_CASE_FIXTURE(Fixture, "compare_and_set: true, then false with the stale expectation") {
  Atom a = seg.atom("a", json::object{});
  json::value desired = json::parse(R"({"foo": "bar"})");
  CHECK(a.compare_and_set(json::object{}, desired));
  CHECK(*a.deref() == desired);
  CHECK(a.version() == 1);
  CHECK_FALSE(a.compare_and_set(json::object{}, json::parse(R"({"baz": 1})")));
  CHECK(*a.deref() == desired);
  CHECK(a.version() == 1);
  CHECK(stored(seg, "a").value == desired);
}

TEST_CASE_FIXTURE(Fixture, "compare_and_set compares JSON values: object key order does not matter") {
  Atom a = seg.atom("a", json::parse(R"({"a": 1, "b": [1, 2], "c": {"x": null, "y": "z"}})"));
  // Array order matters, kinds matter, nested values matter.
  CHECK_FALSE(a.compare_and_set(json::parse(R"({"a": 1, "b": [2, 1], "c": {"x": null, "y": "z"}})"), 1));
  CHECK_FALSE(a.compare_and_set(json::parse(R"({"a": "1", "b": [1, 2], "c": {"x": null, "y": "z"}})"), 1));
  CHECK_FALSE(a.compare_and_set(json::parse(R"({"a": 1, "b": [1, 2], "c": {"x": null}})"), 1));
  CHECK(a.version() == 0);
  // Same value, keys in another order (nested too): equal.
  CHECK(a.compare_and_set(json::parse(R"({"c": {"y": "z", "x": null}, "b": [1, 2], "a": 1})"), "done"));
  CHECK(*a.deref() == json::value("done"));
  CHECK(a.version() == 1);
}

TEST_CASE_FIXTURE(Fixture, "swap_vals and reset_vals return {old, new}") {
  Atom a = seg.atom("a", counter(0));
  auto [old1, new1] = a.swap_vals(increment);
  CHECK(*old1 == counter(0));
  CHECK(*new1 == counter(1));
  auto [old2, new2] = a.reset_vals(counter(10));
  CHECK(*old2 == counter(1));
  CHECK(*new2 == counter(10));
  CHECK(*a.deref() == counter(10));
  CHECK(a.version() == 2);
}

TEST_CASE_FIXTURE(Fixture, "version starts at 0 and goes up by exactly one per change") {
  Atom a = seg.atom("a", counter(0));
  CHECK(a.version() == 0);
  a.swap(increment);
  CHECK(a.version() == 1);
  a.swap_locked(increment);
  CHECK(a.version() == 2);
  a.reset(counter(7));
  CHECK(a.version() == 3);
  a.reset_vals(counter(8));
  CHECK(a.version() == 4);
  a.swap_vals(increment);
  CHECK(a.version() == 5);
  CHECK(a.compare_and_set(counter(9), counter(20)));
  CHECK(a.version() == 6);
  CHECK_FALSE(a.compare_and_set(counter(9), counter(30)));  // no change, no version
  CHECK(a.version() == 6);
  a.deref();
  CHECK(a.version() == 6);
  CHECK(stored(seg, "a").version == 6);
  CHECK(stored(seg, "a").value == counter(20));
}

TEST_CASE_FIXTURE(Fixture, "an exception thrown by f leaves the value and the version unchanged") {
  Atom a = seg.atom("a", counter(5));
  a.swap(increment);
  int calls = 0;
  auto boom = [&](const json::value&) -> json::value {
    ++calls;
    throw std::runtime_error("boom");
  };
  CHECK_THROWS_AS(a.swap(boom), std::runtime_error);
  CHECK_THROWS_AS(a.swap_vals(boom), std::runtime_error);
  CHECK_THROWS_AS(a.swap_locked(boom), std::runtime_error);
  CHECK(calls == 3);
  CHECK(*a.deref() == counter(6));
  CHECK(a.version() == 1);
  CHECK(stored(seg, "a").version == 1);
  CHECK(stored(seg, "a").value == counter(6));
  // The writer lock was released (on another thread, bounded: a leaked lock
  // would hang there).
  auto later = atomtest::on_thread([a]() mutable { return a.swap(increment); });
  REQUIRE(later.wait_for(10s) == std::future_status::ready);
  CHECK(*later.get() == counter(7));
  CHECK(a.version() == 2);
}

// ---------------------------------------------------------------- validators

TEST_CASE_FIXTURE(Fixture, "validator: a rejected value is Error(Rejected) and nothing changes") {
  Atom a = seg.atom("a", counter(0));
  int checked = 0;
  a.set_validator([&](const json::value& v) {
    ++checked;
    return v.is_object() && v.as_object().contains("n") && n_of(v) >= 0;
  });
  CHECK(checked == 1);  // checked against the current value when set
  a.swap(increment);
  CHECK(a.version() == 1);

  auto unchanged = [&] {
    CHECK(*a.deref() == counter(1));
    CHECK(a.version() == 1);
    CHECK(stored(seg, "a").version == 1);
    CHECK(stored(seg, "a").value == counter(1));
  };
  CHECK(error_code([&] { a.reset(counter(-1)); }) == ErrorCode::Rejected);
  unchanged();
  CHECK(error_code([&] { a.reset_vals("not an object"); }) == ErrorCode::Rejected);
  unchanged();
  CHECK(error_code([&] { a.swap([](const json::value&) { return counter(-5); }); }) == ErrorCode::Rejected);
  unchanged();
  CHECK(error_code([&] { a.swap_vals([](const json::value&) { return counter(-5); }); }) == ErrorCode::Rejected);
  unchanged();
  CHECK(error_code([&] { a.swap_locked([](const json::value&) { return counter(-5); }); }) ==
        ErrorCode::Rejected);
  unchanged();
  CHECK(error_code([&] { a.compare_and_set(counter(1), counter(-3)); }) == ErrorCode::Rejected);
  unchanged();
  // A compare_and_set that would not set anyway is just false.
  CHECK_FALSE(a.compare_and_set(counter(99), counter(-3)));
  unchanged();
  // Accepted values still go through.
  CHECK(a.compare_and_set(counter(1), counter(2)));
  CHECK(a.version() == 2);
  // After a rejection the lock is free: a write on another thread completes.
  auto later = atomtest::on_thread([a]() mutable { return a.reset(counter(3)); });
  REQUIRE(later.wait_for(10s) == std::future_status::ready);
  CHECK(*later.get() == counter(3));
}

TEST_CASE_FIXTURE(Fixture, "set_validator that rejects the current value throws and is not installed; nullptr removes") {
  Atom a = seg.atom("a", counter(-1));
  auto non_negative = [](const json::value& v) { return n_of(v) >= 0; };
  CHECK(error_code([&] { a.set_validator(non_negative); }) == ErrorCode::Rejected);
  a.reset(counter(-2));  // not installed: accepted
  CHECK(*a.deref() == counter(-2));
  a.reset(counter(0));
  a.set_validator(non_negative);
  CHECK(error_code([&] { a.reset(counter(-3)); }) == ErrorCode::Rejected);
  // Every handle in this process shares the validator.
  Atom other = seg.open_atom("a");
  CHECK(error_code([&] { other.reset(counter(-3)); }) == ErrorCode::Rejected);
  a.set_validator(nullptr);
  CHECK(*a.reset(counter(-3)) == counter(-3));
  CHECK(*other.deref() == counter(-3));
}

// ---------------------------------------------------------------- watches

namespace {
struct Seen {
  std::string key;
  json::value old_value, new_value;
  std::uint64_t old_version, new_version;
  bool own;
  bool coalesced;
  std::thread::id thread;
};

struct Recorder {
  std::mutex mu;
  std::vector<Seen> events;
  Atom::WatchFn fn() {
    return [this](const shmstate::WatchEvent& e) {
      std::lock_guard<std::mutex> g(mu);
      events.push_back(Seen{e.key, e.old_value, e.new_value, e.old_version, e.new_version, e.own, e.coalesced(),
                            std::this_thread::get_id()});
    };
  }
  std::size_t size() {
    std::lock_guard<std::mutex> g(mu);
    return events.size();
  }
};
}  // namespace

TEST_CASE_FIXTURE(Fixture, "watches: own changes are delivered synchronously in the writing thread, exactly") {
  Atom a = seg.atom("a", counter(0));
  Recorder r;
  a.add_watch("w", r.fn());
  auto me = std::this_thread::get_id();

  a.swap(increment);
  // Delivered before swap returned: no waiting here.
  REQUIRE(r.size() == 1);
  CHECK(r.events[0].key == "w");
  CHECK(r.events[0].old_value == counter(0));
  CHECK(r.events[0].new_value == counter(1));
  CHECK(r.events[0].old_version == 0);
  CHECK(r.events[0].new_version == 1);
  CHECK(r.events[0].own);
  CHECK_FALSE(r.events[0].coalesced);
  CHECK(r.events[0].thread == me);

  a.reset(counter(10));
  a.swap_locked(increment);
  CHECK(a.compare_and_set(counter(11), counter(20)));
  CHECK_FALSE(a.compare_and_set(counter(11), counter(30)));  // no change: no event
  a.reset_vals(counter(21));
  a.swap_vals(increment);
  REQUIRE(r.size() == 6);
  std::vector<std::int64_t> olds{0, 1, 10, 11, 20, 21}, news{1, 10, 11, 20, 21, 22};
  for (std::size_t i = 0; i < r.events.size(); ++i) {
    CAPTURE(i);
    const Seen& e = r.events[i];
    CHECK(e.old_version == i);
    CHECK(e.new_version == i + 1);
    CHECK(n_of(e.old_value) == olds[i]);
    CHECK(n_of(e.new_value) == news[i]);
    CHECK(e.own);
    CHECK(e.thread == me);
  }
  // Failed changes deliver nothing.
  CHECK_THROWS(a.swap([](const json::value&) -> json::value { throw std::runtime_error("no"); }));
  CHECK(r.size() == 6);
  a.remove_watch("w");
}

TEST_CASE_FIXTURE(Fixture, "add_watch with the same key replaces; remove_watch of a missing key is fine") {
  Atom a = seg.atom("a", counter(0));
  std::atomic<int> first{0}, second{0}, other{0};
  a.add_watch("k", [&](const shmstate::WatchEvent&) { ++first; });
  a.add_watch("k", [&](const shmstate::WatchEvent&) { ++second; });
  a.add_watch("other", [&](const shmstate::WatchEvent&) { ++other; });
  a.swap(increment);
  CHECK(first == 0);
  CHECK(second == 1);
  CHECK(other == 1);
  a.remove_watch("missing");  // fine
  a.remove_watch("k");
  a.remove_watch("k");  // twice: fine
  a.swap(increment);
  CHECK(second == 1);
  CHECK(other == 2);
  // A watch added through another handle of the same atom is the same set.
  Atom same = seg.open_atom("a");
  same.remove_watch("other");
  a.swap(increment);
  CHECK(other == 2);
  CHECK(a.version() == 3);
}

TEST_CASE_FIXTURE(Fixture, "a throwing watch does not stop the other watches, nor the writer") {
  Atom a = seg.atom("a", counter(0));
  std::atomic<int> ran{0};
  // Keys sort "1-throws" < "2-counts" < "3-throws-other": the thrower runs first.
  a.add_watch("1-throws", [](const shmstate::WatchEvent&) { throw std::runtime_error("watch failed"); });
  a.add_watch("2-counts", [&](const shmstate::WatchEvent&) { ++ran; });
  a.add_watch("3-throws-other", [](const shmstate::WatchEvent&) { throw 42; });
  CHECK(*a.swap(increment) == counter(1));
  CHECK_NOTHROW(a.reset(counter(5)));
  CHECK(a.compare_and_set(counter(5), counter(6)));
  CHECK(ran == 3);
  CHECK(*a.deref() == counter(6));
  CHECK(a.version() == 3);
}

TEST_CASE_FIXTURE(Fixture, "the Clojure-signature watch gets key, atom, old and new") {
  Atom a = seg.atom("a", counter(0));
  std::vector<std::string> log;
  a.add_watch("clj", [&](const std::string& key, Atom& atom, const json::value& old_value,
                         const json::value& new_value) {
    log.push_back(key + ":" + json::serialize(old_value) + "->" + json::serialize(new_value) + "@" +
                  std::to_string(atom.version()) + ":" + atom.name());
  });
  a.swap(increment);
  a.reset(counter(7));
  REQUIRE(log.size() == 2);
  CHECK(log[0] == R"(clj:{"n":0}->{"n":1}@1:a)");
  CHECK(log[1] == R"(clj:{"n":1}->{"n":7}@2:a)");
}

// ---------------------------------------------------------------- swap_locked

TEST_CASE_FIXTURE(Fixture, "swap_locked runs f exactly once, also against concurrent swaps from threads") {
  Atom a = seg.atom("a", counter(0));
  std::atomic<int> once{0};
  CHECK(*a.swap_locked([&](const json::value& v) {
    ++once;
    return increment(v);
  }) == counter(1));
  CHECK(once == 1);

  constexpr int kEach = 300;
  auto locked_calls = std::make_shared<std::atomic<int>>(0);
  auto swap_calls = std::make_shared<std::atomic<int>>(0);
  std::vector<atomtest::Async<int>> workers;
  for (int i = 0; i < 4; ++i)
    workers.push_back(atomtest::on_thread([a, i, locked_calls, swap_calls]() mutable {
      for (int k = 0; k < kEach; ++k) {
        if (i % 2 == 0)
          a.swap_locked([&](const json::value& v) {
            ++*locked_calls;
            return increment(v);
          });
        else
          a.swap([&](const json::value& v) {
            ++*swap_calls;
            std::this_thread::yield();  // widens the window for a conflicting writer
            return increment(v);
          });
      }
      return 0;
    }));
  for (auto& w : workers) REQUIRE(w.wait_for(60s) == std::future_status::ready);
  for (auto& w : workers) CHECK(w.get() == 0);
  CHECK(*locked_calls == 2 * kEach);  // exactly once per call
  CHECK(*swap_calls >= 2 * kEach);    // swap may retry
  CHECK(n_of(*a.deref()) == 1 + 4 * kEach);
  CHECK(a.version() == 1 + 4 * kEach);
  CHECK(stored(seg, "a").value == counter(1 + 4 * kEach));
}

TEST_CASE_FIXTURE(Fixture, "writing the same atom inside swap_locked's f throws InvalidArgument instead of deadlocking") {
  Atom a = seg.atom("a", counter(0));
  Atom b = seg.atom("b", counter(0));
  struct Result {
    std::optional<ErrorCode> reset_inside, swap_inside, cas_inside, other_handle_inside, reference_free;
    json::value outer;
    std::int64_t b_after = -1;
  };
  // On its own thread, bounded: a deadlock fails the test instead of hanging it.
  auto fut = atomtest::on_thread([a, b, &seg = seg]() mutable {
    Result r;
    r.outer = *a.swap_locked([&](const json::value& v) {
      r.reset_inside = error_code([&] { a.reset(counter(100)); });
      r.swap_inside = error_code([&] { a.swap(increment); });
      r.cas_inside = error_code([&] { a.compare_and_set(v, counter(100)); });
      Atom again = seg.open_atom("a");  // another handle to the same atom
      r.other_handle_inside = error_code([&] { again.reset(counter(100)); });
      b.swap(increment);  // a different atom is fine
      r.b_after = n_of(*b.deref());
      return increment(v);
    });
    return r;
  });
  REQUIRE(fut.wait_for(10s) == std::future_status::ready);
  Result r = fut.get();
  CHECK(r.reset_inside == ErrorCode::InvalidArgument);
  CHECK(r.swap_inside == ErrorCode::InvalidArgument);
  CHECK(r.cas_inside == ErrorCode::InvalidArgument);
  CHECK(r.other_handle_inside == ErrorCode::InvalidArgument);
  CHECK(r.b_after == 1);
  CHECK(r.outer == counter(1));
  CHECK(*a.deref() == counter(1));
  CHECK(a.version() == 1);
  // Afterwards this thread may write it normally.
  CHECK(*a.swap(increment) == counter(2));

  // If f propagates the InvalidArgument, the outer swap_locked fails and
  // changes nothing.
  CHECK(error_code([&] { a.swap_locked([&](const json::value& v) { return *a.reset(v); }); }) ==
        ErrorCode::InvalidArgument);
  CHECK(a.version() == 2);
  CHECK(*a.swap(increment) == counter(3));
}

// ---------------------------------------------------------------- sizes and memory

TEST_CASE("values of 100 KB and more round-trip through the segment") {
  // Two buffers of power-of-two blocks: a 250 KB+ value takes up to 2 x 512 KB.
  test::TempSegment t{"atom-big"};
  Segment seg = Segment::create(t.name(), {.size = 8 << 20});
  Atom a = seg.atom("big", json::object{});
  json::object big;
  big["text"] = atomtest::filler(150 * 1024, 3);
  json::array arr;
  for (int i = 0; i < 5000; ++i) arr.push_back(json::object{{"i", i}, {"s", atomtest::filler(i % 17, i)}});
  big["items"] = std::move(arr);
  json::value v = big;
  CHECK(json::serialize(v).size() > 250 * 1024);

  CHECK(*a.reset(v) == v);
  CHECK(*a.deref() == v);
  auto s = stored(seg, "big");
  CHECK(s.valid);
  CHECK(s.value == v);  // the bytes in shared memory, not the cache

  // Growing through swap, then reading through a fresh core (all handles
  // dropped, so nothing is cached in this process).
  a.swap([](const json::value& cur) {
    json::object o = cur.as_object();
    o["more"] = atomtest::filler(120 * 1024, 9);
    return json::value(o);
  });
  json::value expected = *a.deref();
  CHECK(expected.at("more").as_string().size() == 120 * 1024);
  a = seg.atom("unrelated", 0);  // drop the last handle to "big"
  Atom fresh = seg.open_atom("big");
  CHECK(*fresh.deref() == expected);
  CHECK(fresh.version() == 2);
}

TEST_CASE("growing values reuse freed memory, and writes of alternating sizes do not leak") {
  test::TempSegment t{"atom-mem"};
  Segment seg = Segment::create(t.name(), {.size = 4 << 20});
  Atom a = seg.atom("a", json::value(""));
  // Grow a through 1 KB .. 128 KB: each reallocation frees the smaller block
  // (a JSON string of n bytes takes n + 2, so these land in 2n-byte blocks).
  for (std::size_t n = 1024; n <= 128 * 1024; n *= 2) a.reset(json::value(atomtest::filler(n)));

  // b grows through 1 KB .. 32 KB: every block it needs is one a freed, so
  // the heap grows by b's fixed state only (without reuse: ~126 KB).
  std::uint64_t used_before_b = seg.info().used;
  Atom b = seg.atom("b", json::value(""));
  for (std::size_t n = 1024; n <= 32 * 1024; n *= 2) b.reset(json::value(atomtest::filler(n, 1)));
  CHECK(seg.info().used - used_before_b < 4096);
  CHECK(atomtest::blocks_problem(seg, atomtest::value_blocks(seg, {"a", "b"})) == "");
  CHECK(stored(seg, "a").value == json::value(atomtest::filler(128 * 1024)));
  CHECK(stored(seg, "b").value == json::value(atomtest::filler(32 * 1024, 1)));

  // Many writes to c cycling through sizes (period 5, so both buffers see
  // every size): once both buffers have grown to the largest size, no write
  // may take more memory.
  Atom c = seg.atom("c", json::value(""));
  const std::size_t sizes[] = {10, 70 * 1024, 300, 9000, 33 * 1024};
  for (int i = 0; i < 10; ++i) c.reset(json::value(atomtest::filler(sizes[i % 5], i)));
  std::uint64_t steady = seg.info().used;
  for (int i = 10; i < 510; ++i) {
    json::value v(atomtest::filler(sizes[i % 5], i));
    if (i % 2 == 0)
      c.reset(v);
    else
      c.swap([&](const json::value&) { return v; });
    if (i % 25 == 0) {
      CAPTURE(i);
      CHECK(stored(seg, "c").value == v);
    }
  }
  CHECK(seg.info().used == steady);
  CHECK(c.version() == 510);
  CHECK(atomtest::blocks_problem(seg, atomtest::value_blocks(seg, {"a", "b", "c"})) == "");
  CHECK(stored(seg, "a").value == json::value(atomtest::filler(128 * 1024)));
  CHECK(stored(seg, "b").value == json::value(atomtest::filler(32 * 1024, 1)));
}

TEST_CASE("a value that cannot fit is SegmentFull; the old value stays intact and the atom keeps working") {
  test::TempSegment t{"atom-full"};
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024});
  Atom a = seg.atom("a", counter(1));
  Atom neighbour = seg.atom("neighbour", json::value("untouched"));
  a.swap(increment);
  const json::value old = counter(2);
  json::value huge(atomtest::filler(300 * 1024));

  auto intact = [&] {
    CHECK(*a.deref() == old);
    CHECK(a.version() == 1);
    auto s = stored(seg, "a");
    CHECK(s.valid);
    CHECK(s.version == 1);
    CHECK(s.value == old);
    CHECK(stored(seg, "neighbour").value == json::value("untouched"));
  };
  CHECK(error_code([&] { a.reset(huge); }) == ErrorCode::SegmentFull);
  intact();
  CHECK(error_code([&] { a.swap([&](const json::value&) { return huge; }); }) == ErrorCode::SegmentFull);
  intact();
  CHECK(error_code([&] { a.swap_locked([&](const json::value&) { return huge; }); }) == ErrorCode::SegmentFull);
  intact();
  CHECK(error_code([&] { a.compare_and_set(old, huge); }) == ErrorCode::SegmentFull);
  intact();

  // An initial value that does not fit: nothing is created under the name.
  CHECK(error_code([&] { seg.atom("huge", huge); }) == ErrorCode::SegmentFull);
  CHECK_FALSE(seg.find("huge").has_value());
  CHECK(*seg.atom("huge", 1).deref() == json::value(1));

  // The atom keeps working, also with a value that does fit (and the lock was
  // released: bounded on another thread).
  auto later = atomtest::on_thread([a]() mutable { return a.swap(increment); });
  REQUIRE(later.wait_for(10s) == std::future_status::ready);
  CHECK(*later.get() == counter(3));
  json::value fits(atomtest::filler(40 * 1024));
  CHECK(*a.reset(fits) == fits);
  CHECK(stored(seg, "a").value == fits);
  CHECK(a.version() == 3);
}

// ---------------------------------------------------------------- opening

TEST_CASE_FIXTURE(Fixture, "KindMismatch between atoms, references and atomics") {
  seg.atomic<std::int64_t>("i", 0);
  seg.atom("a", 1);
  seg.atomic_reference("r", 1);
  CHECK(error_code([&] { seg.open_atom("i"); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.atom("i", 1); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.open_atomic_reference("a"); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.atomic_reference("a", 1); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.open_atom("r"); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.atom("r", 1); }) == ErrorCode::KindMismatch);
  CHECK(error_code([&] { seg.open_atomic<std::int64_t>("a"); }) == ErrorCode::KindMismatch);
  CHECK(seg.find("a")->kind == shmstate::Kind::Atom);
  CHECK(seg.find("r")->kind == shmstate::Kind::Reference);
}

TEST_CASE_FIXTURE(Fixture, "open_atom of a missing name is NotFound") {
  CHECK(error_code([&] { seg.open_atom("missing"); }) == ErrorCode::NotFound);
  CHECK(error_code([&] { seg.open_atomic_reference("missing"); }) == ErrorCode::NotFound);
  CHECK_FALSE(seg.find("missing").has_value());  // and opening did not create it
  CHECK(error_code([&] { seg.atom("bad name!", 1); }) == ErrorCode::InvalidArgument);
}

TEST_CASE_FIXTURE(Fixture, "initial only applies when the atom is created") {
  Atom a = seg.atom("a", json::parse(R"({"first": true})"));
  a.swap([](const json::value& v) {
    json::object o = v.as_object();
    o["changed"] = 1;
    return json::value(o);
  });
  Atom b = seg.atom("a", json::parse(R"({"second": true})"));
  CHECK(*b.deref() == json::parse(R"({"first": true, "changed": 1})"));
  CHECK(b.version() == 1);
  auto r1 = seg.atomic_reference("r", 1);
  r1.set(2);
  CHECK(seg.atomic_reference("r", 3).get() == json::value(2));
  // Also from a fresh core (every handle dropped first).
  a = seg.atom("x", 0);
  b = a;
  CHECK(*seg.atom("a", 5).deref() == json::parse(R"({"first": true, "changed": 1})"));
}

// ---------------------------------------------------------------- waiting and caching

TEST_CASE_FIXTURE(Fixture, "wait_for_change: false on timeout, true at once if the version already moved") {
  Atom a = seg.atom("a", counter(0));
  auto t0 = Clock::now();
  CHECK_FALSE(a.wait_for_change(0, 50ms));
  CHECK(Clock::now() - t0 >= 50ms);
  CHECK_FALSE(a.wait_for_change(0, 0ns));
  a.swap(increment);
  t0 = Clock::now();
  CHECK(a.wait_for_change(0, 5s));
  CHECK(Clock::now() - t0 < 4s);
  CHECK_FALSE(a.wait_for_change(1, 20ms));  // since = current: nothing moved
  // A change by another thread wakes a waiter.
  auto waiter = atomtest::on_thread([a] { return a.wait_for_change(1, 10s); });
  std::this_thread::sleep_for(30ms);
  a.swap(increment);
  REQUIRE(waiter.wait_for(10s) == std::future_status::ready);
  CHECK(waiter.get());
}

TEST_CASE_FIXTURE(Fixture, "deref of an unchanged value returns the same shared pointer (no re-parse)") {
  Atom a = seg.atom("a", json::parse(R"({"list": [1, 2, 3]})"));
  auto p1 = a.deref();
  auto p2 = a.deref();
  CHECK(p1.get() == p2.get());
  Atom other = seg.open_atom("a");  // handles in one process share the cache
  CHECK(other.deref().get() == p1.get());
  a.reset(json::parse(R"({"list": [4]})"));
  auto p3 = a.deref();
  CHECK(p3.get() != p1.get());
  CHECK(*p1 == json::parse(R"({"list": [1, 2, 3]})"));  // old snapshots stay valid and immutable
  CHECK(*p3 == json::parse(R"({"list": [4]})"));
  CHECK(a.deref().get() == p3.get());
  CHECK(other.deref().get() == p3.get());

  // A fresh core parses once, then serves the same pointer.
  a = seg.atom("x", 0);
  other = a;
  p1.reset();
  p3.reset();
  Atom fresh = seg.open_atom("a");
  auto q1 = fresh.deref();
  CHECK(*q1 == json::parse(R"({"list": [4]})"));
  CHECK(fresh.deref().get() == q1.get());
}

namespace {
// Replaces whatever is there by 1 (used after a repair).
json::value increment_or_init(const json::value& v) { return v.is_int64() ? json::value(v.as_int64() + 1) : json::value(1); }
}  // namespace

TEST_CASE_FIXTURE(Fixture, "deref of damaged bytes is Error(Corrupt), never garbage or a crash; reset repairs it") {
  seg.atom("a", json::parse(R"({"ok": true})"));  // no handle is kept: nothing cached
  seg.atom("b", json::parse(R"({"ok": true})"));
  auto& sa = atomtest::atom_state(seg, "a");
  auto& ba = sa.buffers[shmstate::detail::atom_buffer(sa.current.load())];
  seg.impl().base[ba.offset.load()] = std::byte{'#'};  // not JSON any more
  CHECK(error_code([&] { seg.open_atom("a").deref(); }) == ErrorCode::Corrupt);
  auto& sb = atomtest::atom_state(seg, "b");
  auto& bb = sb.buffers[shmstate::detail::atom_buffer(sb.current.load())];
  bb.length.store(bb.capacity.load() + 1);  // a descriptor that overstates its block
  CHECK(error_code([&] { seg.open_atom("b").deref(); }) == ErrorCode::Corrupt);
  // Other atoms are unaffected.
  CHECK(*seg.atom("c", 3).deref() == json::value(3));

  // reset repairs a damaged atom; the writes that need the old value report
  // Corrupt and change nothing.
  Atom damaged = seg.open_atom("a");
  CHECK(error_code([&] { damaged.swap(increment); }) == ErrorCode::Corrupt);
  CHECK(error_code([&] { damaged.compare_and_set(json::value(1), json::value(2)); }) == ErrorCode::Corrupt);
  CHECK(damaged.version() == 0);
  auto [old_value, new_value] = damaged.reset_vals(json::parse(R"({"repaired": true})"));
  CHECK(old_value->is_null());
  CHECK(*new_value == json::parse(R"({"repaired": true})"));
  CHECK(damaged.version() == 1);
  CHECK(*seg.open_atom("a").deref() == json::parse(R"({"repaired": true})"));
  CHECK(*damaged.swap(increment_or_init) == json::value(1));
  Atom overstated = seg.open_atom("b");
  overstated.reset(json::value(7));
  CHECK(*overstated.deref() == json::value(7));
  for (int i = 0; i < 4; ++i) overstated.reset(json::value(std::string(200 * i, 'x')));  // both buffers again
  CHECK(overstated.deref()->as_string().size() == 600);
}

TEST_CASE_FIXTURE(Fixture, "deref_versioned and get_versioned return a value with its own version") {
  Atom a = seg.atom("a", counter(0));
  auto v0 = a.deref_versioned();
  CHECK(v0.version == 0);
  CHECK(*v0.value == counter(0));
  for (int i = 0; i < 3; ++i) a.swap(increment);
  auto v3 = a.deref_versioned();
  CHECK(v3.version == 3);
  CHECK(*v3.value == counter(3));
  CHECK(v3.value.get() == a.deref().get());  // the same cached value
  auto r = seg.atomic_reference("r", "x");
  r.set("y");
  auto [version, value] = r.get_versioned();
  CHECK(version == 1);
  CHECK(value == json::value("y"));
}

// ---------------------------------------------------------------- AtomicReference

TEST_CASE_FIXTURE(Fixture, "AtomicReference: get, set, get_and_set, compare_and_set by value equality") {
  auto r = seg.atomic_reference("ref", json::parse(R"({"foo": 42, "bar": false})"));
  CHECK(r.get() == json::parse(R"({"bar": false, "foo": 42})"));
  CHECK(r.version() == 0);
  r.set(json::parse(R"({"foo": 43})"));
  CHECK(r.get() == json::parse(R"({"foo": 43})"));
  CHECK(r.version() == 1);
  CHECK(r.get_and_set("x") == json::parse(R"({"foo": 43})"));
  CHECK(r.get() == json::value("x"));
  CHECK(r.version() == 2);
  CHECK(r.compare_and_set("x", json::parse(R"({"a": [1, {"b": 2}], "c": 3})")));
  CHECK_FALSE(r.compare_and_set("x", "y"));
  CHECK(r.version() == 3);
  // Value equality, keys in any order.
  CHECK(r.compare_and_set(json::parse(R"({"c": 3, "a": [1, {"b": 2}]})"), nullptr));
  CHECK(r.get().is_null());
  CHECK(r.version() == 4);
  CHECK(stored(seg, "ref").value.is_null());
  CHECK(r.name() == "ref");
  CHECK(r.segment_name() == t.name());
  auto again = seg.open_atomic_reference("ref");
  CHECK(again.get().is_null());
  CHECK(again.version() == 4);
}

namespace {
json::value nested(int depth) {
  json::value v = 1;
  for (int i = 0; i < depth; ++i) {
    json::array a;
    a.push_back(std::move(v));
    v = std::move(a);
  }
  return v;
}
}  // namespace

TEST_CASE_FIXTURE(Fixture, "only JSON every process can read back is stored: deep, NaN, infinity, bad UTF-8 are rejected") {
  Atom a = seg.atom("a", counter(0));
  const json::value bad[] = {nested(513), json::value(std::nan("")), json::value(HUGE_VAL),
                             json::value(std::string("\xff\xfe")), json::value(std::string("\xed\xa0\x80")),
                             json::value(std::string("\xc0\xaf")), json::parse(R"({"k": [1, 2]})")};
  int i = 0;
  for (json::value v : bad) {
    CAPTURE(i);
    if (i == 6) {  // a bad key
      json::object o;
      o[std::string("\xff")] = 1;
      v = o;
    }
    CHECK(error_code([&] { a.reset(v); }) == ErrorCode::InvalidArgument);
    CHECK(error_code([&] { a.swap([&](const json::value&) { return v; }); }) == ErrorCode::InvalidArgument);
    CHECK(a.version() == 0);
    CHECK(error_code([&] { seg.atom("new" + std::to_string(i), v); }) == ErrorCode::InvalidArgument);
    CHECK(!seg.find("new" + std::to_string(i)).has_value());
    ++i;
  }
  // The limits themselves are storable, and the stored bytes parse as readers parse them.
  a.reset(nested(512));
  CHECK(stored(seg, "a").valid);
  CHECK(stored(seg, "a").value == nested(512));
  a.reset(json::value("h\xc3\xa9llo \xf0\x9f\x98\x80"));
  CHECK(stored(seg, "a").value == json::value("h\xc3\xa9llo \xf0\x9f\x98\x80"));
}

TEST_CASE_FIXTURE(Fixture, "a damaged inactive buffer descriptor is refused, not followed: Corrupt, nothing written") {
  Atom a = seg.atom("a", counter(1));
  auto& s = atomtest::atom_state(seg, "a");
  auto& inactive = s.buffers[shmstate::detail::atom_buffer(s.current.load()) ^ 1];
  inactive.offset.store(std::uint64_t{1} << 50);  // far outside the segment
  inactive.capacity.store(std::uint64_t{1} << 62);  // doubling it would overflow
  CHECK(error_code([&] { a.reset(counter(2)); }) == ErrorCode::Corrupt);
  CHECK(error_code([&] { a.swap(increment); }) == ErrorCode::Corrupt);
  CHECK(a.version() == 0);
  CHECK(stored(seg, "a").value == counter(1));  // the value stays readable
  // A descriptor that says "no block" (capacity 0: a writer died while
  // replacing it) is a new block's place, whatever its offset says.
  inactive.capacity.store(0);
  CHECK(*a.reset(counter(2)) == counter(2));
  for (int i = 3; i < 8; ++i) CHECK(*a.swap(increment) == counter(i));
  CHECK(stored(seg, "a").value == counter(7));
}
