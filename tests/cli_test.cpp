// The shmstate CLI, run as a real process (path in $SHMSTATE_CLI): every
// command and its --help, exit statuses, JSON in and out, damaged segments and
// foreign files in /dev/shm.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#include <shmstate/version.hpp>

#include "segment/layout.hpp"
#include "support/cli.hpp"
#include "support/proc.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

namespace json = boost::json;

namespace {

using test::cli_path;
using test::describe;
using test::shm;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The process exited (no signal) with `want`. Errors (status != 0) must say
// something on stderr, prefixed "shmstate: " or a usage, and nothing on stdout.
#define CHECK_EXIT(r, want)                                                           \
  do {                                                                                \
    const auto& r_ = (r);                                                             \
    CHECK_MESSAGE(r_.exited(), describe(r_));                                         \
    CHECK_MESSAGE(r_.status == (want), describe(r_));                                 \
    if ((want) != 0) {                                                                \
      CHECK_MESSAGE(r_.out.empty(), describe(r_));                                    \
      CHECK_MESSAGE(r_.err.rfind("shmstate: ", 0) == 0, describe(r_));                \
    }                                                                                 \
  } while (0)

// stdout of a value-printing command: exactly one line.
std::string line_of(const test::RunResult& r) {
  REQUIRE_MESSAGE(r.status == 0, describe(r));
  REQUIRE_MESSAGE(!r.out.empty(), describe(r));
  REQUIRE_MESSAGE(r.out.back() == '\n', describe(r));
  std::string s = r.out.substr(0, r.out.size() - 1);
  REQUIRE_MESSAGE(s.find('\n') == std::string::npos, describe(r));
  return s;
}

json::value parse(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  REQUIRE_MESSAGE(!ec, "not JSON: " << text);
  return v;
}

std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }

// Overwrites bytes of /dev/shm/<name> at `offset`, as a misbehaving program might.
void scribble(const std::string& name, std::uint64_t offset, const std::vector<unsigned char>& bytes) {
  int fd = ::open(shm_path(name).c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
  ::close(fd);
  REQUIRE(n == static_cast<ssize_t>(bytes.size()));
}

// A file in /dev/shm that is not ours, removed on scope exit.
struct ForeignFile {
  std::string name;
  ForeignFile(const std::string& tag, const std::string& contents)
      : name("shmstate-test-foreign-" + tag + "-" + std::to_string(::getpid())) {
    int fd = ::open(shm_path(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
    ::close(fd);
  }
  ~ForeignFile() { ::unlink(shm_path(name).c_str()); }
};

const std::vector<std::string> kCommands = {"list", "dump", "create", "rm",    "new",
                                           "get",  "set",  "add",    "store", "signal", "lock"};

std::vector<std::string> json_keys(const json::object& o) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : o) keys.emplace_back(k);
  return keys;
}

void check_keys(const json::value& v, const std::vector<std::string>& keys) {
  REQUIRE(v.is_object());
  CHECK(json_keys(v.get_object()) == keys);
}

const std::vector<std::string> kSegmentKeys = {"name",         "layout_version", "size",    "used",    "free",
                                               "max_objects",  "object_count",   "mode",    "created", "creator",
                                               "problem"};

}  // namespace

TEST_SUITE("cli") {

TEST_CASE("top level: no arguments, --help, --version, unknown command") {
  auto r = shm({});
  CHECK_MESSAGE(r.status == 2, describe(r));
  CHECK(r.out.empty());
  CHECK(r.err.rfind("usage: shmstate COMMAND", 0) == 0);
  CHECK(contains(r.err, "exit status"));

  for (std::string help : {"--help", "-h"}) {
    CAPTURE(help);
    r = shm({help});
    CHECK_EXIT(r, 0);
    CHECK(r.err.empty());
    CHECK(r.out.rfind("usage: shmstate COMMAND", 0) == 0);
    for (const auto& c : kCommands) CHECK_MESSAGE(contains(r.out, "\n  " + c + " "), c);
    CHECK(contains(r.out, "exit status"));
    for (std::string status : {"0  success", "1  ", "2  usage", "3  not found"}) CHECK(contains(r.out, status));
  }

  for (std::string version : {"--version", "-V"}) {
    CAPTURE(version);
    r = shm({version});
    CHECK_EXIT(r, 0);
    CHECK(r.out == "shmstate " SHMSTATE_VERSION_STRING "\n");
  }

  r = shm({"frobnicate"});
  CHECK_EXIT(r, 2);
  CHECK(contains(r.err, "unknown command 'frobnicate'"));
}

TEST_CASE("every command has --help and -h on stdout, exit 0") {
  for (const auto& c : kCommands) {
    for (std::string help : {"--help", "-h"}) {
      CAPTURE(c);
      CAPTURE(help);
      auto r = shm({c, help});  // no other arguments needed
      CHECK_EXIT(r, 0);
      CHECK(r.err.empty());
      CHECK(r.out.rfind("usage: shmstate " + c + " ", 0) == 0);
      CHECK(contains(r.out, "exit status"));
      CHECK(contains(r.out, "3  not found"));
    }
  }
  auto r = shm({"new", "--help"});
  CHECK(contains(r.out, "KIND is one of: bool, int64, double"));  // later kinds follow
  r = shm({"create", "--help"});
  for (std::string opt : {"--size", "--mode", "--max-objects", "K, M or G"}) CHECK(contains(r.out, opt));
}

TEST_CASE("usage errors exit 2 with a message on stderr") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "int64", "n"}).status == 0);

  const std::vector<std::vector<std::string>> bad = {
      {"list", "extra"},
      {"list", "--bogus"},
      {"dump"},
      {"dump", s, s},
      {"dump", s, "--json=yes"},
      {"create"},
      {"create", s, "--size"},
      {"create", s, "--size", "12Q"},
      {"create", s, "--size", "-1"},
      {"create", s, "--size", "99999999999999999999999"},
      {"create", s, "--size", "20000000000000G"},
      {"create", s, "--mode", "0999"},
      {"create", s, "--max-objects", "ten"},
      {"rm"},
      {"new", s, "int64"},
      {"new", s, "int64", "m", "--init"},
      {"get", s},
      {"set", s, "n"},
      {"set", s, "n", "1", "2"},
      {"add", s, "n"},
      {"add", s, "n", "1", "--json"},
  };
  for (const auto& args : bad) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    CAPTURE(joined);
    auto r = shm(args);
    CHECK_EXIT(r, 2);
    CHECK(contains(r.err, "usage: shmstate " + args[0]));
  }

  auto r = shm({"new", s, "widget", "w"});
  CHECK_EXIT(r, 2);
  CHECK(contains(r.err, "unknown kind 'widget'"));
  CHECK(contains(r.err, "bool, int64, double"));

  // Nothing of the above created anything.
  CHECK(shmstate::Segment::open(s).objects().size() == 1);
}

TEST_CASE("create, list, dump, rm") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();

  auto r = shm({"create", s, "--size", "64K", "--max-objects", "16"});
  CHECK_EXIT(r, 0);
  CHECK(r.out.empty());
  CHECK(shmstate::Segment::exists(s));

  r = shm({"create", s});
  CHECK_EXIT(r, 1);
  CHECK(contains(r.err, "segment '" + s + "'"));

  REQUIRE(shm({"new", s, "int64", "hits", "--init", "7"}).status == 0);

  SUBCASE("list (text) shows it") {
    r = shm({"list"});
    CHECK_EXIT(r, 0);
    CHECK(r.out.rfind("SEGMENT", 0) == 0);
    CHECK(contains(r.out, s));
  }

  SUBCASE("list --json: one array, documented keys") {
    r = shm({"list", "--json"});
    CHECK_EXIT(r, 0);
    auto doc = parse(r.out);
    REQUIRE(doc.is_array());
    const json::object* mine = nullptr;
    for (const auto& e : doc.get_array()) {
      check_keys(e, kSegmentKeys);
      if (e.at("name") == json::value(s)) mine = &e.get_object();
    }
    REQUIRE(mine != nullptr);
    CHECK(mine->at("layout_version") == shmstate::kLayoutVersion);
    CHECK(mine->at("size") == 65536);
    CHECK(mine->at("max_objects") == 16);
    CHECK(mine->at("object_count") == 1);
    CHECK(mine->at("used").to_number<std::uint64_t>() + mine->at("free").to_number<std::uint64_t>() == 65536);
    CHECK(mine->at("mode") == "0600");
    CHECK(mine->at("created").is_string());
    CHECK(mine->at("problem").is_null());
    check_keys(mine->at("creator"), {"pid", "start_time", "state", "same_pid_namespace"});
    CHECK(mine->at("creator").at("state") == "dead");  // the CLI process that created it has exited
  }

  SUBCASE("dump (text)") {
    r = shm({"dump", s});
    CHECK_EXIT(r, 0);
    CHECK(contains(r.out, "segment " + s));
    CHECK(contains(r.out, "hits"));
    CHECK(contains(r.out, "int64"));
  }

  SUBCASE("dump --json: documented keys, objects with values") {
    r = shm({"dump", s, "--json"});
    CHECK_EXIT(r, 0);
    auto doc = parse(r.out);
    check_keys(doc, {"segment", "allocator", "objects"});
    check_keys(doc.at("segment"), kSegmentKeys);
    check_keys(doc.at("allocator"), {"heap_begin", "heap_top", "heap_end"});
    CHECK(doc.at("allocator").at("heap_end") == 65536);
    const auto& objects = doc.at("objects").as_array();
    REQUIRE(objects.size() == 1);
    check_keys(objects[0], {"name", "kind", "offset", "size", "value"});
    CHECK(objects[0].at("name") == "hits");
    CHECK(objects[0].at("kind") == "int64");
    CHECK(objects[0].at("value") == 7);
    // Options may come before the segment too.
    CHECK(shm({"dump", "--json", s}).out == r.out);
  }

  SUBCASE("rm, then everything is not found") {
    r = shm({"rm", s});
    CHECK_EXIT(r, 0);
    CHECK(r.out.empty());
    CHECK_FALSE(shmstate::Segment::exists(s));
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"rm", s}, {"dump", s}, {"get", s, "hits"}, {"set", s, "hits", "1"}, {"add", s, "hits", "1"},
             {"new", s, "int64", "x"}}) {
      CAPTURE(args[0]);
      r = shm(args);
      CHECK_EXIT(r, 3);
      CHECK(contains(r.err, "segment '" + s + "'"));
    }
  }
}

TEST_CASE("create --size suffixes and bounds") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();
  auto size_of = [&] {
    struct stat st {};
    REQUIRE(::stat(shm_path(s).c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_size);
  };
  CHECK_EXIT(shm({"create", s, "--size", "48K"}), 0);
  CHECK(size_of() == 48 * 1024);
  REQUIRE(shmstate::Segment::remove(s));
  CHECK_EXIT(shm({"create", s, "--size=2M"}), 0);
  CHECK(size_of() == 2 * 1024 * 1024);
  REQUIRE(shmstate::Segment::remove(s));
  CHECK_EXIT(shm({"create", s, "--size", "53248"}), 0);
  CHECK(size_of() == 53248);
  REQUIRE(shmstate::Segment::remove(s));

  // G multiplies by 2^30: 2000G is over the library's 1 TiB limit (a bad
  // option value: a usage error, exit 2, before anything is allocated).
  auto r = shm({"create", s, "--size", "2000G"});
  CHECK_EXIT(r, 2);
  CHECK(contains(r.err, "1 TiB"));
  r = shm({"create", s, "--size", "100"});
  CHECK_EXIT(r, 2);
  CHECK(contains(r.err, "too small"));
  CHECK_FALSE(shmstate::Segment::exists(s));
}

TEST_CASE("create --mode is applied exactly, whatever the umask") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();
  auto mode_of = [&] {
    struct stat st {};
    REQUIRE(::stat(shm_path(s).c_str(), &st) == 0);
    return st.st_mode & 07777;
  };
  mode_t old = ::umask(077);  // inherited by the CLI process; would strip group bits
  auto r = shm({"create", s, "--mode", "0640"});
  ::umask(old);
  CHECK_EXIT(r, 0);
  CHECK(mode_of() == 0640);
  r = shm({"dump", s, "--json"});
  CHECK(parse(r.out).at("segment").at("mode") == "0640");
  REQUIRE(shmstate::Segment::remove(s));

  old = ::umask(0);
  r = shm({"create", s});
  ::umask(old);
  CHECK_EXIT(r, 0);
  CHECK(mode_of() == 0600);  // the default
  REQUIRE(shmstate::Segment::remove(s));

  r = shm({"create", s, "--mode", "0400"});
  CHECK_EXIT(r, 2);
  CHECK(contains(r.err, "0600"));
}

TEST_CASE("new, get, set, add: JSON in and out") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);

  SUBCASE("int64") {
    CHECK_EXIT(shm({"new", s, "int64", "hits", "--init", "41"}), 0);
    CHECK(line_of(shm({"get", s, "hits"})) == "41");
    CHECK(line_of(shm({"add", s, "hits", "1"})) == "42");
    CHECK(line_of(shm({"add", s, "hits", "-50"})) == "-8");
    CHECK(line_of(shm({"get", s, "hits"})) == "-8");
    CHECK(shmstate::Segment::open(s).open_atomic<std::int64_t>("hits").get() == -8);

    // 64 bits, exactly, and wrapping like Java.
    CHECK_EXIT(shm({"set", s, "hits", "9223372036854775807"}), 0);
    CHECK(line_of(shm({"get", s, "hits"})) == "9223372036854775807");
    CHECK(line_of(shm({"add", s, "hits", "1"})) == "-9223372036854775808");
    CHECK_EXIT(shm({"set", s, "hits", "--", "-3"}), 0);
    CHECK(line_of(shm({"get", s, "hits"})) == "-3");
  }

  SUBCASE("double") {
    CHECK_EXIT(shm({"new", s, "double", "load"}), 0);
    CHECK(line_of(shm({"get", s, "load"})) == "0.0");
    CHECK(line_of(shm({"add", s, "load", "0.1"})) == "0.1");
    auto sum = parse(line_of(shm({"add", s, "load", "0.2"})));
    REQUIRE(sum.is_double());
    CHECK(sum.get_double() == 0.1 + 0.2);  // exact, not float
    CHECK_EXIT(shm({"set", s, "load", "3"}), 0);  // an integer is a number
    CHECK(line_of(shm({"get", s, "load"})) == "3.0");
    CHECK_EXIT(shm({"set", s, "load", "1e300"}), 0);
    CHECK(parse(line_of(shm({"get", s, "load"}))).get_double() == 1e300);
    CHECK(shmstate::Segment::open(s).open_atomic<double>("load").get() == 1e300);
  }

  SUBCASE("bool") {
    CHECK_EXIT(shm({"new", s, "bool", "ready"}), 0);
    CHECK(line_of(shm({"get", s, "ready"})) == "false");
    auto r = shm({"set", s, "ready", "true"});
    CHECK_EXIT(r, 0);
    CHECK(r.out.empty());
    CHECK(line_of(shm({"get", s, "ready"})) == "true");
    CHECK(shmstate::Segment::open(s).open_atomic<bool>("ready").get());
    r = shm({"add", s, "ready", "1"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "object 'ready'"));
  }

  SUBCASE("every kind that `new --help` offers can be created and read") {
    std::string help = shm({"new", "--help"}).out;
    auto at = help.find("KIND is one of: ");
    REQUIRE(at != std::string::npos);
    std::string list = help.substr(at + 16, help.find('.', at) - at - 16);
    int kinds = 0;
    for (std::size_t pos = 0; pos <= list.size();) {
      auto comma = list.find(", ", pos);
      std::string kind = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      CAPTURE(kind);
      CHECK_EXIT(shm({"new", s, kind, "k_" + kind}), 0);
      auto found = shmstate::Segment::open(s).find("k_" + kind);
      REQUIRE(found);
      CHECK(shmstate::kind_name(found->kind) == kind);
      CHECK_EXIT(shm({"get", s, "k_" + kind}), 0);
      ++kinds;
      if (comma == std::string::npos) break;
      pos = comma + 2;
    }
    CHECK(kinds >= 3);
  }

  SUBCASE("not found and already exists") {
    REQUIRE(shm({"new", s, "int64", "hits"}).status == 0);
    auto r = shm({"get", s, "nope"});
    CHECK_EXIT(r, 3);
    CHECK(contains(r.err, "segment '" + s + "', object 'nope'"));
    CHECK_EXIT(shm({"set", s, "nope", "1"}), 3);
    CHECK_EXIT(shm({"add", s, "nope", "1"}), 3);
    r = shm({"new", s, "double", "hits"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "object 'hits'"));
    CHECK(contains(r.err, "already exists"));
    r = shm({"new", s, "int64", "bad name"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "invalid object name"));
    r = shm({"get", "bad/segment", "x"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "invalid segment name"));
  }
}

TEST_CASE("wrong JSON type or invalid JSON: exit 1, value unchanged") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "int64", "n", "--init", "5"}).status == 0);
  REQUIRE(shm({"new", s, "double", "d", "--init", "2.5"}).status == 0);
  REQUIRE(shm({"new", s, "bool", "b", "--init", "true"}).status == 0);

  struct Case {
    std::vector<std::string> args;
    std::string expect_in_err;
  };
  const std::vector<Case> cases = {
      {{"set", s, "n", "\"x\""}, "int64"},
      {{"set", s, "n", "1.5"}, "int64"},
      {{"set", s, "n", "true"}, "int64"},
      {{"set", s, "n", "18446744073709551615"}, "int64"},
      {{"set", s, "n", "{"}, "invalid JSON"},
      {{"set", s, "n", "12abc"}, "invalid JSON"},
      {{"set", s, "n", ""}, "invalid JSON"},
      {{"add", s, "n", "0.5"}, "int64"},
      {{"add", s, "n", "\"1\""}, "int64"},
      {{"add", s, "n", "abc"}, "invalid JSON"},
      {{"set", s, "d", "\"x\""}, "double"},
      {{"set", s, "d", "null"}, "double"},
      {{"set", s, "d", "[1]"}, "double"},
      {{"add", s, "d", "true"}, "double"},
      {{"set", s, "b", "1"}, "bool"},
      {{"set", s, "b", "\"true\""}, "bool"},
      {{"set", s, "b", "tru"}, "invalid JSON"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args[0]);
    CAPTURE(c.args[2]);
    CAPTURE(c.args[3]);
    auto r = shm(c.args);
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "segment '" + s + "', object '" + c.args[2] + "'"));
    CHECK(contains(r.err, c.expect_in_err));
  }
  CHECK(line_of(shm({"get", s, "n"})) == "5");
  CHECK(line_of(shm({"get", s, "d"})) == "2.5");
  CHECK(line_of(shm({"get", s, "b"})) == "true");

  // A bad --init creates nothing.
  for (std::vector<std::string> args :
       {std::vector<std::string>{"new", s, "bool", "flag", "--init", "1"}, {"new", s, "int64", "flag", "--init", "["}}) {
    auto r = shm(args);
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "object 'flag'"));
    CHECK_EXIT(shm({"get", s, "flag"}), 3);
  }
}

TEST_CASE("a damaged segment is an error, never a crash") {
  test::TempSegment seg("cli");
  const std::string s = seg.name();

  using Argv = std::vector<std::string>;
  const std::vector<Argv> openers = {{"dump", s},          {"dump", s, "--json"}, {"get", s, "n"},
                                     {"set", s, "n", "1"}, {"add", s, "n", "1"},  {"new", s, "int64", "m"}};
  // Each command exits 1 (not killed by SIGSEGV/SIGBUS/SIGABRT) with a
  // message naming the segment and containing `what`.
  auto check_fail = [&](const std::vector<Argv>& commands, const std::string& what) {
    for (const auto& args : commands) {
      CAPTURE(args[0]);
      auto r = shm(args);
      CHECK_MESSAGE(r.signal == 0, describe(r));
      CHECK_EXIT(r, 1);
      CHECK(contains(r.err, "segment '" + s + "'"));
      CHECK(contains(r.err, what));
    }
  };
  auto check_all_fail = [&](const std::string& what) { check_fail(openers, what); };

  SUBCASE("garbage after magic and version") {
    std::mt19937 rng(12345);
    const std::vector<std::vector<unsigned char>> patterns = {
        std::vector<unsigned char>(64 * 1024 - 16, 0x00), std::vector<unsigned char>(64 * 1024 - 16, 0xFF),
        std::vector<unsigned char>(64 * 1024 - 16, 0xAB), [&] {
          std::vector<unsigned char> v(64 * 1024 - 16);
          for (auto& b : v) b = static_cast<unsigned char>(rng());
          return v;
        }()};
    for (std::size_t i = 0; i < patterns.size(); ++i) {
      CAPTURE(i);
      REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
      REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
      scribble(s, 16, patterns[i]);
      check_all_fail("corrupt");

      // list still works and reports the problem; rm removes it.
      auto r = shm({"list", "--json"});
      CHECK_EXIT(r, 0);
      bool seen = false;
      auto doc = parse(r.out);
      for (const auto& e : doc.as_array()) {
        if (e.at("name") != json::value(s)) continue;
        seen = true;
        CHECK(e.at("problem").is_string());
        CHECK(contains(std::string(e.at("problem").as_string()), "corrupt"));
      }
      CHECK(seen);
      r = shm({"list"});
      CHECK_EXIT(r, 0);
      CHECK(contains(r.out, "unreadable"));
      CHECK_EXIT(shm({"rm", s}), 0);
      CHECK_FALSE(shmstate::Segment::exists(s));
    }
  }

  SUBCASE("file shorter than the header") {
    REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
    int fd = ::open(shm_path(s).c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::ftruncate(fd, 100) == 0);
    ::close(fd);
    check_all_fail("corrupt");
  }

  using shmstate::detail::RegistryEntry;
  constexpr std::uint64_t kEntry0 = sizeof(shmstate::detail::SegmentHeader);  // registry_offset

  SUBCASE("a ready registry entry with an unterminated name") {
    REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
    REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
    scribble(s, kEntry0 + offsetof(RegistryEntry, name),
             std::vector<unsigned char>(shmstate::detail::kObjectNameField, 'x'));
    check_fail({{"dump", s}, {"dump", s, "--json"}}, "corrupt");
  }

  SUBCASE("a ready registry entry pointing outside the segment") {
    REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
    REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
    std::vector<unsigned char> far(8, 0);
    far[5] = 0x01;  // offset 2^40
    scribble(s, kEntry0 + offsetof(RegistryEntry, offset), far);
    check_fail({{"dump", s}, {"dump", s, "--json"}, {"get", s, "n"}, {"set", s, "n", "1"}, {"add", s, "n", "1"}},
               "corrupt");
  }

  SUBCASE("an object whose state was overwritten") {
    REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
    REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
    auto doc = parse(shm({"dump", s, "--json"}).out);
    auto offset = doc.at("objects").at(0).at("offset").to_number<std::uint64_t>();
    scribble(s, offset, std::vector<unsigned char>(64, 0xAB));
    for (const auto& args : std::vector<std::vector<std::string>>{{"dump", s}, {"get", s, "n"}, {"add", s, "n", "1"}}) {
      CAPTURE(args[0]);
      auto r = shm(args);
      CHECK_MESSAGE(r.signal == 0, describe(r));
      CHECK_EXIT(r, 1);
      CHECK(contains(r.err, "segment '" + s + "', object 'n'"));
      CHECK(contains(r.err, "corrupt"));
    }
  }
}

TEST_CASE("foreign files in /dev/shm: skipped by list, refused by the others") {
  test::TempSegment seg("cli");
  REQUIRE(shm({"create", seg.name()}).status == 0);
  ForeignFile text("text", "not a shmstate segment\n");
  ForeignFile zeros("zeros", std::string(4096, '\0'));
  ForeignFile empty("empty", "");

  auto r = shm({"list"});
  CHECK_EXIT(r, 0);
  CHECK(contains(r.out, seg.name()));
  for (const auto* f : {&text, &zeros, &empty}) CHECK_FALSE(contains(r.out, f->name));

  r = shm({"list", "--json"});
  CHECK_EXIT(r, 0);
  bool ours = false;
  auto doc = parse(r.out);
  for (const auto& e : doc.as_array()) {
    std::string name(e.at("name").as_string());
    CHECK(name.rfind("shmstate-test-foreign-", 0) != 0);
    ours = ours || name == seg.name();
  }
  CHECK(ours);

  for (const auto* f : {&text, &zeros, &empty}) {
    CAPTURE(f->name);
    r = shm({"dump", f->name});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "not a shmstate segment"));
    r = shm({"rm", f->name});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "not a shmstate segment"));
    CHECK(::access(shm_path(f->name).c_str(), F_OK) == 0);  // still there
  }
}

}  // TEST_SUITE

TEST_SUITE("cli atoms") {

TEST_CASE("atoms and references: new, get, set, dump") {
  test::TempSegment seg("cliatom");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  CHECK_EXIT(shm({"new", s, "atom", "state", "--init", R"({"conns": 0, "active_clients": []})"}), 0);
  CHECK(parse(line_of(shm({"get", s, "state"}))) == json::parse(R"({"conns":0,"active_clients":[]})"));
  CHECK_EXIT(shm({"set", s, "state", R"({"conns": 7})"}), 0);
  CHECK(parse(line_of(shm({"get", s, "state"}))) == json::parse(R"({"conns":7})"));
  CHECK(shmstate::Segment::open(s).open_atom("state").version() == 1);

  CHECK_EXIT(shm({"new", s, "reference", "cfg", "--init", "[1]"}), 0);
  CHECK_EXIT(shm({"new", s, "atom", "nothing"}), 0);  // no --init: JSON null
  CHECK(line_of(shm({"get", s, "nothing"})) == "null");
  CHECK_EXIT(shm({"new", s, "atom", "state"}), 1);  // exists
  CHECK_EXIT(shm({"add", s, "state", "1"}), 1);      // not a number kind

  auto dump = parse(line_of(shm({"dump", s, "--json"})));
  bool saw_state = false;
  for (const auto& o : dump.at("objects").as_array()) {
    if (o.at("name") == "state") {
      saw_state = true;
      CHECK(o.at("kind") == "atom");
      CHECK(o.at("version") == 1);
      CHECK(o.at("value") == json::parse(R"({"conns":7})"));
    }
  }
  CHECK(saw_state);

  // People's dump shortens long values; --json keeps them whole.
  std::string big = "\"" + std::string(500, 'x') + "\"";
  CHECK_EXIT(shm({"set", s, "state", big}), 0);
  auto text = shm({"dump", s});
  CHECK_EXIT(text, 0);
  CHECK(contains(text.out, "v2 "));
  CHECK(contains(text.out, "..."));
  CHECK(!contains(text.out, std::string(500, 'x')));
  CHECK(contains(shm({"dump", s, "--json"}).out, std::string(500, 'x')));
}

TEST_CASE("swap runs a real filter (jq) and takes its output") {
  test::TempSegment seg("cliswap");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "atom", "state", "--init", R"({"conns": 0})"}).status == 0);
  auto r = shm({"swap", s, "state", "--", "jq", "-c", ".conns += 1"});
  REQUIRE_MESSAGE(r.status == 0, describe(r) << "\n(is jq installed? tools/setup.sh installs it)");
  CHECK(parse(line_of(r)) == json::parse(R"({"conns":1})"));
  CHECK(parse(line_of(shm({"get", s, "state"}))) == json::parse(R"({"conns":1})"));

  // References swap too (over compare_and_set).
  REQUIRE(shm({"new", s, "reference", "list", "--init", "[1]"}).status == 0);
  CHECK(parse(line_of(shm({"swap", s, "list", "--", "jq", "-c", ". + [2]"}))) == json::parse("[1,2]"));
  CHECK(parse(line_of(shm({"swap", s, "list", "--", "sh", "-c", "cat >/dev/null; echo '{\"replaced\": true}'"}))) ==
        json::parse(R"({"replaced":true})"));
}

TEST_CASE("swap: a failing filter, a killed filter or invalid JSON changes nothing") {
  test::TempSegment seg("cliswapfail");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "atom", "state", "--init", R"({"conns": 5})"}).status == 0);
  auto before = shmstate::Segment::open(s).open_atom("state").version();

  auto failing = shm({"swap", s, "state", "--", "false"});
  CHECK_EXIT(failing, 1);
  CHECK(contains(failing.err, "object 'state'"));
  CHECK_EXIT(shm({"swap", s, "state", "--", "sh", "-c", "kill -9 $$"}), 1);
  auto invalid = shm({"swap", s, "state", "--", "echo", "{not json"});
  CHECK_EXIT(invalid, 1);
  CHECK(contains(invalid.err, "invalid JSON"));
  CHECK_EXIT(shm({"swap", s, "state", "--", "/nonexistent/filter"}), 1);
  // A filter that never reads its input must not kill the CLI (SIGPIPE).
  CHECK(parse(line_of(shm({"swap", s, "state", "--", "echo", "3"}))) == 3);
  CHECK(shmstate::Segment::open(s).open_atom("state").version() == before + 1);

  CHECK_EXIT(shm({"swap", s, "state"}), 2);                  // no command
  CHECK_EXIT(shm({"swap", s, "missing", "--", "cat"}), 3);   // no such object
  REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
  CHECK_EXIT(shm({"swap", s, "n", "--", "cat"}), 1);         // not an atom
}

TEST_CASE("swap from concurrent CLI processes retries on conflict: no lost update") {
  test::TempSegment seg("cliswaprace");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "atom", "state", "--init", R"({"conns": 0})"}).status == 0);
  constexpr int kProcs = 4, kSwaps = 15;
  std::vector<test::Child> children;
  for (int p = 0; p < kProcs; ++p) {
    children.emplace_back([&] {
      for (int i = 0; i < kSwaps; ++i) {
        // The filter sleeps a little so that runs overlap and conflicts happen.
        auto r = test::run({cli_path(), "swap", s, "state", "--", "sh", "-c", "sleep 0.01; jq -c '.conns += 1'"});
        if (!r.exited() || r.status != 0) return 1;
      }
      return 0;
    });
  }
  for (auto& c : children) CHECK(c.exit_code() == 0);
  CHECK(parse(line_of(shm({"get", s, "state"}))) == json::parse(R"({"conns":60})"));
}

}  // TEST_SUITE("cli atoms")

TEST_SUITE("cli store") {

TEST_CASE("store get and store update: JSON in and out, through a real filter") {
  test::TempDir dir;
  const std::string f = dir.file("s.json");
  CHECK_EXIT(shm({"store", "get", f}), 3);  // no file yet
  auto r = shm({"store", "update", f, "--", "jq", "-c", ". // {} | .runs += 1"});
  CHECK(parse(line_of(r)) == json::parse(R"({"runs":1})"));
  CHECK(parse(line_of(shm({"store", "get", f}))) == json::parse(R"({"runs":1})"));
  CHECK(test::read_file(f) == std::optional<std::string>("{\"runs\":1}\n"));
  CHECK(parse(line_of(shm({"store", "update", f, "--", "jq", "-c", ".runs += 1"}))) == json::parse(R"({"runs":2})"));
  test::write_file(f, "{\"runs\": 2,");
  auto corrupt = shm({"store", "get", f});
  CHECK_EXIT(corrupt, 1);
  CHECK(contains(corrupt.err, "at byte"));
  CHECK_EXIT(shm({"store", "frob", f}), 2);
  CHECK_EXIT(shm({"store", "update", f}), 2);
}

TEST_CASE("store update: a failing filter, a killed filter or invalid JSON changes nothing") {
  test::TempDir dir;
  const std::string f = dir.file("s.json");
  test::write_file(f, "{\"n\":5}\n");
  for (std::vector<std::string> filter :
       {std::vector<std::string>{"false"}, {"sh", "-c", "kill -9 $$"}, {"echo", "{not json"}, {"/nonexistent/filter"}}) {
    CAPTURE(filter[0]);
    std::vector<std::string> args = {"store", "update", f, "--"};
    args.insert(args.end(), filter.begin(), filter.end());
    auto r = shm(args);
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "store '" + f + "'"));
    CHECK(test::read_file(f) == std::optional<std::string>("{\"n\":5}\n"));
  }
  CHECK(parse(line_of(shm({"store", "update", f, "--", "echo", "3"}))) == 3);  // ignores stdin: no SIGPIPE death
}

TEST_CASE("store update from concurrent CLI processes: no lost update") {
  test::TempDir dir("/dev/shm");
  const std::string f = dir.file("count.json");
  constexpr int kProcs = 4, kUpdates = 10;
  std::vector<test::Child> children;
  for (int p = 0; p < kProcs; ++p) {
    children.emplace_back([&] {
      for (int i = 0; i < kUpdates; ++i) {
        auto r = test::run({cli_path(), "store", "update", f, "--", "sh", "-c", "sleep 0.005; jq -c '(. // 0) + 1'"});
        if (!r.exited() || r.status != 0) return 1;
      }
      return 0;
    });
  }
  for (auto& c : children) CHECK(c.exit_code() == 0);
  CHECK(parse(line_of(shm({"store", "get", f}))) == kProcs * kUpdates);
}

}  // TEST_SUITE("cli store")
namespace {

// `shmstate args...` killed after `seconds` (coreutils timeout), so a CLI that
// hangs fails its test instead of stalling the suite until meson's timeout.
test::RunResult shm_within(int seconds, std::vector<std::string> args) {
  REQUIRE_MESSAGE(!cli_path().empty(), "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  args.insert(args.begin(), {"/usr/bin/timeout", "-s", "KILL", std::to_string(seconds), cli_path()});
  auto r = test::run(args);
  // timeout(1) exits 124 when it had to kill the command.
  REQUIRE_MESSAGE(r.status != 124, "shmstate hung and was killed after " << seconds << " s: " << describe(r));
  return r;
}

}  // namespace

TEST_SUITE("cli") {

TEST_CASE("swap: values bigger than a pipe's buffer pass through `-- cat` without deadlock") {
  test::TempSegment seg("cliswapbig");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s, "--size", "8M"}).status == 0);
  REQUIRE(shm({"new", s, "atom", "big"}).status == 0);
  auto atom = shmstate::Segment::open(s).open_atom("big");
  for (std::size_t size : {std::size_t{300} << 10, std::size_t{1} << 20}) {
    CAPTURE(size);
    json::array value;
    for (std::size_t i = 0; value.size() * 8 < size; ++i) value.emplace_back(static_cast<std::int64_t>(i * 1000003 % 9999991));
    atom.reset(value);
    auto before = atom.version();
    auto r = shm_within(30, {"swap", s, "big", "--", "cat"});
    REQUIRE_MESSAGE(r.status == 0, describe(r).substr(0, 2000));
    CHECK(parse(line_of(r)) == json::value(value));
    CHECK(atom.version() == before + 1);
    CHECK(*atom.deref() == json::value(value));
  }
}

TEST_CASE("swap: a filter printing without end is stopped at the segment's size") {
  test::TempSegment seg("cliswapyes");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s, "--size", "64K"}).status == 0);
  REQUIRE(shm({"new", s, "atom", "state", "--init", "1"}).status == 0);
  auto before = shmstate::Segment::open(s).open_atom("state").version();
  auto r = shm_within(30, {"swap", s, "state", "--", "yes"});
  CHECK_EXIT(r, 1);
  CHECK(contains(r.err, "segment '" + s + "', object 'state'"));
  CHECK(contains(r.err, "more than 65536 bytes"));
  CHECK(contains(r.err, "killed"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(shmstate::Segment::open(s).open_atom("state").version() == before);
  CHECK(line_of(shm({"get", s, "state"})) == "1");
}

TEST_CASE("swap: a filter that printed valid JSON and then failed or was killed changes nothing") {
  test::TempSegment seg("cliswapstatus");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  REQUIRE(shm({"new", s, "atom", "state", "--init", "5"}).status == 0);
  auto before = shmstate::Segment::open(s).open_atom("state").version();

  auto failed = shm_within(30, {"swap", s, "state", "--", "sh", "-c", "cat >/dev/null; echo 7; exit 3"});
  CHECK_EXIT(failed, 1);
  CHECK(contains(failed.err, "exited with status 3"));
  auto killed = shm_within(30, {"swap", s, "state", "--", "sh", "-c", "cat >/dev/null; echo 7; kill -9 $$"});
  CHECK_EXIT(killed, 1);
  CHECK(contains(killed.err, "killed by signal 9"));

  CHECK(shmstate::Segment::open(s).open_atom("state").version() == before);
  CHECK(line_of(shm({"get", s, "state"})) == "5");
  // The same filter that exits 0 does change it: the failures above were the status.
  CHECK(line_of(shm_within(30, {"swap", s, "state", "--", "sh", "-c", "cat >/dev/null; echo 7"})) == "7");
}

}  // TEST_SUITE("cli")

TEST_SUITE("cli") {

// Issue 6, "CLI messages": each check below failed before its fix.
TEST_CASE("messages: one short line whatever was quoted; usage errors exit 2; 'an'; numbers as JSON writes them") {
  test::TempSegment seg("climsg");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s, "--size", "4M"}).status == 0);
  REQUIRE(shm({"new", s, "atom", "a", "--init", "1"}).status == 0);
  REQUIRE(shm({"new", s, "int64", "n", "--init", "5"}).status == 0);

  // One line on stderr, holding at most a short prefix of what was quoted.
  auto one_short_line = [](const test::RunResult& r) {
    CHECK_MESSAGE(std::count(r.err.begin(), r.err.end(), '\n') == 1, describe(r).substr(0, 2000));
    CHECK_MESSAGE(r.err.size() < 400, describe(r).substr(0, 2000));
  };
  SUBCASE("an invalid 2 MB filter output") {
    auto r = shm_within(30, {"swap", s, "a", "--", "sh", "-c",
                             "cat >/dev/null; head -c 2000000 /dev/zero | tr '\\0' x; printf '\\nmore\\n'"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "invalid JSON"));
    CHECK(contains(r.err, "'xxxxxxxxxx"));
    one_short_line(r);
    CHECK(line_of(shm({"get", s, "a"})) == "1");
  }
  SUBCASE("an invalid value, --init, delta, store filter output") {
    const std::string big = "[" + std::string(5000, '1') + "\n,";
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"set", s, "a", big}, {"new", s, "atom", "b", "--init", big}, {"add", s, "n", big}}) {
      CAPTURE(args[0]);
      auto r = shm(args);
      CHECK_EXIT(r, 1);
      CHECK(contains(r.err, "invalid JSON"));
      one_short_line(r);
    }
    test::TempDir dir;
    auto r = shm({"store", "update", dir.file("s.json"), "--", "sh", "-c", "cat >/dev/null; seq 100000"});
    CHECK_EXIT(r, 1);
    one_short_line(r);
  }
  SUBCASE("usage errors quoting long arguments") {
    const std::string big(5000, 'q');
    for (const auto& args : std::vector<std::vector<std::string>>{
             {big}, {"list", "--" + big}, {"create", s, "--size", big}, {"new", s, big, "w"}}) {
      auto r = shm(args);
      CHECK_EXIT(r, 2);
      CHECK(!contains(r.err, std::string(100, 'q')));
    }
    auto r = shm({"get", std::string(3000, 'x') + "\nz", "n"});
    CHECK_EXIT(r, 1);
    one_short_line(r);
  }
  SUBCASE("every bad option value is a usage error (exit 2), naming the problem") {
    const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
        {{"create", s + "x", "--size", "0"}, "too small"},
        {{"create", s + "x", "--mode", "0400"}, "0600"},
        {{"create", s + "x", "--mode", "01777"}, "at most 0777"},
        {{"create", s + "x", "--max-objects", "0"}, "max_objects must be 1..65536"},
        {{"create", s + "x", "--max-objects", "65537"}, "max_objects must be 1..65536"},
        {{"create", s + "x", "--size", "2000G"}, "at most 1 TiB"},
    };
    for (const auto& bad_case : bad) {
      // No structured binding: clang 14 cannot capture one in CAPTURE's lambda.
      const auto& args = bad_case.first;
      const auto& why = bad_case.second;
      CAPTURE(args[2] + " " + args[3]);
      auto r = shm(args);
      CHECK_EXIT(r, 2);
      CHECK(contains(r.err, why));
      CHECK(contains(r.err, "usage: shmstate create"));
      CHECK(!shmstate::Segment::exists(s + "x"));
    }
    // An existing segment is no usage error.
    CHECK_EXIT(shm({"create", s}), 1);
  }
  SUBCASE("a missing command after -- is said so") {
    for (const auto& args : std::vector<std::vector<std::string>>{{"swap", s, "a", "--"}, {"swap", s, "a"}}) {
      auto r = shm(args);
      CHECK_EXIT(r, 2);
      CHECK(contains(r.err, "command to run is missing"));
      CHECK(!contains(r.err, "expected 2 arguments, got 2"));
    }
    auto r = shm({"store", "get"});
    CHECK_EXIT(r, 2);
    CHECK(!contains(r.err, "expected 1 argument, got 1"));
    CHECK(contains(r.err, "expected at least 2 arguments, got 1"));
  }
  SUBCASE("articles and numbers") {
    auto r = shm({"set", s, "n", "1.5"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "an int64 takes"));
    CHECK(contains(r.err, "not 1.5\n"));
    r = shm({"set", s, "n", "1E3"});
    CHECK(contains(r.err, "not 1000.0\n"));
    CHECK(!contains(r.err, "E3"));
    CHECK(!contains(r.err, "E0"));
    r = shm({"new", s, "int64", "a"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "already exists (an atom)"));
    r = shm({"add", s, "a", "1"});
    CHECK_EXIT(r, 1);
    CHECK(contains(r.err, "an atom has no number"));
  }
}

}  // TEST_SUITE("cli")

TEST_SUITE("cli snapshot") {

TEST_CASE("snapshot and restore: a segment round-trips through a file") {
  test::TempSegment src("cli-snap-src"), dst("cli-snap-dst");
  test::TempDir dir;
  const std::string f = dir.file("seg.json");
  CHECK_EXIT(shm({"create", src.name(), "--mode", "0640"}), 0);
  CHECK_EXIT(shm({"new", src.name(), "double", "x", "--init", "0.1"}), 0);
  CHECK_EXIT(shm({"new", src.name(), "atom", "a", "--init", R"({"k":[1,2]})"}), 0);
  CHECK_EXIT(shm({"set", src.name(), "a", "3"}), 0);
  CHECK_EXIT(shm({"snapshot", src.name(), f}), 0);
  CHECK_EXIT(shm({"restore", dst.name(), f}), 0);
  CHECK(line_of(shm({"get", dst.name(), "x"})) == "0.1");
  CHECK(line_of(shm({"get", dst.name(), "a"})) == "3");
  CHECK(shmstate::Segment::open(dst.name()).open_atom("a").version() == 1);
  CHECK(shmstate::Segment::open(dst.name()).info().mode == 0640);
  auto taken = shm({"restore", dst.name(), f});
  CHECK_EXIT(taken, 1);
  CHECK(contains(taken.err, "exists"));
  CHECK_EXIT(shm({"restore", "cli-snap-none", dir.file("none.json")}), 3);
  test::write_file(f, R"({"format":"shmstate-snapshot","version":9})");
  auto newer = shm({"restore", "cli-snap-newer", f});
  CHECK_EXIT(newer, 1);
  CHECK(contains(newer.err, "snapshot '" + f + "'"));
  CHECK(contains(newer.err, "newer"));
  CHECK(!shmstate::Segment::exists("cli-snap-newer"));
  CHECK_EXIT(shm({"snapshot", src.name(), f, "--every", "0"}), 2);
  CHECK_EXIT(shm({"snapshot", src.name(), f, "--every", "soon"}), 2);
}

TEST_CASE("snapshot --every writes only when something changed and ends on SIGTERM with a last snapshot") {
  test::TempSegment seg("cli-snap-every");
  test::TempDir dir;
  const std::string f = dir.file("seg.json");
  auto segment = shmstate::Segment::create(seg.name());
  auto n = segment.atomic<std::int64_t>("n", 1);
  auto inode = [&]() -> ino_t {
    struct stat st;
    return ::stat(f.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  auto saved_n = [&]() -> std::int64_t {
    auto bytes = test::read_file(f);
    if (!bytes) return -1;
    return json::parse(*bytes).at("objects").at(0).at("state").as_int64();
  };
  test::Child loop([&] {
    std::string cli = cli_path();
    ::execl(cli.c_str(), cli.c_str(), "snapshot", seg.c_str(), f.c_str(), "--every", "0.02", nullptr);
    return 98;
  });
  REQUIRE(test::eventually([&] { return inode() != 0; }));
  // Each write replaces the file (a new inode): none while nothing changes.
  ino_t first = inode();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // 15 periods
  CHECK(inode() == first);
  CHECK(saved_n() == 1);
  n.set(2);
  CHECK(test::eventually([&] { return saved_n() == 2; }));
  ino_t second = inode();
  CHECK(second != first);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(inode() == second);
  // A change, then SIGTERM at once: the last snapshot holds it.
  n.set(3);
  loop.kill(SIGTERM);
  CHECK(loop.exit_code_within(std::chrono::seconds(10)) == 0);
  CHECK(saved_n() == 3);
  CHECK(dir.entries() == std::vector<std::string>{"seg.json"});  // no temp file left
}

TEST_CASE("snapshot --every ends on SIGINT (Ctrl-C) as on SIGTERM, with a last snapshot") {
  test::TempSegment seg("cli-snap-int");
  test::TempDir dir;
  const std::string f = dir.file("seg.json");
  auto segment = shmstate::Segment::create(seg.name());
  auto n = segment.atomic<std::int64_t>("n", 1);
  auto saved_n = [&]() -> std::int64_t {
    auto bytes = test::read_file(f);
    return bytes ? json::parse(*bytes).at("objects").at(0).at("state").as_int64() : -1;
  };
  test::Child loop([&] {
    std::string cli = cli_path();
    ::execl(cli.c_str(), cli.c_str(), "snapshot", seg.c_str(), f.c_str(), "--every", "10", nullptr);
    return 98;
  });
  // The first snapshot is written after the loop blocks the signals.
  REQUIRE(test::eventually([&] { return saved_n() == 1; }));
  n.set(7);  // the next periodic snapshot is 10 s away: only the last one can hold it
  loop.kill(SIGINT);
  CHECK(loop.exit_code_within(std::chrono::seconds(10)) == 0);
  CHECK(saved_n() == 7);
  CHECK(dir.entries() == std::vector<std::string>{"seg.json"});
}

}  // TEST_SUITE("cli snapshot")

TEST_SUITE("cli") {

// Issue 6, section 4: `new` says AlreadyExists (exit 1) exactly when it did
// not create, also when CLI processes race to create the same name and kind.
TEST_CASE("new from racing CLI processes: exactly one creates, the others say it already exists") {
  test::TempSegment seg("clinewrace");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  constexpr int kRounds = 5, kProcs = 4;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = "n" + std::to_string(round);
    std::vector<test::Child> children;
    for (int p = 0; p < kProcs; ++p) {
      children.emplace_back([&] {
        auto r = test::run({cli_path(), "new", s, "int64", name});
        if (r.exited() && r.status == 0 && r.err.empty()) return 0;
        if (r.exited() && r.status == 1 && contains(r.err, "object '" + name + "': already exists (an int64)")) return 1;
        return 2;
      });
    }
    int created = 0, refused = 0;
    for (auto& c : children) {
      int code = c.exit_code();
      created += code == 0;
      refused += code == 1;
    }
    CHECK(created == 1);
    CHECK(refused == kProcs - 1);
  }
}

// Issue 9: signal SEG NAME go | wait [--timeout] | status [--json]; `new`
// and dump of signals.
TEST_CASE("signal: new, status, wait --timeout (exit 4), go from the CLI wakes a waiting CLI, dump") {
  test::TempSegment seg("clisig");
  const std::string s = seg.name();
  REQUIRE(shm({"create", s}).status == 0);
  CHECK_EXIT(shm({"new", s, "signal", "please_stop"}), 0);
  CHECK_EXIT(shm({"new", s, "signal", "born_fired", "--init", "true"}), 0);
  CHECK(line_of(shm({"signal", s, "please_stop", "status"})) == "pending");
  auto st = parse(line_of(shm({"signal", s, "please_stop", "status", "--json"})));
  check_keys(st, {"fired", "pid", "when"});
  CHECK(st.at("fired") == false);
  CHECK(st.at("pid").is_null());
  CHECK(line_of(shm({"signal", s, "born_fired", "status"})).rfind("fired by pid ", 0) == 0);
  CHECK_EXIT(shm({"signal", s, "born_fired", "wait"}), 0);

  auto r = shm({"signal", s, "please_stop", "wait", "--timeout", "0.05"});
  CHECK_MESSAGE(r.status == 4, describe(r));
  CHECK(r.out.empty());
  r = shm({"signal", s, "please_stop", "wait", "--timeout=0"});  // a timeout is no error: silent
  CHECK_MESSAGE(r.status == 4, describe(r));
  CHECK(r.err.empty());

  // A CLI wait (no timeout) ended by a CLI go from another process.
  test::Child waiter([&] {
    std::string cli = cli_path();
    ::execl(cli.c_str(), cli.c_str(), "signal", s.c_str(), "please_stop", "wait", nullptr);
    return 98;
  });
  auto seg_handle = shmstate::Segment::open(s);
  REQUIRE(test::eventually([&] { return test::asleep_in_futex(waiter.pid()); }));
  CHECK_EXIT(shm({"signal", s, "please_stop", "go"}), 0);
  CHECK(waiter.exit_code_within(std::chrono::seconds(10)) == 0);
  CHECK_EXIT(shm({"signal", s, "please_stop", "go"}), 0);  // idempotent
  CHECK(seg_handle.open_signal("please_stop").is_set());

  st = parse(line_of(shm({"signal", s, "please_stop", "status", "--json"})));
  CHECK(st.at("fired") == true);
  REQUIRE(st.at("pid").is_int64());
  CHECK(st.at("pid").as_int64() > 0);
  CHECK(st.at("pid").as_int64() != ::getpid());  // the go CLI's own pid
  REQUIRE(st.at("when").is_string());
  CHECK(std::string(st.at("when").as_string()).back() == 'Z');
  auto text = line_of(shm({"signal", s, "please_stop", "status"}));
  CHECK(text == "fired by pid " + std::to_string(st.at("pid").as_int64()) + " at " +
                    std::string(st.at("when").as_string()));
  CHECK_EXIT(shm({"signal", s, "please_stop", "wait", "--timeout", "5"}), 0);

  // dump shows each signal: fired or not, when, by which pid.
  auto dump = parse(line_of(shm({"dump", s, "--json"})));
  bool seen = false;
  for (const auto& o : dump.at("objects").as_array()) {
    if (o.at("name") != "please_stop") continue;
    seen = true;
    CHECK(o.at("kind") == "signal");
    for (const char* k : {"fired", "pid", "when"}) CHECK(o.at(k) == st.at(k));
  }
  CHECK(seen);
  auto dump_text = shm({"dump", s});
  CHECK_EXIT(dump_text, 0);
  CHECK(contains(dump_text.out, text.substr(0, text.find(" at "))));

  // Errors: unknown action, options for the wrong action, bad timeout (2);
  // no such signal (3); not a signal (1).
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"signal", s, "please_stop", "fire"},
           {"signal", s, "please_stop"},
           {"signal", s, "please_stop", "go", "--timeout", "1"},
           {"signal", s, "please_stop", "go", "--json"},
           {"signal", s, "please_stop", "wait", "--timeout", "-1"},
           {"signal", s, "please_stop", "wait", "--timeout", "soon"},
       }) {
    auto e = shm(args);
    CHECK_EXIT(e, 2);
  }
  CHECK_EXIT(shm({"signal", s, "nope", "go"}), 3);
  REQUIRE(shm({"new", s, "int64", "n"}).status == 0);
  CHECK_EXIT(shm({"signal", s, "n", "go"}), 1);
  r = shm({"signal", "--help"});
  CHECK(contains(r.out, "4  timed out"));
}

// Issue 8: `shmstate lock`, flock(1)'s conventions on a fifo_lock or monitor.
TEST_CASE("lock: two lock commands serialise CMD, on a fifo_lock and on a monitor") {
  test::TempSegment seg("cli-lock");
  test::TempDir dir;
  auto segment = shmstate::Segment::create(seg.name());
  segment.fifo_lock("l", shmstate::LockModes::exclusive());
  segment.monitor("m");
  for (std::string name : {"l", "m"}) {
    CAPTURE(name);
    const std::string log = dir.file("log-" + name);
    // Each CMD writes "start", sleeps, writes "end": held in turn, the lines pair up.
    const std::string body = "echo start >> " + log + "; sleep 0.2; echo end >> " + log;
    std::vector<test::Child> runs;
    for (int i = 0; i < 2; ++i)
      runs.emplace_back([&] {
        auto r = test::run({cli_path(), "lock", seg.name(), name, "--", "sh", "-c", body});
        return r.exited() && r.status == 0 ? 0 : 1;
      });
    for (auto& c : runs) CHECK(c.exit_code_within(std::chrono::seconds(20)) == 0);
    CHECK(test::read_file(log).value_or("") == "start\nend\nstart\nend\n");
  }
}

TEST_CASE("lock: -n and -w give up with the conflict status (4, or -E N); CMD does not run") {
  test::TempSegment seg("cli-lock-n");
  auto segment = shmstate::Segment::create(seg.name());
  auto lock = segment.fifo_lock("l", shmstate::LockModes::exclusive());
  auto monitor = segment.monitor("m");
  auto held = lock.acquire();
  auto mheld = monitor.lock();
  for (std::string name : {"l", "m"}) {
    CAPTURE(name);
    auto start = std::chrono::steady_clock::now();
    auto r = shm({"lock", seg.name(), name, "-n", "--", "echo", "ran"});
    CHECK_EXIT(r, 4);
    CHECK(contains(r.err, "object '" + name + "': lock not obtained"));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    r = shm({"lock", seg.name(), name, "--nonblock", "-E", "7", "--", "echo", "ran"});
    CHECK_EXIT(r, 7);
    start = std::chrono::steady_clock::now();
    r = shm({"lock", seg.name(), name, "-w", "0.2", "--", "echo", "ran"});
    CHECK_EXIT(r, 4);
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(200));
    r = shm({"lock", seg.name(), name, "--timeout=0.05", "--conflict-exit-code=0", "--", "echo", "ran"});
    CHECK(r.status == 0);
    CHECK(r.out.empty());
  }
  held.release();
  mheld.release();
  auto r = shm({"lock", seg.name(), "l", "-n", "--", "echo", "ran"});
  CHECK_EXIT(r, 0);
  CHECK(r.out == "ran\n");
}

TEST_CASE("lock: CMD's status is passed through; CMD gets the token; usage and kind errors") {
  test::TempSegment seg("cli-lock-st");
  auto segment = shmstate::Segment::create(seg.name());
  segment.fifo_lock("l", shmstate::LockModes::exclusive());
  segment.fifo_lock("rw", shmstate::LockModes::read_write());
  segment.monitor("m");
  segment.atomic<std::int64_t>("n", 0);
  const std::string s = seg.name();
  CHECK(shm({"lock", s, "l", "--", "sh", "-c", "exit 7"}).status == 7);
  CHECK(shm({"lock", s, "m", "--", "sh", "-c", "exit 9"}).status == 9);
  CHECK(shm({"lock", s, "l", "--", "sh", "-c", "kill -TERM $$"}).status == 128 + SIGTERM);
  auto r = shm({"lock", s, "l", "--", "no-such-command-shmstate"});
  CHECK(r.status == 127);
  CHECK(contains(r.err, "cannot run 'no-such-command-shmstate'"));
  r = shm({"lock", s, "l", "--", "sh", "-c", "echo $SHMSTATE_LOCK_TOKEN $SHMSTATE_LOCK_PREVIOUS_HOLDER_DIED"});
  CHECK_EXIT(r, 0);
  auto t1 = r.out;
  r = shm({"lock", s, "l", "--", "sh", "-c", "echo $SHMSTATE_LOCK_TOKEN $SHMSTATE_LOCK_PREVIOUS_HOLDER_DIED"});
  CHECK(std::stoull(r.out) > std::stoull(t1));  // fencing tokens increase
  CHECK(contains(r.out, " 0\n"));
  r = shm({"lock", s, "rw", "--mode", "read", "--", "true"});
  CHECK_EXIT(r, 0);
  CHECK_EXIT(shm({"lock", s, "rw", "--", "true"}), 2);  // two modes: name one
  CHECK_EXIT(shm({"lock", s, "rw", "--mode", "nope", "--", "true"}), 1);
  CHECK_EXIT(shm({"lock", s, "m", "--mode", "exclusive", "--", "true"}), 2);
  CHECK_EXIT(shm({"lock", s, "l"}), 2);                                  // no CMD
  CHECK_EXIT(shm({"lock", s, "l", "-n", "-w", "1", "--", "true"}), 2);   // exclusive options
  CHECK_EXIT(shm({"lock", s, "l", "-w", "soon", "--", "true"}), 2);
  CHECK_EXIT(shm({"lock", s, "l", "-E", "300", "--", "true"}), 2);
  CHECK_EXIT(shm({"lock", s, "nope", "--", "true"}), 3);
  r = shm({"lock", s, "n", "--", "true"});
  CHECK_EXIT(r, 1);
  CHECK(contains(r.err, "int64 is not a lock (lock works on fifo_lock and monitor)"));
}

TEST_CASE("lock: killing the CLI releases the lock; the next holder is told") {
  test::TempSegment seg("cli-lock-kill");
  test::TempDir dir;
  auto segment = shmstate::Segment::create(seg.name());
  auto lock = segment.fifo_lock("l", shmstate::LockModes::exclusive());
  auto monitor = segment.monitor("m");
  for (std::string name : {"l", "m"}) {
    CAPTURE(name);
    const std::string pidfile = dir.file("pid-" + name);
    test::Child cli([&] {
      std::string c = cli_path();
      ::execl(c.c_str(), c.c_str(), "lock", seg.c_str(), name.c_str(), "--", "sh", "-c",
              ("echo $$ > " + pidfile + "; exec sleep 30").c_str(), nullptr);
      return 98;
    });
    REQUIRE(test::eventually([&] { return test::read_file(pidfile).value_or("").find('\n') != std::string::npos; }));
    bool died = false;
    if (name == "l") {
      CHECK_FALSE(lock.try_acquire().has_value());
      cli.kill();
      cli.wait();
      auto g = lock.acquire_for(std::chrono::seconds(3));
      REQUIRE(g.has_value());
      died = g->previous_holder_died();
    } else {
      CHECK_FALSE(monitor.try_lock().has_value());
      cli.kill();
      cli.wait();
      auto g = monitor.lock_for(std::chrono::seconds(3));
      REQUIRE(g.has_value());
      died = g->previous_holder_died();
    }
    CHECK(died);
    ::kill(std::stoi(*test::read_file(pidfile)), SIGKILL);  // CMD itself is not ours to keep
  }
}

}  // TEST_SUITE("cli")
