// Other users kept out, and hostile bytes survived (the reliability issue's
// "Security" section).
//
// Permission cases need root (to become other users in a child); they are
// skipped, with a message, otherwise. The scribbler needs nothing: it damages
// random words of a real segment holding every kind and requires that the
// CLI's list/dump/get and the library's readers and writers end (within a
// bound) with a result or a typed error, never a signal, a hang or another
// exception type.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/error.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>

#include "support/checks.hpp"
#include "support/proc.hpp"
#include "support/run.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Segment;

namespace {

// A copy of the built CLI (and the libshmstate.so its $ORIGIN/../lib
// runpath finds) in a 0755 directory under /tmp, for the other user to run:
// the build tree is often where another user cannot reach it (a clone in
// /root, which is 0700 on Debian), and a CLI that cannot even be executed
// would make "the other user's command failed" pass for the wrong reason.
class StagedCli {
 public:
  StagedCli() {
    const char* p = std::getenv("SHMSTATE_CLI");
    if (p == nullptr || *p == 0) return;
    namespace fs = std::filesystem;
    char tmpl[] = "/tmp/shmstate-cli-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    fs::path built(p);
    fs::create_directories(dir_ / "tools");
    fs::create_directories(dir_ / "lib");
    fs::copy_file(built, dir_ / "tools" / built.filename());
    for (const auto& e : fs::directory_iterator(built.parent_path().parent_path() / "lib"))
      if (e.path().filename().string().starts_with("libshmstate.so"))
        fs::copy(e.path(), dir_ / "lib" / e.path().filename(), fs::copy_options::copy_symlinks);
    for (const auto& e : fs::recursive_directory_iterator(dir_))
      if (!e.is_symlink()) fs::permissions(e.path(), fs::perms(0755));
    fs::permissions(dir_, fs::perms(0755));
    path_ = (dir_ / "tools" / built.filename()).string();
  }
  ~StagedCli() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::filesystem::path dir_;
  std::string path_;
};

const std::string& cli() {
  static const StagedCli staged;
  return staged.path();
}

// The CLI, killed after 10 s (coreutils timeout) so a hang fails the test.
test::RunResult run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/timeout", "-s", "KILL", "10", cli()});
  return test::run(args);
}

bool root() { return ::geteuid() == 0; }

// In a child: become uid/gid with no supplementary groups. False if not allowed.
bool become(uid_t uid, gid_t gid) { return ::setgroups(0, nullptr) == 0 && ::setgid(gid) == 0 && ::setuid(uid) == 0; }

constexpr uid_t kOtherUid = 65534;  // nobody
constexpr gid_t kGroup = 4242;      // a group the segment is shared with

}  // namespace

TEST_CASE("another user can neither open, read through the CLI, nor remove a 0600 segment") {
  if (!root()) {
    MESSAGE("skipped: needs root to switch to another user in a child");
    return;
  }
  REQUIRE_MESSAGE(!cli().empty(), "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  test::TempSegment t("sec");
  auto seg = Segment::create(t.name(), {.size = 64 * 1024});
  seg.atomic<std::int64_t>("secret", 42);
  test::Child other([&] {
    if (!become(kOtherUid, kOtherUid)) return 2;
    try {
      Segment::remove(t.name());
      return 3;  // removed someone else's segment
    } catch (const shmstate::Error& e) {
      if (e.code() != ErrorCode::PermissionDenied) return 4;
    }
    try {
      Segment::open(t.name(), Segment::Access::ReadOnly);
      return 8;  // read access where the mode gives none
    } catch (const shmstate::Error& e) {
      if (e.code() != ErrorCode::PermissionDenied) return 9;
    }
    for (const char* cmd : {"get", "dump"}) {
      std::vector<std::string> args = {cmd, t.name()};
      if (std::string(cmd) == "get") args.push_back("secret");
      auto r = run_cli(args);
      if (r.signal != 0 || r.status == 0 || r.out.find("42") != std::string::npos) return 5;
      if (r.err.find("ermission") == std::string::npos) return 6;
    }
    auto r = run_cli({"rm", t.name()});
    if (r.status == 0) return 7;
    return 0;
  });
  CHECK(other.exit_code_within(30s) == 0);
  CHECK(Segment::exists(t.name()));
  CHECK(seg.open_atomic<std::int64_t>("secret").get() == 42);
}

TEST_CASE("a segment with a group mode is usable by that group and by nobody else") {
  if (!root()) {
    MESSAGE("skipped: needs root to switch to another user in a child");
    return;
  }
  test::TempSegment t("grp");
  auto seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0660});
  auto counter = seg.atomic<std::int64_t>("n", 0);
  REQUIRE(::chown(t.path().c_str(), static_cast<uid_t>(-1), kGroup) == 0);

  test::Child member([&] {
    if (!become(4243, kGroup)) return 2;
    try {
      Segment::open(t.name()).open_atomic<std::int64_t>("n").add_and_get(1);
      return 0;
    } catch (const shmstate::Error&) {
      return 3;
    }
  });
  CHECK(member.exit_code_within(10s) == 0);
  CHECK(counter.get() == 1);

  test::Child stranger([&] {
    if (!become(4244, 4244)) return 2;
    try {
      Segment::open(t.name());
      return 1;
    } catch (const shmstate::Error& e) {
      return e.code() == ErrorCode::PermissionDenied ? 0 : 3;
    }
  });
  CHECK(stranger.exit_code_within(10s) == 0);
  CHECK(counter.get() == 1);
}

namespace {

// The objects every read-only case inspects (created by fill_read_only).
void fill_read_only(Segment& seg) {
  seg.atomic<std::int64_t>("n", 42);
  seg.atomic<bool>("b", false);
  seg.atomic<double>("d", 1.5);
  seg.atom("a", boost::json::parse(R"({"k":[1,2]})"));
  seg.atomic_reference("r", "x");
  seg.fifo_lock("l", shmstate::LockModes::exclusive());
  seg.monitor("m", 4);
  seg.signal("s");
}

// True if f() throws Error(PermissionDenied) naming `object` and saying why.
template <class F>
bool denied(F&& f, const std::string& object) {
  try {
    f();
  } catch (const shmstate::Error& e) {
    std::string m = e.what();
    if (e.code() == ErrorCode::PermissionDenied && m.find("'" + object + "'") != std::string::npos &&
        m.find("read-only") != std::string::npos)
      return true;
    std::fprintf(stderr, "%s: wrong error: %s\n", object.c_str(), e.what());
    return false;
  }
  std::fprintf(stderr, "%s: a write through a read-only handle succeeded\n", object.c_str());
  return false;
}

// Through a read-only open of `name` (filled by fill_read_only): every read
// works, every write is PermissionDenied naming the object, waits poll.
// The mapping is PROT_READ: any store into it, eager or lazy, is a SIGSEGV
// that ends the calling process, so surviving this is the proof that the
// readers write nothing. Returns 0, or the number of the failed step.
int read_only_checks(const std::string& name, const std::string& snapshot_path) {
  auto ro = Segment::open(name, Segment::Access::ReadOnly);
  if (!ro.read_only()) return 10;
  if (!ro.info().problem.empty() || ro.objects().size() != 8) return 11;
  auto n = ro.open_atomic<std::int64_t>("n");
  auto b = ro.open_atomic<bool>("b");
  auto d = ro.open_atomic<double>("d");
  auto a = ro.open_atom("a");
  auto r = ro.open_atomic_reference("r");
  auto l = ro.open_fifo_lock("l");
  auto m = ro.open_monitor("m");
  auto s = ro.open_signal("s");
  if (n.get() != 42 || b.get() || d.get() != 1.5) return 12;
  if (*a.deref() != boost::json::parse(R"({"k":[1,2]})") || r.get() != "x") return 13;
  if (l.modes().size() != 1 || m.capacity() != 4 || s.is_set()) return 14;
  std::string text = shmstate::inspect::dump_text(ro);
  if (text.find("42") == std::string::npos) return 15;
  (void)shmstate::inspect::dump_json(ro);
  if (shmstate::inspect::get(ro, "a") != boost::json::parse(R"({"k":[1,2]})")) return 16;
  ro.snapshot(snapshot_path);
  // Waits cannot register as sleepers; they poll and end.
  if (n.wait_while_equal(42, 20ms) || a.wait_for_change(a.version(), 20ms) || s.wait_for(20ms)) return 17;
  a.add_watch("w", [](const shmstate::WatchEvent&) {});
  a.remove_watch("w");
  // Every write: a typed error naming the object, nothing written.
  bool ok = denied([&] { n.set(1); }, "n") && denied([&] { n.add_and_get(1); }, "n") &&
            denied([&] { n.compare_and_set(42, 1); }, "n") && denied([&] { n.get_and_set(1); }, "n") &&
            denied([&] { b.set(true); }, "b") && denied([&] { d.get_and_add(1.0); }, "d") &&
            denied([&] { a.swap([](const boost::json::value&) { return boost::json::value(1); }); }, "a") &&
            denied([&] { a.reset(1); }, "a") && denied([&] { a.compare_and_set(nullptr, 1); }, "a") &&
            denied([&] { r.set("y"); }, "r") && denied([&] { (void)l.acquire(); }, "l") &&
            denied([&] { (void)l.try_acquire(); }, "l") && denied([&] { (void)m.lock(); }, "m") &&
            denied([&] { m.notify_all(); }, "m") && denied([&] { s.go(); }, "s") &&
            denied([&] { ro.atomic<std::int64_t>("fresh", 1); }, "fresh") &&
            denied([&] { shmstate::inspect::set(ro, "n", 7); }, "n") &&
            denied([&] { shmstate::inspect::add(ro, "n", 7); }, "n");
  if (!ok) return 18;
  // A creating accessor of an existing object only opens it: no write.
  if (ro.atomic<std::int64_t>("n", 0).get() != 42) return 19;
  if (n.get() != 42 || r.get() != "x" || s.is_set()) return 20;
  return 0;
}

// Opens every object of `name` and reads it; writes to the atomics (lock
// free). Any
// shmstate::Error is an acceptable end; another exception or a signal is not.
// Returns 0 when every step ended in a result or an Error.
int read_and_write_all(const std::string& name) {
  try {
    auto seg = Segment::open(name);
    (void)seg.info();
    for (const auto& o : seg.objects()) {
      try {
        switch (o.kind) {  // test code: it exercises each kind's own API
          case shmstate::Kind::Bool: seg.open_atomic<bool>(o.name).set(true); break;
          case shmstate::Kind::Int64: seg.open_atomic<std::int64_t>(o.name).add_and_get(1); break;
          case shmstate::Kind::Double: seg.open_atomic<double>(o.name).get(); break;
          case shmstate::Kind::Atom: {
            // Reads only: a swap takes the atom's writer mutex, and a damaged
            // lock word naming a live process this one cannot inspect (pid 1
            // of a container, say) is waited for like a real hold (README,
            // trust model). damage_test covers writes over damaged buffers.
            (void)seg.open_atom(o.name).deref();
            break;
          }
          case shmstate::Kind::Reference: (void)seg.open_atomic_reference(o.name).get(); break;
          case shmstate::Kind::FifoLock: {
            // Opened (its table validated), not acquired: acquiring takes the
            // lock's state mutex (see the atom's case above).
            (void)seg.open_fifo_lock(o.name).modes();
            break;
          }
          case shmstate::Kind::Signal: {
            auto sig = seg.open_signal(o.name);
            (void)sig.is_set();
            (void)sig.wait_for(1ms);
            break;
          }
          default: break;
        }
      } catch (const shmstate::Error&) {
      }
    }
    return 0;
  } catch (const shmstate::Error&) {
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "non-shmstate exception: %s\n", e.what());
    return 4;
  }
}

std::string read_file(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

void write_over(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

}  // namespace

TEST_CASE("another user with read permission inspects a 0644 segment read-only; its writes are refused") {
  if (!root()) {
    MESSAGE("skipped: needs root to switch to another user in a child");
    return;
  }
  REQUIRE_MESSAGE(!cli().empty(), "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  test::TempSegment t("ro");
  auto seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0644});
  fill_read_only(seg);
  const std::string snap_lib = "/tmp/" + t.name() + ".lib.json", snap_cli = "/tmp/" + t.name() + ".cli.json";
  test::Child other([&] {
    if (!become(kOtherUid, kOtherUid)) return 2;
    try {
      Segment::open(t.name());  // read-write: the mode says no
      return 3;
    } catch (const shmstate::Error& e) {
      if (e.code() != ErrorCode::PermissionDenied) return 4;
    }
    if (int rc = read_only_checks(t.name(), snap_lib); rc != 0) return rc;
    auto ok = [&](std::vector<std::string> args, const std::string& want) {
      auto r = run_cli(args);
      if (r.status == 0 && r.signal == 0 && r.out.find(want) != std::string::npos) return true;
      std::fprintf(stderr, "%s %s: status %d signal %d\nout: %s\nerr: %s\n", args[0].c_str(), args.size() > 1 ? args[1].c_str() : "",
                   r.status, r.signal, r.out.c_str(), r.err.c_str());
      return false;
    };
    if (!ok({"list"}, t.name()) || !ok({"get", t.name(), "n"}, "42") || !ok({"get", t.name(), "a"}, "[1,2]") ||
        !ok({"dump", t.name()}, "42") || !ok({"dump", "--json", t.name()}, "\"n\"") ||
        !ok({"signal", t.name(), "s", "status"}, "") || !ok({"snapshot", t.name(), snap_cli}, ""))
      return 30;
    for (std::vector<std::string> args : {std::vector<std::string>{"set", t.name(), "n", "1"},
                                          {"add", t.name(), "n", "1"},
                                          {"new", t.name(), "int64", "fresh"},
                                          {"signal", t.name(), "s", "go"}}) {
      auto r = run_cli(args);
      if (r.signal != 0 || r.status == 0 || r.err.find("ermission") == std::string::npos) {
        std::fprintf(stderr, "%s: status %d signal %d err %s\n", args[0].c_str(), r.status, r.signal, r.err.c_str());
        return 31;
      }
    }
    return 0;
  });
  CHECK(other.exit_code_within(60s) == 0);
  CHECK(seg.open_atomic<std::int64_t>("n").get() == 42);
  CHECK(!seg.find("fresh"));
  CHECK(!seg.open_signal("s").is_set());
  // Both snapshots hold the segment's state.
  for (const auto& path : {snap_lib, snap_cli}) {
    struct stat st;
    CHECK_MESSAGE(::stat(path.c_str(), &st) == 0, path);
    ::unlink(path.c_str());
  }
}

TEST_CASE("a read-only open by the owner: reads work, writes are typed errors, waits see a writer's change") {
  test::TempSegment t("ro-own");
  auto seg = Segment::create(t.name(), {.size = 256 * 1024});
  fill_read_only(seg);
  const std::string snap = "/tmp/" + t.name() + ".json";
  // In a child: its PROT_READ mapping, and a SIGSEGV there, stay its own.
  test::Child reader([&] { return read_only_checks(t.name(), snap); });
  CHECK(reader.exit_code_within(60s) == 0);
  ::unlink(snap.c_str());
  CHECK(seg.open_atomic<std::int64_t>("n").get() == 42);

  // One process, both mappings: the read-only handle is its own view, and
  // a poll of it sees the read-write handle's write.
  auto ro = Segment::open(t.name(), Segment::Access::ReadOnly);
  CHECK(ro.read_only());
  CHECK(!Segment::open(t.name()).read_only());
  auto n_ro = ro.open_atomic<std::int64_t>("n");
  test::Child writer([&] {
    std::this_thread::sleep_for(50ms);
    Segment::open(t.name()).open_atomic<std::int64_t>("n").set(43);
    return 0;
  });
  CHECK(n_ro.wait_while_equal(42, 5s));
  CHECK(n_ro.get() == 43);
  CHECK(writer.exit_code_within(10s) == 0);
  CHECK_THROWS_WITH_AS(n_ro.set(1), doctest::Contains("read-only"), shmstate::Error);
  seg.open_atomic<std::int64_t>("n").set(44);  // the read-write handle still writes
  CHECK(n_ro.get() == 44);
}

TEST_CASE("a hostile scribbler: random damaged words never crash or hang the CLI or the library") {
  REQUIRE_MESSAGE(!cli().empty(), "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  test::TempSegment t("scribble");
  std::string pristine;
  std::uint64_t used = 0;
  struct Range {
    std::uint64_t offset, size;
  };
  std::vector<Range> states;  // each object's fixed shared state: most damage lands there
  {
    auto seg = Segment::create(t.name(), {.size = 256 * 1024, .max_objects = 16});
    seg.atomic<bool>("flag", true);
    seg.atomic<std::int64_t>("count", 7);
    seg.atomic<double>("ratio", 0.25);
    seg.atom("doc", boost::json::parse(R"({"a":[1,2,3],"b":"text","c":{"d":1.5}})"));
    seg.atom("big", boost::json::string(3000, 'x')).reset(boost::json::string(5000, 'y'));
    seg.atomic_reference("ref", boost::json::parse(R"([true,null])"));
    seg.fifo_lock("lock", shmstate::LockModes::read_write(), 8);
    seg.signal("stop");
    seg.signal("done").go();
    used = seg.info().used;
    for (const auto& o : seg.objects()) states.push_back({o.offset, o.size});
    pristine = read_file(t.path());
  }
  const char* seed_env = std::getenv("SHMSTATE_SCRIBBLE_SEED");
  std::uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  const int rounds = std::getenv("SHMSTATE_SCRIBBLE_ROUNDS") ? std::atoi(std::getenv("SHMSTATE_SCRIBBLE_ROUNDS")) : 60;
  INFO("seed " << seed << " (rerun with SHMSTATE_SCRIBBLE_SEED)");
  std::mt19937_64 rng(seed);
  const std::uint64_t kWords[] = {0, 1, ~0ull, 0x7fffffffffffffffull, 1ull << 50, 0xffffffffull, 4096, 0x8000000000000000ull};
  int refused = 0;  // rounds where dump said the segment is damaged
  for (int round = 0; round < rounds; ++round) {
    std::string bytes = pristine;
    std::string damage;
    int words = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < words; ++k) {
      std::uint64_t off = (rng() % (used / 8)) * 8;
      if (rng() % 2 == 0) {
        const auto& r = states[rng() % states.size()];
        off = (r.offset + rng() % r.size) / 8 * 8;
      }
      std::uint64_t word = rng() % 2 ? kWords[rng() % std::size(kWords)] : rng();
      if (rng() % 4 == 0) word = (word & 0xff) | (static_cast<std::uint64_t>(bytes[off]) & ~0xffull);  // one byte
      std::memcpy(bytes.data() + off, &word, 8);
      damage += " [" + std::to_string(off) + "]=" + std::to_string(word);
    }
    write_over(t.path(), bytes);
    CAPTURE(round);
    CAPTURE(damage);
    for (std::vector<std::string> args :
         {std::vector<std::string>{"dump", t.name()}, {"dump", "--json", t.name()}, {"list"}, {"get", t.name(), "doc"}}) {
      auto r = run_cli(args);
      CAPTURE(args[0]);
      CAPTURE(r.err);
      CHECK(r.signal == 0);
      CHECK(r.status >= 0);
      CHECK(r.status <= 3);  // 137 would be the timeout's kill: a hang
      if (args[0] == "dump" && args[1] == t.name() && r.status != 0) ++refused;
    }
    test::Child lib([&] { return read_and_write_all(t.name()); });
    CHECK(lib.exit_code_within(20s) == 0);
  }
  // The damage is real: some of it must be seen (else the scribbler writes
  // where nothing reads, and the test proves nothing).
  MESSAGE(refused << " of " << rounds << " damaged segments refused by dump");
  CHECK(refused > 0);
}
