// Waits that end on a signal (issue 9, mo-threads' `till=`): FifoLock::acquire
// (mode, till), Atom::wait_for_change(version, till) and
// Atomic<T>::wait_while_equal(old, till), ended by a go() from another process
// or by their own condition, across real processes.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/signal.hpp>

#include "support/fifo_lock_helpers.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::LockModes;
using shmstate::Segment;
using shmstate::Till;
using B = std::vector<bool>;

namespace {
// Fires `name` in `segment` from a process of its own.
int go_from_another_process(const std::string& segment, const std::string& name) {
  test::Child firer([&] {
    Segment::open(segment).open_signal(name).go();
    return 0;
  });
  return firer.exit_code_within(10s);
}
}  // namespace

TEST_CASE("acquire(\"write\", please_stop | Till) ended by go() from another process leaves the queue clean") {
  test::TempSegment t("till");
  auto seg = Segment::create(t.name());
  seg.fifo_lock("l", LockModes::read_write());
  auto please_stop = seg.signal("please_stop");
  test::Holders holders(t.name(), "l");
  holders.start(0, "read");
  // A writer queues behind the read, waiting until please_stop or 30 s.
  test::Child writer([&] {
    auto s = Segment::open(t.name());
    auto stop = s.open_signal("please_stop");
    auto g = s.open_fifo_lock("l").acquire("write", stop | Till(30s));
    if (g.has_value()) return 1;
    return stop.is_set() ? 0 : 2;
  });
  REQUIRE(test::eventually([&] { return test::queued(seg, "l") == 1 && test::asleep_in_futex(writer.pid()); }));
  // A reader behind the writer: compatible with the read held, but FIFO.
  holders.start(1, "read");
  CHECK(holders.acquired(2) == B{true, false});
  CHECK(go_from_another_process(t.name(), "please_stop") == 0);
  CHECK(writer.exit_code_within(10s) == 0);
  // The writer left and the reader behind it was granted without a release.
  CHECK(test::eventually([&] { return holders.board().acquired[1].load() == 1; }, 5s));
  CHECK(test::queued(seg, "l") == 0);
  holders.complete(0);
  holders.complete(1);
  // The lock works as before: a writer gets it, even with please_stop set
  // (the grant is checked first).
  auto lock = seg.open_fifo_lock("l");
  auto g = lock.acquire("write", please_stop);
  CHECK(g.has_value());
}

TEST_CASE("acquire(mode, till): granted by a release from another process before till fires") {
  test::TempSegment t("till");
  auto seg = Segment::create(t.name());
  seg.fifo_lock("l", LockModes::exclusive());
  seg.signal("please_stop");
  test::Holders holders(t.name(), "l");
  holders.start(0, "exclusive");
  test::Child waiter([&] {
    auto s = Segment::open(t.name());
    auto g = s.open_fifo_lock("l").acquire("exclusive", s.open_signal("please_stop") | Till(30s));
    return g.has_value() ? 0 : 1;
  });
  REQUIRE(test::eventually([&] { return test::queued(seg, "l") == 1 && test::asleep_in_futex(waiter.pid()); }));
  holders.complete(0);
  CHECK(waiter.exit_code_within(10s) == 0);
  CHECK(test::queued(seg, "l") == 0);
  // A Till alone ends the wait too, and leaves the queue clean.
  auto lock = seg.open_fifo_lock("l");
  auto held = lock.acquire("exclusive");
  test::Child timed([&] {
    auto g = Segment::open(t.name()).open_fifo_lock("l").acquire("exclusive", Till(50ms));
    return g.has_value() ? 1 : 0;
  });
  CHECK(timed.exit_code_within(10s) == 0);
  CHECK(test::queued(seg, "l") == 0);
}

TEST_CASE("Atomic wait_while_equal(old, till): ended by another process's go(), or by its own change") {
  test::TempSegment t("till");
  auto seg = Segment::create(t.name());
  auto n = seg.atomic<std::int64_t>("n", 5);
  seg.signal("please_stop");
  auto wait_child = [&] {
    return std::make_unique<test::Child>([&] {
      auto s = Segment::open(t.name());
      auto stop = s.open_signal("please_stop");
      bool changed = s.open_atomic<std::int64_t>("n").wait_while_equal(5, stop | Till(30s));
      if (changed) return s.open_atomic<std::int64_t>("n").get() == 6 ? 10 : 11;
      return stop.is_set() ? 20 : 21;
    });
  };
  SUBCASE("by its own change") {
    auto c = wait_child();
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(c->pid()); }));
    test::Child writer([&] {
      Segment::open(t.name()).open_atomic<std::int64_t>("n").set(6);
      return 0;
    });
    CHECK(writer.exit_code_within(10s) == 0);
    CHECK(c->exit_code_within(10s) == 10);
  }
  SUBCASE("by a signal in another process") {
    auto c = wait_child();
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(c->pid()); }));
    CHECK(go_from_another_process(t.name(), "please_stop") == 0);
    CHECK(c->exit_code_within(10s) == 20);
    CHECK(n.get() == 5);
  }
  // In this process: a value already different returns true at once, even
  // with till set; an unchanged value with till set returns false.
  CHECK(n.wait_while_equal(4, shmstate::DONE));
  CHECK_FALSE(seg.atomic<bool>("b", false).wait_while_equal(false, Till(10ms)));
  CHECK_FALSE(seg.atomic<double>("d", 0.5).wait_while_equal(0.5, shmstate::DONE));
}

TEST_CASE("Atom wait_for_change(version, till): ended by another process's go(), or by its own change") {
  test::TempSegment t("till");
  auto seg = Segment::create(t.name());
  auto a = seg.atom("a", boost::json::value(1));
  seg.signal("please_stop");
  std::uint64_t v0 = a.version();
  auto wait_child = [&] {
    return std::make_unique<test::Child>([&, v0] {
      auto s = Segment::open(t.name());
      auto stop = s.open_signal("please_stop");
      bool changed = s.open_atom("a").wait_for_change(v0, stop | Till(30s));
      if (changed) return s.open_atom("a").version() > v0 ? 10 : 11;
      return stop.is_set() ? 20 : 21;
    });
  };
  SUBCASE("by its own change") {
    auto c = wait_child();
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(c->pid()); }));
    test::Child writer([&] {
      Segment::open(t.name()).open_atom("a").reset(boost::json::value(2));
      return 0;
    });
    CHECK(writer.exit_code_within(10s) == 0);
    CHECK(c->exit_code_within(10s) == 10);
  }
  SUBCASE("by a signal in another process") {
    auto c = wait_child();
    REQUIRE(test::eventually([&] { return test::asleep_in_futex(c->pid()); }));
    CHECK(go_from_another_process(t.name(), "please_stop") == 0);
    CHECK(c->exit_code_within(10s) == 20);
    CHECK(a.version() == v0);
  }
  CHECK_FALSE(a.wait_for_change(a.version(), Till(10ms)));
  auto before = a.version();
  a.reset(boost::json::value(3));
  CHECK(a.wait_for_change(before, shmstate::DONE));  // changed: true even with till set
}
