// The registry's name index: many objects, colliding names, damaged index
// words. (Crash points of a creation: robustness_test.cpp.)
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>

#include "segment/layout.hpp"
#include "segment/segment_impl.hpp"
#include "support/checks.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Segment;
namespace d = shmstate::detail;

namespace {

std::string name_of(std::uint32_t i) { return "object." + std::to_string(i); }

// Every name hashes alike while one of these lives (in this process and the
// children it forks): all names share one probe path.
struct CollidingNames {
  static std::uint32_t same(std::string_view) noexcept { return 0xfffffff0u; }  // home: the last slots, so paths wrap
  CollidingNames() { d::name_hash = &same; }
  ~CollidingNames() { d::name_hash = &d::fnv1a_name_hash; }
};

// Creates the segment with `count` int64 objects (value i) in a child, so
// this process maps it afresh and has not yet checked its registry.
void fill_elsewhere(const std::string& segment, std::uint32_t max_objects, std::uint32_t count) {
  test::Child c([&] {
    auto seg = Segment::create(segment, {.size = d::heap_begin_for(max_objects) + std::uint64_t{count} * 256 + 65536,
                                         .mode = 0600,
                                         .max_objects = max_objects});
    for (std::uint32_t i = 0; i < count; ++i) seg.atomic<std::int64_t>(name_of(i), i);
    return 0;
  });
  REQUIRE(c.exit_code_within(60s) == 0);
}

// The index slot holding entry `e`.
d::IndexSlot& slot_of_entry(const Segment& seg, std::uint32_t e) {
  auto& impl = seg.impl();
  for (std::uint32_t pos = 0; pos < impl.index_capacity; ++pos)
    if ((impl.index[pos].load() & 0xffffffffu) == e + 1) return impl.index[pos];
  FAIL("entry " << e << " has no index slot");
  return impl.index[0];
}

void check_all_found(const Segment& seg, std::uint32_t count) {
  std::uint32_t wrong = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    auto a = seg.open_atomic<std::int64_t>(name_of(i));
    if (a.get() != i) ++wrong;
  }
  CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("a full registry of 65,536 objects: every one found by name, the next is SegmentFull") {
  test::TempSegment t("registry");
  const std::uint32_t n = d::kMaxRegistryCapacity;
  Segment seg = Segment::create(t.name(), {.size = d::heap_begin_for(n) + std::uint64_t{n} * 256, .mode = 0600,
                                           .max_objects = n});
  for (std::uint32_t i = 0; i < n; ++i) seg.atomic<std::int64_t>(name_of(i), i);
  check_all_found(seg, n);
  CHECK_FALSE(seg.find("object.missing").has_value());
  CHECK(seg.objects().size() == n);
  CHECK(seg.impl().header->registry_used.load() == n);
  CHECK_ERROR(seg.atomic<std::int64_t>("one.more", 0), ErrorCode::SegmentFull);
  // Another process finds them too (its own lookups, no lock).
  test::Child reader([&] {
    auto s = Segment::open(t.name());
    for (std::uint32_t i = 0; i < n; i += 97)
      if (s.open_atomic<std::int64_t>(name_of(i)).get() != i) return 1;
    return s.find("object.missing") ? 2 : 0;
  });
  CHECK(reader.exit_code_within(60s) == 0);
  CHECK(seg.info().problem.empty());
}

TEST_CASE("colliding names share one probe path: all found, creators racing on it lose nothing") {
  CollidingNames collide;
  test::TempSegment t("registry");
  const std::uint32_t n = 64;
  Segment seg = Segment::create(t.name(), {.size = 1 << 20, .mode = 0600, .max_objects = n});
  // Two processes create the two halves at once, a third the first half again.
  std::vector<std::unique_ptr<test::Child>> creators;
  for (std::uint32_t part : {0u, 1u, 0u})
    creators.push_back(std::make_unique<test::Child>([&, part] {
      auto s = Segment::open(t.name());
      for (std::uint32_t i = part; i < n; i += 2)
        if (s.atomic<std::int64_t>(name_of(i), i).get() != i) return 1;
      return 0;
    }));
  for (auto& c : creators) CHECK(c->exit_code_within(60s) == 0);
  check_all_found(seg, n);
  CHECK(seg.objects().size() == n);
  CHECK_FALSE(seg.find("object.missing").has_value());  // a miss walks the whole path, then stops
  CHECK_ERROR(seg.atomic<std::int64_t>("one.more", 0), ErrorCode::SegmentFull);
  CHECK_NOTHROW(seg.impl().check_registry(true));
  CHECK(seg.info().problem.empty());
}

TEST_CASE("damaged index words: Corrupt, never a hang, a read outside the registry or a second object") {
  test::TempSegment t("registry");
  const std::uint32_t n = 8;
  fill_elsewhere(t.name(), n, 4);
  Segment seg = Segment::open(t.name());
  auto& impl = seg.impl();
  std::string lookup_name = name_of(2);  // looked up after the damage
  bool create_corrupt = true;            // creating lookup_name must say Corrupt

  SUBCASE("an entry number beyond the registry") {
    auto& slot = slot_of_entry(seg, 2);
    slot.store((slot.load() & ~std::uint64_t{0xffffffff}) | 0xfffffffeu);
  }
  SUBCASE("entry number 0 under a live tag") {
    auto& slot = slot_of_entry(seg, 2);
    slot.store(slot.load() & ~std::uint64_t{0xffffffff});
  }
  SUBCASE("every slot in use, with tags of no name: a miss would probe forever") {
    for (std::uint32_t pos = 0; pos < impl.index_capacity; ++pos)
      if (impl.index[pos].load() == 0) impl.index[pos].store((std::uint64_t{0x5eed} << 32) | 1);
    lookup_name = "object.missing";
  }
  SUBCASE("a zeroed slot: the object it indexed must not be created again") {
    slot_of_entry(seg, 2).store(0);
  }
  SUBCASE("a slot pointing at another object's entry") {
    auto& slot = slot_of_entry(seg, 2);
    slot.store((slot.load() & ~std::uint64_t{0xffffffff}) | 1);  // entry 0
  }
  SUBCASE("an extra slot") {
    for (std::uint32_t pos = 0; pos < impl.index_capacity; ++pos)
      if (impl.index[pos].load() == 0) {
        impl.index[pos].store((std::uint64_t{0x5eed} << 32) | 3);
        break;
      }
    lookup_name = "object.new";
  }
  SUBCASE("registry_used beyond the capacity") {
    impl.header->registry_used.store(n + 100);
    lookup_name = "object.new";
  }
  SUBCASE("registry_used below the objects") {
    impl.header->registry_used.store(1);
    lookup_name = "object.new";
  }

  // Lookups end (a child, so that a hang fails instead of stalling the suite)
  // with the object, a miss, or Corrupt; never a crash.
  test::Child reader([&] {
    try {
      for (std::uint32_t i = 0; i < 4; ++i) (void)seg.find(name_of(i));
      (void)seg.find("object.missing");
    } catch (const shmstate::Error& e) {
      if (e.code() != ErrorCode::Corrupt) return 1;
    }
    return 0;
  });
  CHECK(reader.exit_code_within(20s) == 0);
  // info() (dump) says so, and creation refuses to trust the index.
  CHECK(test::contains(seg.info().problem, "corrupt"));
  CHECK(test::contains(seg.info().problem, t.name()));
  if (create_corrupt) CHECK_ERROR(seg.atomic<std::int64_t>(lookup_name, 0), ErrorCode::Corrupt);
  std::uint32_t named = 0;
  for (const auto& o : seg.objects()) named += o.name == lookup_name;
  CHECK(named <= 1);
}
