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
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/error.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>

#include "support/checks.hpp"
#include "support/proc.hpp"
#include "support/run.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Segment;

namespace {

const std::string& cli() {
  static const std::string path = [] {
    const char* p = std::getenv("SHMSTATE_CLI");
    return std::string(p ? p : "");
  }();
  return path;
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
