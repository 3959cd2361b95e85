// Store across real processes: no lost update, and a writer killed at any step
// of a write leaves the old or the new file, never a mix, and no temp file
// that piles up.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/store.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "support/proc.hpp"
#include "support/temp_dir.hpp"

using shmstate::Store;
namespace json = boost::json;

namespace {

std::size_t temp_files(const test::TempDir& dir) {
  std::size_t n = 0;
  for (const auto& e : dir.entries())
    if (e.size() > 4 && e[0] == '.' && e.substr(e.size() - 4) == ".tmp") ++n;
  return n;
}

}  // namespace

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
  CHECK(temp_files(dir) == 0);
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
      CHECK(temp_files(dir) == (p.leaves_temp ? 1u : 0u));
      // The lock died with the child: another writer goes on, and its write
      // sweeps the dead writer's temp file.
      auto store = Store::open(path);
      store.update([](json::value& v) { v = "old"; });
      CHECK(temp_files(dir) == 0);
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
    CHECK(temp_files(dir) <= 1);  // at most the killed child's own, swept by the next write
    Store::open(path).commit();
    CHECK(temp_files(dir) == 0);
  }
}
