// Damage to single words of a real segment (issue 6 section 6, issue 12 item 4):
// every field of the segment header, a registry entry and an atom's state that
// holds an offset, a length or a word readers follow, one subcase each. Each
// gives Error(Corrupt) naming the segment (and the object), from the library
// and from the CLI as another process, never a crash; a write never follows
// it into another object.
//
// The fields (keep this list in step with lib/segment/layout.hpp and
// lib/primitives/atom_state.hpp):
//   SegmentHeader  header_size, size, registry_offset, registry_capacity,
//                  index_offset, index_capacity, registry_used, heap_begin, heap_top
//   RegistryEntry  offset, size
//   AtomState      current (all ones), active buffer's offset, capacity, length
//   AtomicState<bool>  value byte (neither 0 nor 1)
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>

#include "primitives/atom_state.hpp"
#include "support/temp_dir.hpp"
#include "segment/layout.hpp"
#include "segment/segment_impl.hpp"
#include "support/atom_helpers.hpp"
#include "support/checks.hpp"
#include "support/cli.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Segment;
namespace d = shmstate::detail;
namespace json = boost::json;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Writes `value` at `offset` of the segment's file, as a misbehaving program might.
template <class T>
void poke(const test::TempSegment& t, std::uint64_t offset, T value) {
  int fd = ::open(t.path().c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  ssize_t n = ::pwrite(fd, &value, sizeof value, static_cast<off_t>(offset));
  ::close(fd);
  REQUIRE(n == static_cast<ssize_t>(sizeof value));
}

// The CLI commands exit 1 (never a signal) with a one-line message naming
// `where` and saying "corrupt".
void cli_says_corrupt(const std::vector<std::vector<std::string>>& commands, const std::string& where) {
  for (const auto& args : commands) {
    CAPTURE(args[0]);
    auto r = test::shm(args);
    CHECK_MESSAGE(r.signal == 0, test::describe(r));
    CHECK_MESSAGE(r.status == 1, test::describe(r));
    CHECK_MESSAGE(contains(r.err, where), test::describe(r));
    CHECK_MESSAGE(contains(r.err, "corrupt"), test::describe(r));
  }
}

void says_corrupt(const std::function<void()>& f, const std::string& where) {
  auto err = test::error_of(f);
  CHECK_MESSAGE(err.code() == ErrorCode::Corrupt, err.what());
  CHECK_MESSAGE(contains(err.what(), where), err.what());
}

constexpr std::uint64_t kHeader = sizeof(d::SegmentHeader);
constexpr std::uint64_t kBig = std::uint64_t{1} << 50;

}  // namespace

TEST_CASE("damaged segment header fields: a fresh opener and the CLI say Corrupt") {
  test::TempSegment t("damage");
  std::uint64_t size = 256 * 1024;
  std::uint32_t capacity = 8;
  std::function<void()> damage;
  std::function<void()> library = [&] { Segment::open(t.name()); };
  std::function<void()> also = [] {};
  std::vector<std::vector<std::string>> cli = {{"get", t.name(), "n"}, {"dump", t.name()}, {"dump", t.name(), "--json"}};
  SUBCASE("header_size") { damage = [&] { poke<std::uint32_t>(t, offsetof(d::SegmentHeader, header_size), 2048); }; }
  SUBCASE("size") { damage = [&] { poke<std::uint64_t>(t, offsetof(d::SegmentHeader, size), size * 2); }; }
  SUBCASE("registry_offset (index, heap_begin and heap_top moved along with it)") {
    damage = [&] {
      std::uint64_t shift = 128;
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, registry_offset), kHeader + shift);
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, index_offset), d::index_offset_for(capacity) + shift);
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_begin), d::heap_begin_for(capacity) + shift);
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_top), d::heap_begin_for(capacity) + shift + 4096);
    };
  }
  SUBCASE("registry_capacity (beyond the maximum, index and heap_begin consistent with it)") {
    capacity = d::kMaxRegistryCapacity;
    size = d::heap_begin_for(capacity + 1) + 64 * 1024;
    damage = [&] {
      poke<std::uint32_t>(t, offsetof(d::SegmentHeader, registry_capacity), capacity + 1);
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, index_offset), d::index_offset_for(capacity + 1));
      poke<std::uint32_t>(t, offsetof(d::SegmentHeader, index_capacity), d::index_capacity_for(capacity + 1));
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_begin), d::heap_begin_for(capacity + 1));
      poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_top), d::heap_begin_for(capacity + 1) + 64);
    };
  }
  SUBCASE("index_offset") { damage = [&] { poke<std::uint64_t>(t, offsetof(d::SegmentHeader, index_offset), kBig); }; }
  SUBCASE("index_capacity (not the one the registry capacity gives)") {
    damage = [&] {
      poke<std::uint32_t>(t, offsetof(d::SegmentHeader, index_capacity), d::index_capacity_for(capacity) * 2);
    };
  }
  SUBCASE("registry_used (beyond the capacity: readers clamp it, so creation and info() find it)") {
    damage = [&] { poke<std::uint32_t>(t, offsetof(d::SegmentHeader, registry_used), capacity + 1); };
    library = [&] { Segment::open(t.name()).atomic<std::int64_t>("m", 2); };
    cli = {{"new", t.name(), "int64", "m"}};
    // dump is the diagnostic: it shows what it can read and names the problem.
    also = [&] {
      auto r = test::shm({"dump", t.name()});
      CHECK_MESSAGE(r.status == 0, test::describe(r));
      CHECK_MESSAGE(contains(r.out, "problem: segment '" + t.name() + "': the registry is corrupt: registry_used 9 exceeds the capacity 8"),
                    test::describe(r));
      r = test::shm({"dump", t.name(), "--json"});
      CHECK_MESSAGE(contains(r.out, "\"problem\":\"segment '" + t.name() + "': the registry is corrupt"), test::describe(r));
    };
  }
  SUBCASE("heap_begin") { damage = [&] { poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_begin), kBig); }; }
  SUBCASE("heap_top") { damage = [&] { poke<std::uint64_t>(t, offsetof(d::SegmentHeader, heap_top), kBig); }; }
  REQUIRE(damage);
  // Made by another process, so this one has no mapping it would trust.
  test::Child maker([&] {
    auto seg = Segment::create(t.name(), {.size = size, .mode = 0600, .max_objects = capacity});
    seg.atomic<std::int64_t>("n", 1);
    return 0;
  });
  REQUIRE(maker.exit_code_within(20s) == 0);
  damage();
  says_corrupt(library, "segment '" + t.name() + "'");
  cli_says_corrupt(cli, "segment '" + t.name() + "'");
  also();
}

TEST_CASE("damaged registry entry fields: lookups and the CLI say Corrupt") {
  test::TempSegment t("damage");
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  seg.atomic<std::int64_t>("first", 1);
  seg.atom("victim", json::value(2));
  const std::uint64_t entry = kHeader + 1 * d::kRegistryEntrySize;
  SUBCASE("offset") { poke<std::uint64_t>(t, entry + offsetof(d::RegistryEntry, offset), kBig); }
  SUBCASE("size") { poke<std::uint64_t>(t, entry + offsetof(d::RegistryEntry, size), kBig); }
  const std::string where = "segment '" + t.name() + "'";
  says_corrupt([&] { seg.objects(); }, where);
  says_corrupt([&] { seg.open_atom("victim"); }, where);
  cli_says_corrupt({{"get", t.name(), "victim"}, {"dump", t.name()}, {"dump", t.name(), "--json"}}, where);
  CHECK(seg.open_atomic<std::int64_t>("first").get() == 1);  // the healthy entry is still reachable
}

// One subcase per field that a reader of `object` follows; then its reads and
// the CLI's must say Corrupt.
void damage_atom_read_fields(const test::TempSegment& t, Segment& seg, const std::string& object) {
  auto& s = atomtest::atom_state(seg, object);
  const std::uint64_t state = seg.find(object)->offset;
  const unsigned active = d::atom_buffer(s.current.load());
  const std::uint64_t buffer = state + offsetof(d::AtomState, buffers) + active * sizeof(d::AtomBuffer);
  SUBCASE("current: all ones") { poke<std::uint64_t>(t, state + offsetof(d::AtomState, current), ~std::uint64_t{0}); }
  SUBCASE("current: a version beyond any reachable one, on a healthy buffer") {
    poke<std::uint64_t>(t, state + offsetof(d::AtomState, current), ((d::kMaxAtomVersion + 1) << 1) | active);
  }
  SUBCASE("active offset beyond the mapping, length <= capacity") {
    poke<std::uint64_t>(t, buffer + offsetof(d::AtomBuffer, offset), kBig);
  }
  SUBCASE("active capacity beyond the mapping") { poke<std::uint64_t>(t, buffer + offsetof(d::AtomBuffer, capacity), kBig); }
  SUBCASE("active length beyond its block and the mapping") {
    poke<std::uint64_t>(t, buffer + offsetof(d::AtomBuffer, length), kBig);
  }
  const std::string where = "segment '" + t.name() + "', object '" + object + "'";
  if (object == "a") {
    says_corrupt([&] { seg.open_atom("a").deref(); }, where);
    says_corrupt([&] { seg.open_atom("a").deref_versioned(); }, where);
  } else {
    says_corrupt([&] { seg.open_atomic_reference("r").get(); }, where);
  }
  cli_says_corrupt({{"get", t.name(), object}, {"dump", t.name()}, {"dump", t.name(), "--json"}}, where);
}

TEST_CASE("damaged atom state read fields: deref, AtomicReference::get and the CLI say Corrupt") {
  test::TempSegment t("damage");
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  // No handle is kept: each read below parses afresh (nothing cached).
  seg.atom("a", json::parse(R"({"ok": [1, 2, 3]})"));
  seg.atomic_reference("r", json::parse(R"({"ok": [1, 2, 3]})"));
  SUBCASE("an atom") { damage_atom_read_fields(t, seg, "a"); }
  SUBCASE("a reference") { damage_atom_read_fields(t, seg, "r"); }
}

// Loading a std::atomic<bool> whose byte is 255 was undefined behaviour
// (fuzz_segment under UBSan); the byte is now a uint8_t that the library
// reads as true, and the outside readers report.
TEST_CASE("a bool's value byte other than 0 or 1: the library reads true, CLI and snapshot say Corrupt") {
  test::TempSegment t("damage");
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  seg.atomic<bool>("flag", false);
  const std::uint64_t value = seg.find("flag")->offset + offsetof(d::AtomicState<bool>, value);
  poke<std::uint8_t>(t, value, 255);
  const std::string where = "segment '" + t.name() + "', object 'flag'";
  test::TempDir dir;
  cli_says_corrupt({{"get", t.name(), "flag"}, {"dump", t.name()}, {"dump", t.name(), "--json"},
                    {"snapshot", t.name(), dir.path() + "/s.json"}},
                   where);
  says_corrupt([&] { seg.snapshot(dir.path() + "/s.json"); }, where);
  auto flag = seg.open_atomic<bool>("flag");
  CHECK(flag.get());
  CHECK_FALSE(flag.compare_and_set(false, true));
  CHECK(flag.compare_and_set(true, false));  // the damaged byte counts as true and is replaced
  CHECK_FALSE(flag.get());
  auto r = test::shm({"get", t.name(), "flag"});
  CHECK_MESSAGE(r.status == 0, test::describe(r));
  CHECK(r.out == "false\n");
}
