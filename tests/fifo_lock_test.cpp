// FifoLock in one process: mode tables, stored-table checks, try/timeout/stop,
// reentrancy errors, full tables, tokens.
#include <doctest/doctest.h>

#include <chrono>
#include <stop_token>
#include <thread>

#include <boost/json.hpp>

#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

#include "support/checks.hpp"
#include "support/fifo_lock_helpers.hpp"
#include "support/proc.hpp"
#include "primitives/kind.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::FifoLock;
using shmstate::LockMode;
using shmstate::LockModes;
using shmstate::Segment;

#define CHECK_THROWS_CODE(expr, want) CHECK(test::error_of([&] { expr; }).code() == (want))

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
  auto a = lock.acquire();  // the lock was idle: the fast path, no slot
  std::optional<FifoLock::Guard> b, c;
  std::thread([&] { b = lock.acquire(); }).join();
  std::thread([&] { c = lock.acquire(); }).join();
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
  {
    // An idle lock's fast path reads no slot; the first request that uses the
    // table (here: one that finds the lock held) finds the damage.
    auto g = lock.acquire();
    std::thread([&] { CHECK(test::error_of([&] { lock.try_acquire(); }).code() == ErrorCode::Corrupt); }).join();
  }
  shmstate::detail::fifo_slots(s)[0].state.store(0);
  CHECK(lock.acquire().held());
  // A fast word with a mode the lock does not have.
  s->fast.word.store(shmstate::detail::kFastHeld | std::uint64_t{9} << shmstate::detail::kFastModeShift);
  auto bad = test::error_of([&] { lock.try_acquire(); });
  CHECK(bad.code() == ErrorCode::Corrupt);
  CHECK(std::string(bad.what()).find("mode 9") != std::string::npos);
  s->fast.word.store(shmstate::detail::kFastHeld);  // pid 0: nobody whose death would free it
  bad = test::error_of([&] { lock.try_acquire(); });
  CHECK(bad.code() == ErrorCode::Corrupt);
  CHECK(std::string(bad.what()).find("pid 0") != std::string::npos);
  // A fast word naming a process that is not there (pid 1 with another
  // start time): a ghost holder, reclaimed, and the next grant is told.
  s->fast.word.store(shmstate::detail::fast_word({1, 0, 12345}, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // older than a slice
  auto ghost = lock.acquire_for(std::chrono::seconds(3));
  REQUIRE(ghost.has_value());
  CHECK(ghost->previous_holder_died());
  ghost->release();
  s->mode_count = 99;
  CHECK(test::error_of([&] { seg.open_fifo_lock("d"); }).code() == ErrorCode::Corrupt);
  s->mode_count = 1;
  s->slot_count = 1u << 20;
  CHECK(test::error_of([&] { seg.open_fifo_lock("d"); }).code() == ErrorCode::Corrupt);
  s->slot_count = 4;
  CHECK(lock.acquire().held());
}

TEST_CASE("the kind descriptor: dump lists holders and waiters in queue order without waiting") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("rw", LockModes::read_write());
  auto r = lock.acquire("read");
  auto tmp = lock.acquire("read");  // its slot goes to the later waiter: slot order != queue order
  std::stop_source stop;
  std::thread writer([&] { CHECK_FALSE(lock.acquire("write", stop.get_token()).has_value()); });
  REQUIRE(test::eventually([&] { return test::queued(seg, "rw") == 1; }));
  tmp.release();
  std::stop_source stop2;
  std::thread reader([&] { CHECK_FALSE(lock.acquire("read", stop2.get_token()).has_value()); });
  REQUIRE(test::eventually([&] { return test::queued(seg, "rw") == 2; }));

  auto info = seg.find("rw");
  REQUIRE(info.has_value());
  const auto* d = shmstate::detail::find_kind(shmstate::Kind::FifoLock);
  REQUIRE(d != nullptr);
  auto st = d->state(seg, *info);  // returns although the lock is held and has waiters
  CHECK(st.at("next_token") == r.token() + 2);
  CHECK(st.at("slots") == 64);
  CHECK(LockModes::from_json(st.at("modes")) == LockModes::read_write());
  const auto& holders = st.at("holders").as_array();
  REQUIRE(holders.size() == 1);
  CHECK(holders[0].at("pid") == ::getpid());
  CHECK(holders[0].at("alive") == true);
  CHECK(holders[0].at("mode") == "read");
  CHECK(holders[0].at("token") == r.token());
  CHECK(holders[0].at("held_for").as_double() >= 0.0);
  const auto& waiters = st.at("waiters").as_array();
  REQUIRE(waiters.size() == 2);
  CHECK(waiters[0].at("mode") == "write");  // queue order, not slot order
  CHECK(waiters[1].at("mode") == "read");
  CHECK(waiters[0].at("waiting_for").as_double() >= waiters[1].at("waiting_for").as_double());
  auto text = d->text(seg, *info, 60);
  CHECK(text.find("1 held, 2 waiting, next token") == 0);
  CHECK(text.find("\nholder pid " + std::to_string(::getpid()) + " (alive) read token") != std::string::npos);
  CHECK(text.find("\nwaiter pid " + std::to_string(::getpid()) + " (alive) write waiting for") !=
        std::string::npos);
  stop.request_stop();
  stop2.request_stop();
  writer.join();
  reader.join();
}

// The fast path reads no clock (a tenth of an uncontended acquire+release):
// an uncontended hold is timed from the first request that finds it held.
TEST_CASE("dump times an uncontended hold from the first request that finds it held") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  auto lock = seg.fifo_lock("x", LockModes::exclusive());
  const auto* d = shmstate::detail::find_kind(shmstate::Kind::FifoLock);
  REQUIRE(d != nullptr);
  auto holder = [&] {
    auto st = d->state(seg, *seg.find("x"));
    REQUIRE(st.at("holders").as_array().size() == 1);
    return st.at("holders").as_array()[0].at("held_for");
  };
  auto text = [&] { return d->text(seg, *seg.find("x"), 200); };
  auto g = lock.acquire();  // idle: the fast path
  CHECK(holder().is_null());
  CHECK_MESSAGE(text().find(" held (uncontended: not timed)") != std::string::npos, text());
  std::thread([&] { CHECK_FALSE(lock.try_acquire().has_value()); }).join();  // finds it held
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  REQUIRE(holder().is_double());
  CHECK(holder().as_double() >= 0.029);
  CHECK_MESSAGE(text().find(" held for >= 0.0") != std::string::npos, text());
  g.release();
  g = lock.acquire();  // a new fast hold: the old stamp is not its age
  CHECK(holder().is_null());
}

TEST_CASE("the kind descriptor: new with --modes and --slots; snapshot and restore keep tokens going up") {
  test::TempSegment t("fl");
  auto seg = Segment::create(t.name());
  const auto* d = shmstate::detail::find_kind(shmstate::Kind::FifoLock);
  auto create = [&](const std::string& name, shmstate::inspect::CreateOptions opts) {
    shmstate::inspect::create(seg, shmstate::Kind::FifoLock, name, nullptr, opts);
  };
  create("x", {});
  CHECK(seg.open_fifo_lock("x").modes() == LockModes::exclusive());
  create("rw", {{"modes", "rw"}});
  CHECK(seg.open_fifo_lock("rw").modes() == LockModes::read_write());
  create("sem", {{"modes", "semaphore:3"}, {"slots", "8"}});
  CHECK(seg.open_fifo_lock("sem").modes() == LockModes::semaphore(3));
  CHECK(seg.open_fifo_lock("sem").capacity() == 8);
  create("j", {{"modes", R"([{"name":"a","conflicts":["a"]},{"name":"b"}])"}});
  CHECK(seg.open_fifo_lock("j").modes().to_string() == "a(conflicts: a), b(no conflicts)");
  for (const auto& bad : {"semaphore:", "semaphore:0", "semaphore:x", "bogus", "[{]", "[]"})
    CHECK_THROWS_CODE(create("bad", {{"modes", bad}}), ErrorCode::InvalidArgument);
  CHECK_THROWS_CODE(create("bad", {{"slots", "0"}}), ErrorCode::InvalidArgument);
  CHECK_FALSE(seg.find("bad").has_value());
  CHECK_THROWS_CODE(shmstate::inspect::create(seg, shmstate::Kind::FifoLock, "bad", 1, {}),
                    ErrorCode::InvalidArgument);

  std::uint64_t last = 0;
  {
    auto lock = seg.open_fifo_lock("sem");
    for (int i = 0; i < 5; ++i) last = lock.acquire().token();
    auto held = lock.acquire();  // held while the snapshot is taken: not persisted
    last = held.token();
    auto saved = d->snapshot(seg, *seg.find("sem"));
    test::TempSegment t2("fl");
    auto seg2 = Segment::create(t2.name());
    d->restore(seg2, "sem", saved);
    auto restored = seg2.open_fifo_lock("sem");
    CHECK(restored.modes() == LockModes::semaphore(3));
    CHECK(restored.capacity() == 8);
    CHECK(test::queued(seg2, "sem") == 0);
    auto g = restored.acquire();
    CHECK(g.token() == last + 1);  // never backwards
    CHECK(d->state(seg2, *seg2.find("sem")).at("holders").as_array().size() == 1);
    CHECK_THROWS_CODE(d->restore(seg2, "sem", saved), ErrorCode::AlreadyExists);
    for (const auto* doc : {R"(1)", R"({"modes":[],"slots":8,"last_token":1})",
                            R"({"modes":[{"name":"a"}],"slots":0,"last_token":1})",
                            R"({"modes":[{"name":"a"}],"slots":8,"last_token":-1})",
                            R"({"modes":[{"name":"a"}],"slots":8})"})
      CHECK_THROWS_CODE(d->restore(seg2, "other", boost::json::parse(doc)), ErrorCode::Corrupt);
    CHECK_FALSE(seg2.find("other").has_value());
  }
}
