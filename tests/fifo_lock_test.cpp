// FifoLock in one process: mode tables, stored-table checks, try/timeout/stop,
// reentrancy errors, full tables, tokens.
#include <doctest/doctest.h>

#include <chrono>
#include <stop_token>
#include <thread>

#include <boost/json.hpp>

#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>

#include "support/checks.hpp"
#include "support/fifo_lock_helpers.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::FifoLock;
using shmstate::LockMode;
using shmstate::LockModes;
using shmstate::Segment;

namespace {
LockModes intention_locks() {
  // The textbook matrix (Gray): IS-X; IX-S,SIX,X; S-IX,SIX,X; SIX-IX,S,SIX,X; X-all.
  return LockModes({{"IS", {"X"}, 0},
                    {"IX", {"S", "SIX", "X"}, 0},
                    {"S", {"IX", "SIX", "X"}, 0},
                    {"SIX", {"IX", "S", "SIX", "X"}, 0},
                    {"X", {"IS", "IX", "S", "SIX", "X"}, 0}});
}
}  // namespace

TEST_CASE("presets and their text and JSON forms") {
  CHECK(LockModes::exclusive().to_string() == "exclusive(conflicts: exclusive)");
  CHECK(LockModes::read_write().to_string() == "read(conflicts: write), write(conflicts: read write)");
  CHECK(LockModes::semaphore(3).to_string() == "permit(capacity 3)");
  auto rw = LockModes::read_write();
  CHECK(LockModes::from_json(rw.to_json()) == rw);
  CHECK(LockModes::from_json(boost::json::parse(R"([{"name":"permit","capacity":2}])")) == LockModes::semaphore(2));
  // Conflicts written in another order, or twice, are the same table.
  CHECK(LockModes({{"read", {"write"}, 0}, {"write", {"write", "read", "write"}, 0}}) == rw);
}

TEST_CASE("invalid mode tables are InvalidArgument naming the problem") {
  auto e = test::error_of([] { LockModes({{"a", {"b"}, 0}, {"b", {}, 0}}); });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK(std::string(e.what()).find("symmetric") != std::string::npos);
  CHECK(test::error_of([] { LockModes({}); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([] { LockModes({{"a", {"zz"}, 0}}); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([] { LockModes({{"a", {}, 0}, {"a", {}, 0}}); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([] { LockModes({{"bad name", {}, 0}}); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([] { LockModes::semaphore(0); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([] { LockModes::from_json(boost::json::parse(R"({"modes":[{"name":"a","x":1}]})")); }).code() ==
        ErrorCode::InvalidArgument);
}

TEST_CASE("reopening with another table is KindMismatch naming both; open_fifo_lock uses the stored one") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  seg.fifo_lock("l", LockModes::read_write());
  auto e = test::error_of([&] { seg.fifo_lock("l", LockModes::exclusive()); });
  CHECK(e.code() == ErrorCode::KindMismatch);
  std::string msg = e.what();
  CHECK(msg.find("read(conflicts: write)") != std::string::npos);
  CHECK(msg.find("exclusive(conflicts: exclusive)") != std::string::npos);
  CHECK(msg.find("'l'") != std::string::npos);
  CHECK(seg.open_fifo_lock("l").modes() == LockModes::read_write());
  CHECK(seg.fifo_lock("l", LockModes::read_write()).modes() == LockModes::read_write());
  CHECK(test::error_of([&] { seg.open_fifo_lock("nope"); }).code() == ErrorCode::NotFound);
  seg.atomic<std::int64_t>("n", 0);
  CHECK(test::error_of([&] { seg.open_fifo_lock("n"); }).code() == ErrorCode::KindMismatch);
}

TEST_CASE("the intention-lock table grants exactly the textbook compatible pairs") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("il", intention_locks());
  const char* names[] = {"IS", "IX", "S", "SIX", "X"};
  // compatible[i][j]: textbook matrix.
  const bool compatible[5][5] = {{1, 1, 1, 1, 0}, {1, 1, 0, 0, 0}, {1, 0, 1, 0, 0}, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) {
      CAPTURE(names[i]);
      CAPTURE(names[j]);
      auto a = lock.try_acquire(names[i]);
      REQUIRE(a.has_value());
      // Asked from another thread: a conflicting ask from the holding thread is an error.
      std::optional<FifoLock::Guard> b;
      std::thread([&] { b = lock.try_acquire(names[j]); }).join();
      CHECK(b.has_value() == compatible[i][j]);
    }
}

TEST_CASE("try_acquire, acquire_for and a stop_token") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("m", LockModes::exclusive());
  auto g = lock.acquire();
  std::thread([&] {
    CHECK_FALSE(lock.try_acquire().has_value());
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(lock.acquire_for(50ms).has_value());
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    CHECK(test::queued(seg, "m") == 0);  // the timed-out request left the queue
    std::stop_source src;
    std::thread stopper([&] {
      test::eventually([&] { return test::queued(seg, "m") == 1; });
      src.request_stop();
    });
    CHECK_FALSE(lock.acquire(src.get_token()).has_value());
    stopper.join();
    CHECK(test::queued(seg, "m") == 0);
  }).join();
  auto t1 = g.token();
  g.release();
  CHECK_FALSE(g.held());
  auto g2 = lock.acquire();
  CHECK(g2.token() > t1);
  CHECK(g2.mode() == "exclusive");
  FifoLock::Guard moved = std::move(g2);
  CHECK(moved.held());
  CHECK_FALSE(g2.held());
}

TEST_CASE("not reentrant: a conflicting re-request from the holding thread is InvalidArgument") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("rw", LockModes::read_write());
  auto w = lock.acquire("write");
  auto e = test::error_of([&] { lock.acquire("read"); });
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK(std::string(e.what()).find("reentrant") != std::string::npos);
  CHECK(test::error_of([&] { lock.try_acquire("write"); }).code() == ErrorCode::InvalidArgument);
  w.release();
  auto r = lock.acquire("read");
  auto r2 = lock.acquire("read");  // not conflicting, nothing queued: fine
  CHECK(r2.held());
  auto sem = seg.fifo_lock("sem", LockModes::semaphore(1));
  auto p = sem.acquire();
  CHECK(test::error_of([&] { sem.acquire(); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([&] { lock.acquire("nope"); }).code() == ErrorCode::InvalidArgument);
  CHECK(test::error_of([&] { lock.acquire(); }).code() == ErrorCode::InvalidArgument);  // two modes
}

TEST_CASE("a full slot table is SegmentFull naming the lock") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("small", LockModes::semaphore(10), 2);
  CHECK(lock.capacity() == 2);
  auto a = lock.acquire();
  std::optional<FifoLock::Guard> b;
  std::thread([&] { b = lock.acquire(); }).join();
  shmstate::Error e(ErrorCode::Io, "");
  std::thread([&] { e = test::error_of([&] { lock.acquire(); }); }).join();
  CHECK(e.code() == ErrorCode::SegmentFull);
  CHECK(std::string(e.what()).find("'small'") != std::string::npos);
  CHECK(test::error_of([&] { seg.fifo_lock("z", LockModes::exclusive(), 0); }).code() == ErrorCode::InvalidArgument);
}

TEST_CASE("a damaged slot is Corrupt, never a crash") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("d", LockModes::exclusive(), 4);
  auto* s = test::lock_state(seg, "d");
  shmstate::detail::fifo_slots(s)[0].state.store(77);
  CHECK(test::error_of([&] { lock.acquire(); }).code() == ErrorCode::Corrupt);
  shmstate::detail::fifo_slots(s)[0].state.store(0);
  s->mode_count = 99;
  CHECK(test::error_of([&] { seg.open_fifo_lock("d"); }).code() == ErrorCode::Corrupt);
  s->mode_count = 1;
  s->slot_count = 1u << 20;
  CHECK(test::error_of([&] { seg.open_fifo_lock("d"); }).code() == ErrorCode::Corrupt);
  s->slot_count = 4;
  CHECK(lock.acquire().held());
}
