// Store across real processes: no lost update, and a writer killed at any step
// of a write leaves the old or the new file, never a mix, and no temp file
// that piles up.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/store.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "platform/durable_file.hpp"
#include "support/proc.hpp"
#include "support/temp_dir.hpp"

using shmstate::Store;
namespace json = boost::json;

TEST_CASE("4 processes x 200 update()s end at exactly 800") {
  test::TempDir dir("/dev/shm");  // tmpfs: 800 fsyncs cost nothing
  auto path = dir.file("count.json");
  std::vector<test::Child> children;
  for (int c = 0; c < 4; ++c)
    children.emplace_back([&] {
      auto store = Store::open(path, 0);
      for (int i = 0; i < 200; ++i) store.update([](json::value& v) { v = v.as_int64() + 1; });
      return 0;
    });
  for (auto& c : children) CHECK(c.exit_code_within(std::chrono::seconds(120)) == 0);
  CHECK(Store::open(path).value() == 800);
  CHECK(test::replace_temps(dir) == 0);
}

TEST_CASE("a commit removes dead writers' temp files only: a live writer's and foreign files stay") {
  test::TempDir dir;
  auto path = dir.file("s.json");
  test::SharedMemory mem;
  char* tags = mem.as<char>();  // [0, 128): the live writer's tag; [128, 256): the dead one's
  // A live writer: its temp file must survive any other writer's sweep.
  test::Child live([&] {
    std::strcpy(tags, shmstate::platform::writer_tag().c_str());
    for (;;) ::pause();
    return 0;
  });
  test::Child dead([&] {
    std::strcpy(tags + 128, shmstate::platform::writer_tag().c_str());
    return 0;
  });
  REQUIRE(dead.exit_code() == 0);  // reaped: dead for certain
  REQUIRE(test::eventually([&] { return tags[0] != '\0'; }));
  const std::string live_tag = tags, dead_tag = tags + 128;
  // The same pid and start time in another PID namespace: a pid means nothing there.
  const std::string other_ns = "1" + dead_tag;
  auto temp = [](const std::string& file, const std::string& tag) { return "." + file + "." + tag + ".tmp"; };
  for (const auto& name : {temp("s.json", live_tag), temp("s.json", dead_tag), temp("s.json", other_ns),
                           temp("s.json", "not-a-writer-tag"), temp("other.json", dead_tag)})
    test::write_file(dir.file(name), "partial");
  Store::open(path, 1).commit();
  std::vector<std::string> want = {temp("other.json", dead_tag), temp("s.json", other_ns),
                                   temp("s.json", live_tag), temp("s.json", "not-a-writer-tag"), "s.json",
                                   "s.json.lock"};
  std::sort(want.begin(), want.end());
  CHECK(dir.entries() == want);
}

#if SHMSTATE_TEST_HOOKS  // crash points need a build with -Dtest_hooks=true
TEST_CASE("a writer killed at each step of a write leaves the old or the new file, and its temp is swept") {
  test::TempDir dir;
  auto path = dir.file("s.json");
  Store::open(path, "old").commit();
  struct Point {
    const char* name;
    bool new_visible;  // the rename happened before the crash
    bool leaves_temp;
  };
  for (Point p : {Point{"file.replace.after_create", false, true}, Point{"file.replace.after_write", false, true},
                  Point{"file.replace.after_fsync", false, true}, Point{"file.replace.after_rename", true, false}}) {
    CAPTURE(p.name);
    for (bool update : {false, true}) {
      CAPTURE(update);
      Store::open(path).value();  // readable
      auto before = test::read_file(path);
      test::Child child([&] {
        auto store = Store::open(path);
        shmstate::testing::arm_crash_point(p.name);
        if (update) store.update([](json::value& v) { v = "new"; });
        else {
          store.value() = "new";
          store.commit();
        }
        return 0;
      });
      REQUIRE(child.exit_code() == shmstate::testing::kCrashExitCode);
      CHECK(test::read_file(path) == (p.new_visible ? std::optional<std::string>("\"new\"\n") : before));
      CHECK(test::replace_temps(dir) == (p.leaves_temp ? 1u : 0u));
      // The lock died with the child: another writer goes on, and its write
      // sweeps the dead writer's temp file.
      auto store = Store::open(path);
      store.update([](json::value& v) { v = "old"; });
      CHECK(test::replace_temps(dir) == 0);
    }
  }
}
#endif  // SHMSTATE_TEST_HOOKS

TEST_CASE("kill -9 at random instants during commits: the file is always one whole commit; temps do not pile up") {
  test::TempDir dir("/dev/shm");
  auto path = dir.file("s.json");
  Store::open(path, json::array{}).commit();
  std::mt19937 rng(7);
  for (int round = 0; round < 30; ++round) {
    test::Child child([&] {
      auto store = Store::open(path, json::array{});
      for (int i = 0;; ++i) {
        store.value() = json::array{};
        for (int k = 0; k < 200; ++k) store.value().as_array().push_back(i);  // ~1 KB, all elements equal
        store.commit();
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    child.kill(SIGKILL);
    child.wait();
    auto v = Store::open(path).value();  // parses: never a partial file
    const auto& a = v.as_array();
    bool whole = a.empty() || (a.size() == 200 && std::all_of(a.begin(), a.end(), [&](const json::value& e) {
                                 return e == a.front();
                               }));
    CHECK(whole);
    CHECK(test::replace_temps(dir) <= 1);  // at most the killed child's own, swept by the next write
    Store::open(path).commit();
    CHECK(test::replace_temps(dir) == 0);
  }
}
