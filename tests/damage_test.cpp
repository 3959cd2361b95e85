// Damage to single words of a real segment (issue 6 section 6, issue 12 item 4):
// every field of the segment header, a registry entry and an atom's state that
// holds an offset, a length or a word readers follow, one subcase each. Each
// gives Error(Corrupt) naming the segment (and the object), from the library
// and from the CLI as another process, never a crash; a write never follows
// it into another object (damaged allocator data: the other object's bytes
// are compared before and after; a damaged free list is dropped, not used).
//
// The fields (keep this list in step with lib/segment/layout.hpp and
// lib/primitives/atom_state.hpp):
//   SegmentHeader  header_size, size, registry_offset, registry_capacity,
//                  index_offset, index_capacity, registry_used, heap_begin, heap_top
//                  free_heads[c] (pointing at another object's block or state)
//   RegistryEntry  offset, size
//   AtomState      current (all ones), active buffer's offset, capacity, length;
//                  inactive buffer's offset (and capacity) pointing at another
//                  object's block or state, or at its own active block
//   AtomicState<bool>  value byte (neither 0 nor 1)
//   BlockHeader    tag, klass, state, owner (of an atom's active and inactive
//                  block), next (of a free block)
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
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

#include "primitives/atom_state.hpp"
#include "primitives/fifo_lock.hpp"
#include "support/temp_dir.hpp"
#include "segment/layout.hpp"
#include "segment/segment_impl.hpp"
#include "support/atom_helpers.hpp"
#include "support/checks.hpp"
#include "support/cli.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::Atom;
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

// ---- damaged allocator data: writes never follow it into another object ----

namespace {

std::string raw(const Segment& seg, std::uint64_t offset, std::uint64_t bytes) {
  return std::string(reinterpret_cast<const char*>(seg.impl().base + offset), bytes);
}

// The block of the atom `name`'s buffer `which` (0/1 as stored, or the
// active/inactive one).
const d::AtomBuffer& buffer_of(const Segment& seg, const std::string& name, bool active) {
  auto& s = atomtest::atom_state(seg, name);
  return s.buffers[d::atom_buffer(s.current.load()) ^ (active ? 0u : 1u)];
}

std::uint64_t buffer_field(const Segment& seg, const std::string& name, bool active, std::size_t field) {
  auto& s = atomtest::atom_state(seg, name);
  const unsigned b = d::atom_buffer(s.current.load()) ^ (active ? 0u : 1u);
  return seg.find(name)->offset + offsetof(d::AtomState, buffers) + b * sizeof(d::AtomBuffer) + field;
}

unsigned class_of(std::uint64_t capacity) { return static_cast<unsigned>(std::countr_zero(capacity)) - d::kMinBlockShift; }

// What must not change: another atom's value and its blocks' bytes, and an
// Atomic's value and state bytes.
struct Bystanders {
  const Segment& seg;
  std::string other_value_bytes, other_state_bytes, counter_state_bytes;
  std::uint64_t other_offset, other_capacity;
  explicit Bystanders(const Segment& s) : seg(s) {
    const auto& b = buffer_of(seg, "other", true);
    other_offset = b.offset.load();
    other_capacity = b.capacity.load();
    other_value_bytes = raw(seg, other_offset - d::kBlockHeaderSize, other_capacity + d::kBlockHeaderSize);
    other_state_bytes = raw(seg, seg.find("other")->offset, sizeof(d::AtomState));
    counter_state_bytes = raw(seg, seg.find("counter")->offset, seg.find("counter")->size);
  }
  void unchanged() const {
    CHECK(raw(seg, other_offset - d::kBlockHeaderSize, other_capacity + d::kBlockHeaderSize) == other_value_bytes);
    CHECK(raw(seg, seg.find("other")->offset, sizeof(d::AtomState)) == other_state_bytes);
    CHECK(raw(seg, seg.find("counter")->offset, seg.find("counter")->size) == counter_state_bytes);
    CHECK(atomtest::stored(seg, "other").value == json::value(atomtest::filler(100, 1)));
    CHECK(seg.open_atomic<std::int64_t>("counter").get() == 7);
  }
};

// A segment with the bystanders, and an atom "victim" whose both buffers
// hold blocks (the inactive one the value of version 0).
Segment allocator_damage_segment(const test::TempSegment& t) {
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  seg.atom("other", json::value(atomtest::filler(100, 1)));  // a 128-byte block
  seg.atomic<std::int64_t>("counter", 7);  // not first: room for a header before it
  seg.atom("victim", json::value(atomtest::filler(90, 2)));  // 128-byte blocks too
  seg.open_atom("victim").reset(json::value(atomtest::filler(90, 3)));
  return seg;
}

// Every way to write the victim says Corrupt, names it, and writes nothing.
void victim_writes_refused(const test::TempSegment& t, Segment& seg, const Bystanders& by) {
  const std::string where = "segment '" + t.name() + "', object 'victim'";
  const json::value before = atomtest::stored(seg, "victim").value;
  const std::uint64_t version = atomtest::stored(seg, "victim").version;
  says_corrupt([&] { seg.open_atom("victim").reset(json::value(atomtest::filler(80, 4))); }, where);
  says_corrupt([&] { seg.open_atom("victim").swap([](const json::value&) { return json::value(5); }); }, where);
  cli_says_corrupt({{"set", t.name(), "victim", "\"" + atomtest::filler(80, 5) + "\""},
                    {"swap", t.name(), "victim", "--", "cat"}},
                   where);
  CHECK(atomtest::stored(seg, "victim").value == before);
  CHECK(atomtest::stored(seg, "victim").version == version);
  by.unchanged();
}

}  // namespace

TEST_CASE("an atom's inactive buffer pointing at another object: set, swap and reset say Corrupt, write nothing") {
  test::TempSegment t("damage");
  Segment seg = allocator_damage_segment(t);
  Bystanders by(seg);
  const std::uint64_t offset_field = buffer_field(seg, "victim", false, offsetof(d::AtomBuffer, offset));
  SUBCASE("another atom's value block") { poke<std::uint64_t>(t, offset_field, by.other_offset); }
  SUBCASE("another atom's state") { poke<std::uint64_t>(t, offset_field, seg.find("other")->offset); }
  SUBCASE("an Atomic's state") { poke<std::uint64_t>(t, offset_field, seg.find("counter")->offset); }
  SUBCASE("its own active block") {
    poke<std::uint64_t>(t, offset_field, buffer_of(seg, "victim", true).offset.load());
  }
  SUBCASE("another atom's block, with that block's capacity") {
    poke<std::uint64_t>(t, offset_field, by.other_offset);
    poke<std::uint64_t>(t, buffer_field(seg, "victim", false, offsetof(d::AtomBuffer, capacity)), by.other_capacity);
  }
  victim_writes_refused(t, seg, by);
  if (by.other_offset == buffer_of(seg, "victim", false).offset.load()) {
    auto r = test::shm({"set", t.name(), "victim", "1"});
    CHECK_MESSAGE(contains(r.err, "inactive buffer descriptor: offset " + std::to_string(by.other_offset)), r.err);
    CHECK_MESSAGE(contains(r.err, "belongs to object 'other'"), r.err);
    CHECK_MESSAGE(contains(r.err, "nothing written"), r.err);
  }
  // dump, the diagnostic, says so too (the value itself is readable: get works).
  cli_says_corrupt({{"dump", t.name()}, {"dump", t.name(), "--json"}}, "segment '" + t.name() + "', object 'victim'");
  CHECK(test::shm({"get", t.name(), "victim"}).status == 0);
}

namespace {
// One subcase per field of the header of the victim's active or inactive block.
void damage_block_header(const test::TempSegment& t, Segment& seg, const Bystanders& by, bool active) {
  const std::uint64_t block = buffer_of(seg, "victim", active).offset.load();
  const std::uint64_t header = block - d::kBlockHeaderSize;
  const auto* h = reinterpret_cast<const d::BlockHeader*>(seg.impl().base + header);
  SUBCASE("tag") { poke<std::uint64_t>(t, header + offsetof(d::BlockHeader, tag), h->tag.load() ^ 1); }
  SUBCASE("size class") { poke<std::uint32_t>(t, header + offsetof(d::BlockHeader, klass), h->klass.load() + 1); }
  SUBCASE("state: free") { poke<std::uint32_t>(t, header + offsetof(d::BlockHeader, state), d::kBlockFree); }
  SUBCASE("state: neither") { poke<std::uint32_t>(t, header + offsetof(d::BlockHeader, state), 12345); }
  SUBCASE("owner: another object") {
    poke<std::uint64_t>(t, header + offsetof(d::BlockHeader, owner), seg.find("other")->offset);
  }
  const std::string where = "segment '" + t.name() + "', object 'victim'";
  if (active) {
    says_corrupt([&] { seg.open_atom("victim").deref(); }, where);
    cli_says_corrupt({{"get", t.name(), "victim"}, {"dump", t.name()}, {"dump", t.name(), "--json"}}, where);
    by.unchanged();
  } else {
    victim_writes_refused(t, seg, by);
    cli_says_corrupt({{"dump", t.name()}}, where);
  }
}
}  // namespace

TEST_CASE("a damaged block header: writes into it say Corrupt, reads of it say Corrupt") {
  test::TempSegment t("damage");
  Segment seg = allocator_damage_segment(t);
  Bystanders by(seg);
  SUBCASE("the inactive buffer's block") { damage_block_header(t, seg, by, false); }
  SUBCASE("the active buffer's block") { damage_block_header(t, seg, by, true); }
}

TEST_CASE("a free-list head pointing at another object: the next allocation does not hand it out") {
  test::TempSegment t("damage");
  Segment seg = allocator_damage_segment(t);
  Bystanders by(seg);
  const unsigned c = class_of(by.other_capacity);
  const std::uint64_t head = offsetof(d::SegmentHeader, free_heads) + 8 * c;
  std::uint64_t target = 0;
  SUBCASE("another atom's live block") { target = by.other_offset; }
  SUBCASE("another atom's state") { target = seg.find("other")->offset; }
  SUBCASE("an Atomic's state") { target = seg.find("counter")->offset; }
  SUBCASE("a free block whose link points at another atom's block") {
    // A block of class c freed by its atom: "grower" outgrows its 128-byte
    // blocks, the inactive one's is freed and heads the list.
    Atom g = seg.atom("grower", json::value(atomtest::filler(90, 6)));
    g.reset(json::value(atomtest::filler(90, 7)));
    g.reset(json::value(atomtest::filler(900, 8)));
    target = seg.impl().header->free_heads[c].load();
    REQUIRE(target != 0);
    poke<std::uint64_t>(t, target - d::kBlockHeaderSize + offsetof(d::BlockHeader, next), by.other_offset);
    // The head itself is sound: the first allocation takes it, the link is dropped.
    seg.atom("first", json::value(atomtest::filler(100, 9)));
    CHECK(buffer_of(seg, "first", true).offset.load() == target);
    target = 0;
  }
  if (target != 0) {
    poke<std::uint64_t>(t, head, target);
    // dump names the damaged list (the segment's problem line).
    auto r = test::shm({"dump", t.name()});
    CHECK_MESSAGE(contains(r.out, "corrupt free list of " + std::to_string(by.other_capacity) + "-byte blocks"),
                  test::describe(r));
  }
  // Allocations of that class: a new atom (library, and CLI), and a buffer
  // that grows into the class.
  seg.atom("fresh", json::value(atomtest::filler(100, 10)));
  auto r = test::shm({"new", t.name(), "atom", "fresh2", "--init", "\"" + atomtest::filler(100, 11) + "\""});
  CHECK_MESSAGE(r.status == 0, test::describe(r));
  Atom small = seg.atom("small", json::value(1));
  small.reset(json::value(atomtest::filler(100, 12)));
  small.reset(json::value(atomtest::filler(100, 13)));
  for (const char* name : {"fresh", "fresh2", "small"}) {
    CAPTURE(name);
    for (bool active : {false, true}) {
      std::uint64_t off = buffer_of(seg, name, active).offset.load();
      CHECK(off != by.other_offset);
      CHECK(off != seg.find("other")->offset);
      CHECK(off != seg.find("counter")->offset);
    }
  }
  CHECK(atomtest::stored(seg, "fresh").value == json::value(atomtest::filler(100, 10)));
  CHECK(atomtest::stored(seg, "fresh2").value == json::value(atomtest::filler(100, 11)));
  CHECK(atomtest::stored(seg, "small").value == json::value(atomtest::filler(100, 13)));
  by.unchanged();
  std::vector<std::string> atoms = {"other", "victim", "fresh", "fresh2", "small"};
  if (seg.find("grower")) atoms.insert(atoms.end(), {"grower", "first"});
  CHECK(atomtest::blocks_problem(seg, atomtest::value_blocks(seg, atoms)) == "");
  CHECK(seg.info().problem == "");  // the damaged list was dropped
}

// A hostile time in a FifoLock slot: dump computed now - since_ns, a signed
// overflow for INT64_MIN (UBSan under fuzz_segment); ages are now 0 for a
// future or damaged time. Only a sanitizer build (the ASan+UBSan suite) sees
// the overflow itself; every build checks dump still works.
TEST_CASE("a FifoLock slot's time set to INT64_MIN: dump shows an age, no overflow") {
  test::TempSegment t("damage");
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  auto lock = seg.fifo_lock("l", shmstate::LockModes::exclusive(), 4);
  auto held = lock.acquire();
  const std::uint64_t slots = seg.find("l")->offset + sizeof(d::FifoLockState);
  for (std::uint64_t i = 0; i < 4; ++i)
    poke<std::int64_t>(t, slots + i * sizeof(d::FifoLockSlot) + offsetof(d::FifoLockSlot, since_ns),
                       std::numeric_limits<std::int64_t>::min());
  for (std::vector<std::string> args : {std::vector<std::string>{"dump", t.name()}, {"dump", t.name(), "--json"}}) {
    auto r = test::shm(args);
    CHECK_MESSAGE(r.signal == 0, test::describe(r));
    CHECK_MESSAGE(r.status == 0, test::describe(r));
  }
  // Still held, as another process sees it: the damage changed no grant.
  test::Child other([&] { return Segment::open(t.name()).open_fifo_lock("l").try_acquire() ? 1 : 0; });
  CHECK(other.exit_code_within(10s) == 0);
}

// A FifoLock or Monitor written by a library of an earlier layout is refused,
// naming the kind and both versions: 2 (no kWordAsleep, so its waiters never
// announce a sleep and a later granter would skip their wake) and 3 (its fast
// path stamps since_ns on every grant, and the bytes this library reads as
// the fast hold's seen_token are reserved there).
TEST_CASE("a FifoLock or Monitor of layout version 2 or 3 is refused as LayoutMismatch naming both versions") {
  for (std::uint32_t old : {2u, 3u}) {
    CAPTURE(old);
    test::TempSegment t("damage");
    Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
    seg.fifo_lock("l", shmstate::LockModes::exclusive(), 4);
    seg.monitor("m");
    for (std::string name : {"l", "m"}) {
      poke<std::uint32_t>(t, seg.find(name)->offset + offsetof(d::ObjectHeader, layout_version), old);
      Segment other = Segment::open(t.name());
      auto err = test::error_of([&] {
        if (name == "l")
          other.open_fifo_lock(name);
        else
          other.open_monitor(name);
      });
      CHECK(err.code() == ErrorCode::LayoutMismatch);
      CHECK_MESSAGE(contains(err.what(), "layout version " + std::to_string(old) + ", but this library reads version 4"),
                    err.what());
    }
  }
}

// A Signal written by a library of layout 1 is refused: that library takes
// the word's kWatch bit (a wide wait, issue 13) for damage and fires without
// notifying the segment's watch summary, so a wide waiter would not wake.
TEST_CASE("a Signal of layout version 1 is refused as LayoutMismatch naming both versions") {
  test::TempSegment t("damage");
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024, .mode = 0600, .max_objects = 8});
  seg.signal("s");
  poke<std::uint32_t>(t, seg.find("s")->offset + offsetof(d::ObjectHeader, layout_version), 1);
  Segment other = Segment::open(t.name());
  auto err = test::error_of([&] { other.open_signal("s"); });
  CHECK(err.code() == ErrorCode::LayoutMismatch);
  CHECK_MESSAGE(contains(err.what(), "signal layout version 1, but this library reads version 2"), err.what());
}
