// Store in one process: atomic_store's own suite translated
// (seeds/peer-test-suites.md, section 4), plus the contracts of store.hpp
// (exception writes nothing, mode and symlinks kept, clear errors, exact
// doubles). Several processes: store_multiprocess_test.cpp.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/store.hpp>

#include "support/checks.hpp"
#include "support/proc.hpp"
#include "support/temp_dir.hpp"

using shmstate::ErrorCode;
using shmstate::Store;
using shmstate::StoreOptions;
namespace json = boost::json;

namespace {

std::string file_of(const std::string& path) {
  auto s = test::read_file(path);
  REQUIRE(s.has_value());
  return *s;
}

bool exists(const std::string& path) { return test::read_file(path).has_value(); }

unsigned mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// A format that is not JSON: "v1|" + the value's compact JSON, reversed.
// load checks that it is given exactly the bytes dump wrote.
struct ReversedFormat final : shmstate::Format {
  mutable int loads = 0;
  json::value load(std::string_view bytes, const std::string& path) const override {
    ++loads;
    if (bytes.substr(0, 3) != "v1|") throw shmstate::Error(ErrorCode::Corrupt, "store '" + path + "': not v1");
    std::string s(bytes.substr(3));
    return json::parse(std::string(s.rbegin(), s.rend()));
  }
  std::string dump(const json::value& v) const override {
    std::string s = json::serialize(v);
    return "v1|" + std::string(s.rbegin(), s.rend());
  }
};

std::uint64_t bits_of(double d) {
  std::uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

}  // namespace

TEST_SUITE("store: atomic_store's suite") {
  TEST_CASE("key order is kept (test_order)") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto store = Store::open(path, json::object{});
    {
      auto tx = store.transaction();
      auto& o = store.value().as_object();
      o["b"] = 1337;
      o["a"] = 2;
      o["c"] = 42;
      o["zz"] = -1;
      o["fancy"] = 3;
    }
    CHECK(file_of(path) == "{\"b\":1337,\"a\":2,\"c\":42,\"zz\":-1,\"fancy\":3}\n");
    CHECK(Store::open(path).value() == store.value());
    CHECK(json::serialize(Store::open(path).value()) == "{\"b\":1337,\"a\":2,\"c\":42,\"zz\":-1,\"fancy\":3}");
  }

  TEST_CASE("no file until the scope ends; reopen and append (test_usage_ctx_mngr)") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    {
      auto store = Store::open(path, json::array{});
      CHECK_FALSE(exists(path));
      {
        auto tx = store.transaction();
        CHECK_FALSE(exists(path));
        CHECK(store.value() == json::array{});
        store.value().as_array().push_back("1234");
        CHECK_FALSE(exists(path));
      }
      CHECK(file_of(path) == "[\"1234\"]\n");
    }
    auto store = Store::open(path, json::array{});
    CHECK(store.value() == json::array{"1234"});
    {
      auto tx = store.transaction();
      store.value().as_array().push_back("5678");
      CHECK(file_of(path) == "[\"1234\"]\n");
    }
    CHECK(file_of(path) == "[\"1234\",\"5678\"]\n");
  }

  TEST_CASE("manual commit (test_usage_manual_control)") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto store = Store::open(path, json::object{});
    store.value().as_object()["state"] = "running";
    CHECK_FALSE(exists(path));
    store.commit();
    CHECK(file_of(path) == "{\"state\":\"running\"}\n");
    store.value().as_object()["state"] = "done";
    CHECK(file_of(path) == "{\"state\":\"running\"}\n");
    store.commit();
    CHECK(file_of(path) == "{\"state\":\"done\"}\n");
  }

  TEST_CASE("compact output by default, indented with pretty_json_format (test_*_format)") {
    test::TempDir dir;
    json::value v = {{"a", 2}, {"b", 1337}, {"list", {1, "x", json::object{}, json::array{}}}};
    auto compact = Store::open(dir.file("c.json"), v);
    compact.commit();
    CHECK(file_of(dir.file("c.json")) == "{\"a\":2,\"b\":1337,\"list\":[1,\"x\",{},[]]}\n");

    StoreOptions o;
    o.format = shmstate::pretty_json_format(1);
    auto pretty = Store::open(dir.file("p.json"), v, o);
    pretty.commit();
    CHECK(file_of(dir.file("p.json")) ==
          "{\n \"a\": 2,\n \"b\": 1337,\n \"list\": [\n  1,\n  \"x\",\n  {},\n  []\n ]\n}\n");
    CHECK(Store::open(dir.file("p.json"), nullptr, o).value() == v);
    CHECK(test::error_of([] { shmstate::pretty_json_format(0); }).code() == ErrorCode::InvalidArgument);
  }

  TEST_CASE("a custom Format: the file holds exactly what dump returned; load gets those bytes (test_custom_*)") {
    test::TempDir dir;
    auto path = dir.file("s.rev");
    auto format = std::make_shared<ReversedFormat>();
    StoreOptions o;
    o.format = format;
    auto store = Store::open(path, json::array{"spanish inquisition"}, o);
    CHECK(format->loads == 0);  // no file: nothing loaded
    store.commit();
    CHECK(file_of(path) == "v1|]\"noitisiuqni hsinaps\"[");
    auto again = Store::open(path, nullptr, o);
    CHECK(format->loads == 1);
    CHECK(again.value() == json::array{"spanish inquisition"});
    // The custom format's error is what open throws.
    test::write_file(path, "v2|[]");
    CHECK(test::error_of([&] { Store::open(path, nullptr, o); }).code() == ErrorCode::Corrupt);
  }

  TEST_CASE("reentrancy, default: every scope exit commits the value current then (test_default_behavior)") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto store = Store::open(path, json::array{});
    store.value() = "before";
    store.commit();
    {
      auto outer = store.transaction();
      store.value() = "outer";
      CHECK(file_of(path) == "\"before\"\n");
      {
        auto inner = store.transaction();
        store.value() = "inner";
        CHECK(file_of(path) == "\"before\"\n");
      }
      CHECK(file_of(path) == "\"inner\"\n");
      auto other = Store::open(path, json::array{});
      other.value() = "invalid";
      other.commit();
      CHECK(file_of(path) == "\"invalid\"\n");
    }
    // The outer exit commits its own value over the other store's write.
    CHECK(file_of(path) == "\"inner\"\n");
  }

  TEST_CASE("reentrancy, ignore_inner_exits: only the outermost exit commits (test_ignore_inner_exits)") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    StoreOptions o;
    o.ignore_inner_exits = true;
    auto store = Store::open(path, json::array{}, o);
    store.value() = "before";
    store.commit();
    {
      auto outer = store.transaction();
      store.value() = "outer";
      {
        auto inner = store.transaction();
        store.value() = "inner";
        CHECK(file_of(path) == "\"before\"\n");
      }
      CHECK(file_of(path) == "\"before\"\n");
    }
    // The value current at the outermost exit (the seed's README says "outer": wrong).
    CHECK(file_of(path) == "\"inner\"\n");
  }

  TEST_CASE("empty and corrupt files are refused at open, naming path and position; open never writes") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    for (std::string bad : {"", "  \n", "{\"a\":1,", "[1,\n 2 x]", "{\"a\" 1}", "[1] [2]"}) {
      CAPTURE(bad);
      test::write_file(path, bad);
      struct stat before;
      REQUIRE(::stat(path.c_str(), &before) == 0);
      auto e = test::error_of([&] { Store::open(path, json::array{}); });
      CHECK(e.code() == ErrorCode::Corrupt);
      std::string m = e.what();
      CHECK(m.find("store '" + path + "'") != std::string::npos);
      if (bad.find_first_not_of(" \n") != std::string::npos) CHECK(m.find("at byte") != std::string::npos);
      CHECK(file_of(path) == bad);
      struct stat after;
      REQUIRE(::stat(path.c_str(), &after) == 0);
      CHECK(after.st_ino == before.st_ino);
      CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    }
    test::write_file(path, "[1,\n 2 x]");
    std::string m = test::error_of([&] { Store::open(path); }).what();
    CHECK(m.find("at byte 7 (line 2, column 4)") != std::string::npos);
    CHECK(dir.entries() == std::vector<std::string>{"s.json"});  // no lock file, no temp file
  }
}

TEST_SUITE("store: contracts") {
  TEST_CASE("the default value is copied; a missing file is not created by open") {
    test::TempDir dir;
    json::value def = json::array{1};
    auto store = Store::open(dir.file("s.json"), def);
    store.value().as_array().push_back(2);
    CHECK(def == json::array{1});
    CHECK(Store::open(dir.file("s.json"), def).value() == json::array{1});
    CHECK(dir.entries().empty());
  }

  TEST_CASE("a scope that ends by an exception writes nothing") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto store = Store::open(path, json::array{});
    try {
      auto tx = store.transaction();
      store.value().as_array().push_back("x");
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
    }
    CHECK_FALSE(exists(path));
    store.value() = json::array{"kept"};
    store.commit();
    try {
      auto tx = store.transaction();
      store.value().as_array().push_back("half");
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
    }
    CHECK(file_of(path) == "[\"kept\"]\n");
    // No rollback in memory: an enclosing scope that ends normally commits it.
    {
      auto outer = store.transaction();
      try {
        auto inner = store.transaction();
        store.value().as_array().push_back("inner");
        throw std::runtime_error("boom");
      } catch (const std::runtime_error&) {
      }
      CHECK(file_of(path) == "[\"kept\"]\n");
    }
    CHECK(file_of(path) == "[\"kept\",\"half\",\"inner\"]\n");
  }

  TEST_CASE("a scope's commit error is thrown by its end") {
    test::TempDir dir;
    auto store = Store::open(dir.file("missing/s.json"), 1);
    auto e = test::error_of([&] { auto tx = store.transaction(); });
    CHECK(e.code() == ErrorCode::NotFound);
    CHECK(std::string(e.what()).find("directory '" + dir.file("missing") + "' does not exist") != std::string::npos);
  }

  TEST_CASE("update: fn changes the file's current value; an exception from fn writes nothing") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto a = Store::open(path, 0);
    auto b = Store::open(path, 0);
    CHECK(a.update([](json::value& v) { v = v.as_int64() + 1; }) == 1);
    CHECK(b.update([](json::value& v) { v = v.as_int64() + 1; }) == 2);  // b read a's write
    CHECK(b.value() == 2);
    b.value() = 100;  // not committed: update starts from the file
    CHECK(b.update([](json::value& v) { v = v.as_int64() + 1; }) == 3);
    CHECK_THROWS_AS(a.update([](json::value& v) {
      v = 99;
      throw std::runtime_error("no");
    }),
                    std::runtime_error);
    CHECK(file_of(path) == "3\n");
    CHECK(a.value() == 1);  // as before the failed update
  }

  TEST_CASE("an existing file keeps its mode; a new one gets 0644 minus the umask, or options.mode") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    mode_t old_umask = ::umask(022);
    Store::open(path, 1).commit();
    CHECK(mode_of(path) == 0644);
    ::chmod(path.c_str(), 0640);
    Store::open(path, 1).commit();
    CHECK(mode_of(path) == 0640);
    ::umask(077);
    Store::open(dir.file("u.json"), 1).commit();
    CHECK(mode_of(dir.file("u.json")) == 0600);
    StoreOptions o;
    o.mode = 0664;
    Store::open(dir.file("m.json"), 1, o).commit();
    CHECK(mode_of(dir.file("m.json")) == 0664);  // exact, whatever the umask
    Store::open(path, 2, o).commit();
    CHECK(mode_of(path) == 0640);  // options.mode is for new files only
    ::umask(old_umask);
  }

  TEST_CASE("a symlink keeps pointing at its target, which is updated") {
    test::TempDir dir;
    auto target = dir.file("real.json");
    auto link = dir.file("link.json");
    REQUIRE(::symlink("real.json", link.c_str()) == 0);  // dangling at first: the write creates the target
    auto store = Store::open(link, json::array{});
    store.value().as_array().push_back(1);
    store.commit();
    struct stat st;
    REQUIRE(::lstat(link.c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(file_of(target) == "[1]\n");
    ::chmod(target.c_str(), 0600);
    store.value().as_array().push_back(2);
    store.commit();
    REQUIRE(::lstat(link.c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(file_of(target) == "[1,2]\n");
    CHECK(mode_of(target) == 0600);
    CHECK(Store::open(link).value() == json::array{1, 2});
    // The lock is the target's, shared by every path to it.
    CHECK(exists(target + ".lock"));
    CHECK_FALSE(exists(link + ".lock"));
  }

  TEST_CASE("a missing directory, a read-only one and a directory path are clear errors") {
    test::TempDir dir;
    auto e = test::error_of([&] { Store::open(dir.file("no/such/s.json"), 1).commit(); });
    CHECK(e.code() == ErrorCode::NotFound);
    CHECK(std::string(e.what()).find("does not exist") != std::string::npos);

    CHECK(test::error_of([&] { Store::open(dir.path()); }).code() == ErrorCode::InvalidArgument);

    // Read-only: root ignores permission bits, so the child drops to nobody.
    ::chmod(dir.path().c_str(), 0555);
    test::Child child([&] {
      if (::geteuid() == 0 && ::setresuid(65534, 65534, 65534) != 0) return 90;
      auto store = Store::open(dir.file("s.json"), 1);
      try {
        store.commit();
      } catch (const shmstate::Error& err) {
        bool named = std::string(err.what()).find(dir.path()) != std::string::npos;
        return err.code() == ErrorCode::PermissionDenied && named ? 0 : 2;
      }
      return 1;
    });
    CHECK(child.exit_code() == 0);
    ::chmod(dir.path().c_str(), 0700);
    CHECK(dir.entries().empty());
  }

  TEST_CASE("a failed write removes its temp file and leaves the old file untouched") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    Store::open(path, "old").commit();
    // RLIMIT_FSIZE makes write() fail with EFBIG midway through the temp file.
    test::Child child([&] {
      ::signal(SIGXFSZ, SIG_IGN);
      rlimit lim{4096, 4096};
      if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 90;
      auto store = Store::open(path);
      store.value() = std::string(100000, 'x');
      try {
        store.commit();
      } catch (const shmstate::Error& e) {
        // A file that cannot grow is Io (never SegmentFull), naming the store.
        if (e.code() != ErrorCode::Io) return 2;
        if (!test::contains(e.what(), "store '" + path + "'")) return 3;
        return 0;
      }
      return 1;
    });
    CHECK(child.exit_code() == 0);
    CHECK(file_of(path) == "\"old\"\n");
    CHECK(test::replace_temps(dir) == 0);
  }

  TEST_CASE("a full disk (ENOSPC) is Io naming the path; the old file stays, the temp file goes") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    // The check runs in the child: the small file system exists only there.
    test::Child child([&] {
      if (!test::mount_small_tmpfs(dir.path(), 64 << 10)) return test::kSkipped;
      auto store = Store::open(path, "old");
      store.commit();
      store.value() = std::string(200000, 'x');  // three times the file system
      try {
        store.commit();
        return 1;
      } catch (const shmstate::Error& e) {
        std::fprintf(stderr, "commit on a full disk: %s\n", e.what());
        if (e.code() != ErrorCode::Io) return 2;
        if (!test::contains(e.what(), "store '" + path + "'")) return 3;
        if (!test::contains(e.what(), std::strerror(ENOSPC))) return 4;
      }
      if (test::read_file(path) != "\"old\"\n") return 5;
      if (test::replace_temps(dir) != 0) return 6;
      // The space the temp file took is free again: a commit that fits works.
      store.value() = "new";
      store.commit();
      return test::read_file(path) == "\"new\"\n" ? 0 : 7;
    });
    int rc = child.exit_code();
    if (rc == test::kSkipped) {
      MESSAGE("skipped: this process may not mount a tmpfs (no root, no user namespaces)");
      return;
    }
    CHECK(rc == 0);
    CHECK(dir.entries().empty());  // the mount and what was written there stayed in the child
  }

  TEST_CASE("values JSON cannot hold are refused and nothing is written") {
    test::TempDir dir;
    auto path = dir.file("s.json");
    auto store = Store::open(path, 1);
    store.commit();
    store.value() = std::numeric_limits<double>::quiet_NaN();
    CHECK(test::error_of([&] { store.commit(); }).code() == ErrorCode::InvalidArgument);
    store.value() = std::string("\xff");
    CHECK(test::error_of([&] { store.commit(); }).code() == ErrorCode::InvalidArgument);
    CHECK(file_of(path) == "1\n");
    CHECK(test::replace_temps(dir) == 0);
  }

  TEST_CASE("doubles round-trip through the file bit for bit") {
    test::TempDir dir;
    std::vector<double> ds = {0.0, -0.0, 0.1, 5e-324, -5e-324, 2.2250738585072009e-308, DBL_MIN, DBL_MAX, -DBL_MAX,
                              1e300, 0.9809778140020573, 9007199254740993.0, 18446744073709551616.0, 1.0 / 3};
    std::mt19937_64 rng(12345);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (int i = 0; i < 20000; ++i) ds.push_back(unit(rng));
    for (int i = 0; i < 2000; ++i) {
      std::uint64_t b = rng();
      double d;
      std::memcpy(&d, &b, sizeof d);
      if (std::isfinite(d)) ds.push_back(d);
    }
    json::array arr;
    for (double d : ds) arr.push_back(d);
    for (bool pretty : {false, true}) {
      CAPTURE(pretty);
      StoreOptions o;
      if (pretty) o.format = shmstate::pretty_json_format();
      auto path = dir.file(pretty ? "p.json" : "c.json");
      Store::open(path, arr, o).commit();
      auto back = Store::open(path, nullptr, o).value().as_array();
      REQUIRE(back.size() == ds.size());
      std::size_t differ = 0;
      for (std::size_t i = 0; i < ds.size(); ++i)
        if (!back[i].is_double() || bits_of(back[i].get_double()) != bits_of(ds[i])) ++differ;
      CHECK(differ == 0);
    }
  }
}
