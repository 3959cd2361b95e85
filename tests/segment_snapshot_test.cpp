// Segment::snapshot and Segment::restore across real processes: every kind's
// state round-trips exactly (doubles bit for bit, NaN and infinities too),
// versions never go backwards, bad snapshots create nothing, a restore is
// published whole, and a writer killed midway leaves the previous file.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "support/checks.hpp"
#include "support/proc.hpp"
#include "support/temp_dir.hpp"

using shmstate::ErrorCode;
using shmstate::LockModes;
using shmstate::Segment;
namespace json = boost::json;

namespace {

std::uint64_t bits(double d) { return std::bit_cast<std::uint64_t>(d); }

// Doubles a snapshot must keep bit for bit.
std::vector<double> awkward_doubles() {
  return {0.0,
          -0.0,
          0.1,
          0.9809778140020573,
          1e308,
          -5e-324,
          std::numeric_limits<double>::denorm_min(),
          std::numeric_limits<double>::max(),
          std::numeric_limits<double>::infinity(),
          -std::numeric_limits<double>::infinity(),
          std::numeric_limits<double>::quiet_NaN(),
          -std::numeric_limits<double>::quiet_NaN(),
          std::bit_cast<double>(std::uint64_t{0x7ff0000000000001}),  // signalling NaN with a payload
          std::bit_cast<double>(std::uint64_t{0xfff8dead00000000})};
}

// A lock table of no built-in shape: it must come back exactly.
LockModes custom_modes() {
  return LockModes::from_json(json::parse(R"([{"name":"a","conflicts":["a"]},{"name":"b"}])"));
}

// What fill() left for the checks: the last token each lock granted, and who
// fired the fired signal when.
struct Filled {
  std::uint64_t rw_token = 0, sem_token = 0, custom_token = 0;
  std::int32_t fired_pid = 0;
  std::int64_t fired_ns = 0;
};

// A segment holding every kind, with known state.
Filled fill(Segment& seg) {
  seg.atomic<bool>("flag", true);
  seg.atomic<std::int64_t>("min", std::numeric_limits<std::int64_t>::min());
  seg.atomic<std::int64_t>("max", std::numeric_limits<std::int64_t>::max());
  auto ds = awkward_doubles();
  for (std::size_t i = 0; i < ds.size(); ++i) seg.atomic<double>("d" + std::to_string(i), ds[i]);
  auto atom = seg.atom("state", json::object{{"z", 1}, {"a", json::array{1.5, "x", nullptr}}});
  for (int i = 0; i < 5; ++i) atom.reset(json::object{{"z", i}, {"a", 0.30000000000000004}});
  auto ref = seg.atomic_reference("ref", "first");
  ref.set("second");
  ref.set(json::array{true, false});
  // Locks: mode table, slot count and token counter are persisted.
  Filled f;
  auto rw = seg.fifo_lock("rw", LockModes::read_write(), 8);
  for (int i = 0; i < 3; ++i) f.rw_token = rw.acquire("write").token();
  f.rw_token = rw.acquire("read").token();
  auto sem = seg.fifo_lock("sem", LockModes::semaphore(3), 4);
  for (int i = 0; i < 7; ++i) f.sem_token = sem.acquire().token();
  auto custom = seg.fifo_lock("custom", custom_modes(), 2);
  f.custom_token = custom.acquire("b").token();
  // Signals: fired (by whom, when) or pending.
  auto fired = seg.signal("fired");
  fired.go();
  auto by = fired.fired();
  REQUIRE(by.has_value());
  f.fired_pid = by->pid;
  f.fired_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(by->when.time_since_epoch()).count();
  seg.signal("pending");
  // A monitor: its waiter capacity is persisted (holder and waiters are not).
  auto mon = seg.monitor("mon", 5);
  { auto g = mon.lock(); }
  return f;
}

}  // namespace

TEST_CASE("a snapshot restores every object exactly in another process, versions included") {
  test::TempSegment src("snap-src"), dst("snap-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  Filled filled;
  {
    auto seg = Segment::create(src.name(), {.size = 1 << 20, .mode = 0640, .max_objects = 64});
    filled = fill(seg);
    // Held and queued while the snapshot is taken: holds are not persisted.
    auto held = seg.open_fifo_lock("sem").acquire();
    auto held_too = seg.open_fifo_lock("rw").acquire("read");
    filled.sem_token = held.token();  // issued before the snapshot: restored tokens come after it
    filled.rw_token = held_too.token();
    seg.snapshot(file);
  }
  struct stat st;
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);  // a new file is no more exposed than the segment

  // Restored in a child; checked in a grandchild that only opens it.
  test::Child restorer([&] {
    Segment::restore(dst.name(), file);
    return 0;
  });
  REQUIRE(restorer.exit_code() == 0);
  // A snapshot of the restored segment is the same document, but its name.
  std::string again = dir.file("again.json");
  Segment::open(dst.name()).snapshot(again);
  std::string a = *test::read_file(file), b = *test::read_file(again);
  auto strip = [](std::string s, const std::string& name) { return s.replace(s.find(name), name.size(), "X"); };
  CHECK(strip(a, src.name()) == strip(b, dst.name()));
  test::Child checker([&] {
    auto seg = Segment::open(dst.name());
    if (!seg.open_atomic<bool>("flag").get()) return 1;
    if (seg.open_atomic<std::int64_t>("min").get() != std::numeric_limits<std::int64_t>::min()) return 2;
    if (seg.open_atomic<std::int64_t>("max").get() != std::numeric_limits<std::int64_t>::max()) return 3;
    auto ds = awkward_doubles();
    for (std::size_t i = 0; i < ds.size(); ++i)
      if (bits(seg.open_atomic<double>("d" + std::to_string(i)).get()) != bits(ds[i])) return 10 + static_cast<int>(i);
    auto atom = seg.open_atom("state");
    if (atom.version() != 5) return 4;
    json::value want = json::object{{"z", 4}, {"a", 0.30000000000000004}};
    if (json::serialize(*atom.deref()) != json::serialize(want)) return 5;  // key order kept
    auto ref = seg.open_atomic_reference("ref");
    if (ref.version() != 2 || ref.get() != json::array{true, false}) return 6;
    // Versions go on from the snapshot's, never back.
    atom.reset(1);
    if (atom.version() != 6) return 7;
    // Locks: the same tables and slots, no holder (the held permit and read
    // were not persisted), and tokens going on after the snapshot's.
    auto rw = seg.open_fifo_lock("rw");
    if (rw.modes() != LockModes::read_write() || rw.capacity() != 8) return 30;
    if (rw.acquire("write").token() != filled.rw_token + 1) return 31;
    auto sem = seg.open_fifo_lock("sem");
    if (sem.modes() != LockModes::semaphore(3) || sem.capacity() != 4) return 32;
    auto p1 = sem.try_acquire(), p2 = sem.try_acquire(), p3 = sem.try_acquire();
    if (!p1 || !p2 || !p3) return 33;  // all three permits free
    if (p1->token() != filled.sem_token + 1) return 34;
    auto custom = seg.open_fifo_lock("custom");
    if (custom.modes() != custom_modes() || custom.capacity() != 2) return 35;
    if (custom.acquire("a").token() != filled.custom_token + 1) return 36;
    // Signals: fired with its firer and time, or still pending.
    auto by = seg.open_signal("fired").fired();
    if (!by || by->pid != filled.fired_pid) return 40;
    if (std::chrono::duration_cast<std::chrono::nanoseconds>(by->when.time_since_epoch()).count() != filled.fired_ns)
      return 41;
    if (!seg.open_signal("fired").is_set()) return 42;
    auto pending = seg.open_signal("pending");
    if (pending.is_set() || pending.fired()) return 43;
    auto mon = seg.open_monitor("mon");
    if (mon.capacity() != 5) return 50;
    if (!mon.try_lock()) return 51;  // restored free
    return 0;
  });
  CHECK(checker.exit_code() == 0);

  auto info = Segment::open(dst.name()).info();
  CHECK(info.mode == 0640);
  CHECK(info.size == 1 << 20);
  CHECK(info.max_objects == 64);
  CHECK(info.object_count == Segment::open(src.name()).info().object_count);
}

TEST_CASE("damaged, truncated, newer and foreign snapshots are refused and create nothing") {
  test::TempSegment src("snap-bad-src"), dst("snap-bad-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  {
    auto seg = Segment::create(src.name());
    fill(seg);
    seg.snapshot(file);
  }
  const std::string good = *test::read_file(file);
  auto refused = [&](const std::string& bytes) {
    test::write_file(file, bytes);
    auto e = test::error_of([&] { Segment::restore(dst.name(), file); });
    CHECK(!Segment::exists(dst.name()));
    CHECK(std::string(e.what()).find("snapshot '" + file + "'") != std::string::npos);
    return e.code();
  };
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };
  // Every cut before the last brace (a step of 7 keeps it quick).
  for (std::size_t n = 0; n + 2 < good.size(); n += 7) {
    CAPTURE(n);
    auto code = refused(good.substr(0, n));
    CHECK((code == ErrorCode::Corrupt || code == ErrorCode::LayoutMismatch));
  }
  CHECK(refused(with("\"version\":1,", "\"version\":2,")) == ErrorCode::LayoutMismatch);
  CHECK(refused("{\"something\":\"else\"}") == ErrorCode::LayoutMismatch);
  CHECK(refused(with("\"kind\":\"int64\"", "\"kind\":\"int128\"")) == ErrorCode::Corrupt);
  CHECK(refused(with("\"kind\":\"bool\"", "\"kind\":\"monitor\"")) == ErrorCode::Corrupt);  // not {"waiters": N}
  // Each kind's own state checked: wrong types, a version out of range.
  CHECK(refused(with("\"state\":true", "\"state\":1")) == ErrorCode::Corrupt);
  CHECK(refused(with("\"state\":\"Infinity\"", "\"state\":\"Infinite\"")) == ErrorCode::Corrupt);
  CHECK(refused(with("\"state\":\"NaN:0x7ff0000000000001\"", "\"state\":\"NaN:0x7ff0000000000000\"")) ==
        ErrorCode::Corrupt);  // the bits of infinity are not a NaN
  CHECK(refused(with("\"version\":5}", "\"version\":-5}")) == ErrorCode::Corrupt);
  CHECK(refused(with("\"version\":5}", "\"version\":9223372036854775808}")) == ErrorCode::Corrupt);
  CHECK(refused(with("{\"value\":{\"z\":4", "{\"valu\":{\"z\":4")) == ErrorCode::Corrupt);
  CHECK(refused(with("\"size\":1048576", "\"size\":4096")) == ErrorCode::Corrupt);  // too small for the registry
  // A good file still restores (the checks above are not refusing everything).
  test::write_file(file, good);
  Segment::restore(dst.name(), file);
  CHECK(Segment::exists(dst.name()));
  // The name is taken now.
  CHECK(test::error_of([&] { Segment::restore(dst.name(), file); }).code() == ErrorCode::AlreadyExists);
  CHECK(test::error_of([&] { Segment::restore("snap-no-file", dir.file("none.json")); }).code() ==
        ErrorCode::NotFound);
}

TEST_CASE("restore options; a restore that does not fit creates nothing") {
  test::TempSegment src("snap-opt-src"), dst("snap-opt-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  {
    auto seg = Segment::create(src.name(), {.size = 1 << 20});
    seg.atom("big", json::string(100000, 'x'));
    seg.atomic<std::int64_t>("n", 7);
    seg.snapshot(file);
  }
  auto e = test::error_of([&] { Segment::restore(dst.name(), file, {.size = 64 << 10}); });
  CHECK(e.code() == ErrorCode::SegmentFull);
  CHECK(!Segment::exists(dst.name()));
  CHECK(test::error_of([&] { Segment::restore(dst.name(), file, {.max_objects = 1}); }).code() ==
        ErrorCode::SegmentFull);
  CHECK(!Segment::exists(dst.name()));
  auto seg = Segment::restore(dst.name(), file, {.size = 4 << 20, .mode = 0660});
  CHECK(seg.info().size == 4 << 20);
  CHECK(seg.info().mode == 0660);
  CHECK(seg.open_atomic<std::int64_t>("n").get() == 7);
}

TEST_CASE("open_or_create restores from a snapshot when it creates, and only then") {
  test::TempSegment src("snap-ooc-src"), dst("snap-ooc-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  shmstate::SegmentOptions o{.size = 256 << 10, .restore_from = file};
  {
    // No snapshot yet: created empty with the options.
    auto fresh = Segment::open_or_create(dst.name(), o);
    CHECK(fresh.objects().empty());
    CHECK(fresh.info().size == 256 << 10);
  }
  Segment::remove(dst.name());
  {
    auto seg = Segment::create(src.name(), {.size = 1 << 20});
    seg.atomic<std::int64_t>("n", 41);
    seg.snapshot(file);
  }
  auto seg = Segment::open_or_create(dst.name(), o);
  CHECK(seg.info().size == 1 << 20);  // the snapshot's
  CHECK(seg.open_atomic<std::int64_t>("n").get() == 41);
  seg.open_atomic<std::int64_t>("n").set(42);
  // Exists now: opened, not restored again.
  CHECK(Segment::open_or_create(dst.name(), o).open_atomic<std::int64_t>("n").get() == 42);
  // A damaged snapshot is an error, not a silently empty segment.
  Segment::remove(dst.name());
  test::write_file(file, "{\"format\":\"shmstate-snapshot\",\"version\":1");
  CHECK(test::error_of([&] { Segment::open_or_create(dst.name(), o); }).code() == ErrorCode::Corrupt);
  CHECK(!Segment::exists(dst.name()));
  CHECK(test::error_of([&] { Segment::create(dst.name(), o); }).code() == ErrorCode::InvalidArgument);
}

TEST_CASE("openers racing a restore never see it half-restored") {
  test::TempSegment src("snap-race-src"), dst("snap-race-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  constexpr int kObjects = 200;
  {
    auto seg = Segment::create(src.name(), {.size = 4 << 20, .max_objects = 256});
    for (int i = 0; i < kObjects; ++i) seg.atom("a" + std::to_string(i), i);
    seg.snapshot(file);
  }
  for (int round = 0; round < 5; ++round) {
    Segment::remove(dst.name());
    test::SharedMemory mem;
    auto* go = mem.as<std::atomic<int>>();
    // Openers spin on open() and check that the first segment they see holds
    // every object: a segment visible under the name before its last object
    // was restored would fail here.
    std::vector<std::unique_ptr<test::Child>> openers;
    for (int k = 0; k < 2; ++k)
      openers.push_back(std::make_unique<test::Child>([&] {
        while (go->load() == 0) {
        }
        for (;;) {
          try {
            auto seg = Segment::open(dst.name());
            return seg.objects().size() == kObjects ? 0 : 1;
          } catch (const shmstate::Error& e) {
            if (e.code() != ErrorCode::NotFound) return 2;
          }
        }
      }));
    go->store(1);
    Segment::restore(dst.name(), file);
    for (auto& c : openers) CHECK(c->exit_code_within(std::chrono::seconds(30)) == 0);
  }
}

#if SHMSTATE_TEST_HOOKS  // crash points need a build with -Dtest_hooks=true
TEST_CASE("a restorer killed before publishing leaves nothing under the name") {
  test::TempSegment src("snap-kill-src"), dst("snap-kill-dst");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  {
    auto seg = Segment::create(src.name());
    fill(seg);
    seg.snapshot(file);
  }
  for (const char* point : {"registry.after_reserve", "segment.before_publish"}) {
    CAPTURE(point);
    test::Child child([&] {
      shmstate::testing::arm_crash_point(point);
      Segment::restore(dst.name(), file);
      return 0;
    });
    CHECK(child.exit_code() == shmstate::testing::kCrashExitCode);
    CHECK(!Segment::exists(dst.name()));
  }
  // The next restore works (and sweeps the dead restorers' temp files).
  Segment::restore(dst.name(), file);
  CHECK(Segment::open(dst.name()).open_atom("state").version() == 5);
}

TEST_CASE("a process killed while writing a snapshot leaves the previous file intact") {
  test::TempSegment seg_name("snap-write-kill");
  test::TempDir dir;
  std::string file = dir.file("seg.json");
  auto seg = Segment::create(seg_name.name());
  auto n = seg.atomic<std::int64_t>("n", 1);
  seg.snapshot(file);
  const std::string before = *test::read_file(file);
  n.set(2);
  for (const char* point : {"file.replace.after_create", "file.replace.after_write", "file.replace.after_fsync"}) {
    CAPTURE(point);
    test::Child child([&] {
      shmstate::testing::arm_crash_point(point);
      Segment::open(seg_name.name()).snapshot(file);
      return 0;
    });
    CHECK(child.exit_code() == shmstate::testing::kCrashExitCode);
    CHECK(*test::read_file(file) == before);
  }
  // A later snapshot removes the dead writers' temp files and writes the new state.
  seg.snapshot(file);
  CHECK(dir.entries() == std::vector<std::string>{"seg.json"});
  test::TempSegment back("snap-write-kill-back");
  CHECK(Segment::restore(back.name(), file).open_atomic<std::int64_t>("n").get() == 2);
}

#endif  // SHMSTATE_TEST_HOOKS

TEST_CASE("a snapshot into a missing directory is NotFound naming the path") {
  test::TempSegment seg_name("snap-dir");
  auto seg = Segment::create(seg_name.name());
  seg.atomic<bool>("b", false);
  auto e = test::error_of([&] { seg.snapshot("/nonexistent-dir-shmstate/x.json"); });
  CHECK(e.code() == ErrorCode::NotFound);
  CHECK(std::string(e.what()).find("snapshot '/nonexistent-dir-shmstate/x.json'") != std::string::npos);
}

namespace {

// In a child: `limit` makes big files fail (false: it cannot here, skip),
// then a small snapshot is written and a big one must fail with Io naming
// the file, leaving the small one and no temp file. 0 when all holds.
int snapshot_beyond(const std::string& seg_name, const test::TempDir& dir, const std::function<bool()>& limit,
                    const char* error_text) {
  test::Child child([&] {
    if (!limit()) return test::kSkipped;
    const std::string file = dir.file("seg.json");
    auto seg = Segment::open(seg_name);
    auto atom = seg.open_atom("a");
    atom.reset("small");
    seg.snapshot(file);
    const auto before = test::read_file(file);
    atom.reset(json::string(200000, 'x'));
    try {
      seg.snapshot(file);
      return 1;
    } catch (const shmstate::Error& e) {
      std::fprintf(stderr, "snapshot beyond the limit: %s\n", e.what());
      if (e.code() != ErrorCode::Io) return 2;
      if (!test::contains(e.what(), "snapshot '" + file + "'")) return 3;
      if (!test::contains(e.what(), error_text)) return 4;
    }
    if (!before || test::read_file(file) != before) return 5;
    if (test::replace_temps(dir) != 0) return 6;
    atom.reset("small again");  // the temp file's room is free again
    seg.snapshot(file);
    return test::contains(*test::read_file(file), "small again") ? 0 : 7;
  });
  return child.exit_code();
}

}  // namespace

TEST_CASE("a full disk or a file size limit is Io naming the path; the previous snapshot stays, no temp file") {
  test::TempSegment seg_name("snap-full");
  auto seg = Segment::create(seg_name.name(), {.size = 4 << 20});
  seg.atom("a", "small");
  SUBCASE("ENOSPC: a 64 KiB file system") {
    test::TempDir dir;
    int rc = snapshot_beyond(
        seg_name.name(), dir, [&] { return test::mount_small_tmpfs(dir.path(), 64 << 10); }, std::strerror(ENOSPC));
    if (rc == test::kSkipped) {
      MESSAGE("skipped: this process may not mount a tmpfs (no root, no user namespaces)");
    } else {
      CHECK(rc == 0);
      CHECK(dir.entries().empty());  // the mount stayed in the child
    }
  }
  SUBCASE("EFBIG: RLIMIT_FSIZE, SIGXFSZ ignored") {
    test::TempDir dir;
    int rc = snapshot_beyond(
        seg_name.name(), dir,
        [] {
          std::signal(SIGXFSZ, SIG_IGN);
          rlimit lim{16 << 10, 16 << 10};
          return ::setrlimit(RLIMIT_FSIZE, &lim) == 0;
        },
        std::strerror(EFBIG));
    CHECK(rc == 0);
    CHECK(dir.entries() == std::vector<std::string>{"seg.json"});
  }
}
