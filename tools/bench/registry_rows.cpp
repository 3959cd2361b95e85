// bench rows of the object registry: creation and opening by name at 60,000
// objects against the same at 100 objects, measured in the same run (issue 6,
// "Cost growth of the registry": target ratio <= 2), and dump of 60,000
// objects (target under 1 s).
//
// Creations use up registry entries (objects are never deleted), so these
// rows run at most kCreatesPerRound creations per round, and Bodies::prepare
// (untimed) moves to a fresh segment filled to the row's size when the
// current one has grown past its window: 100..500 objects, 60,000..65,000.
// Names are made before the timed loop, so both sides time only the registry.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <shmstate/atomic.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

#include "harness.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {

constexpr std::uint64_t kCreatesPerRound = 200;
constexpr std::uint32_t kSmall = 100;
constexpr std::uint32_t kLarge = 60000;

std::string object_name(std::uint64_t i) { return "registry.object." + std::to_string(i); }

// object_name(0 .. count-1), made once for every row.
const std::vector<std::string>& names(std::size_t count) {
  static std::vector<std::string> all;
  while (all.size() < count) all.push_back(object_name(all.size()));
  return all;
}

// A segment of its own holding `count` int64 objects.
struct FilledSegment {
  OwnSegment own;
  shmstate::Segment* segment = &own.get();
  std::uint64_t objects = 0;

  // size 0: room for max_objects small objects and 1 MiB more.
  FilledSegment(std::uint32_t max_objects, std::uint32_t count, std::uint64_t size = 0)
      : own(shmstate::SegmentOptions{
            .size = size != 0 ? size : (std::uint64_t{max_objects} + 16) * 512 + (1 << 20),
            .max_objects = max_objects}) {
    const auto& n = names(count);
    for (std::uint32_t i = 0; i < count; ++i) segment->atomic<std::int64_t>(n[i], i);
    objects = count;
  }
};

// Candidate: creations in a registry of 60,000..65,000 objects; baseline: in
// one of 100..500. One creation: Segment::atomic<int64_t> of a new name
// (lookup miss, registry mutex, entry, index slot, state, the handle).
Bodies create_bodies() {
  struct Side {
    std::uint32_t max_objects, fill, window;
    std::unique_ptr<FilledSegment> seg;
  };
  auto large = std::make_shared<Side>(Side{65536, kLarge, 5000, nullptr});
  auto small = std::make_shared<Side>(Side{kSmall + 2 * kCreatesPerRound + 64, kSmall, 2 * kCreatesPerRound, nullptr});
  auto body = [](const std::shared_ptr<Side>& side) -> Body {
    return [side](std::uint64_t n) {
      std::uint64_t acc = 0;
      FilledSegment& f = *side->seg;
      const auto& v = names(f.objects + n);
      for (std::uint64_t i = 0; i < n; ++i)
        acc += static_cast<std::uint64_t>(f.segment->atomic<std::int64_t>(v[f.objects++], 1).get());
      return acc;
    };
  };
  Bodies b{body(large), body(small)};
  b.prepare = [large, small](bool candidate, std::uint64_t n) {
    Side& side = candidate ? *large : *small;
    if (!side.seg || side.seg->objects + n > std::uint64_t{side.fill} + side.window) {
      side.seg.reset();
      side.seg = std::make_unique<FilledSegment>(side.max_objects, side.fill);
    }
    names(side.seg->objects + n);  // made here, untimed
  };
  return b;
}

// One lookup: Segment::open_atomic<int64_t> (validation, index probe, entry
// name compare, kind check, the handle) and a get() of the value.
std::uint64_t open_and_get(const shmstate::Segment& seg, const std::string& name) {
  return static_cast<std::uint64_t>(seg.open_atomic<std::int64_t>(name).get());
}

// `n` lookups of (segment, name) pairs in `order`, going on where the last
// call stopped.
struct Lookups {
  std::vector<std::shared_ptr<FilledSegment>> segments;
  std::vector<std::pair<std::uint32_t, std::string>> order;  // shuffled; names inline, iterated in order
  std::size_t next = 0;
};
Body lookups_body(std::shared_ptr<Lookups> l) {
  std::shuffle(l->order.begin(), l->order.end(), std::mt19937(42));
  return [l](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto& [seg, name] = l->order[l->next];
      acc += open_and_get(*l->segments[seg]->segment, name);
      if (++l->next == l->order.size()) l->next = 0;
    }
    return acc;
  };
}

// Every object of `segments` registries of `count` objects each, looked up in
// a shuffled order.
Body lookup_body(std::uint32_t segments, std::uint32_t count) {
  auto l = std::make_shared<Lookups>();
  for (std::uint32_t s = 0; s < segments; ++s) {
    l->segments.push_back(count < 1000 ? std::make_shared<FilledSegment>(128, count, 256 << 10)
                                       : std::make_shared<FilledSegment>(65536, count));
    for (std::uint32_t i = 0; i < count; ++i) l->order.emplace_back(s, names(count)[i]);
  }
  return lookups_body(std::move(l));
}

// Candidate: lookups of the 60,000 objects of one registry, in a shuffled
// order; baseline: of the 100 of a 100-object registry. Issue 6's row. At
// 60,000 objects the registry (7.5 MB of entries, the index, the states) is
// far larger than the caches, so in a random order nearly every lookup
// misses them a few times (index slot, entry, state): this ratio measures
// the memory hierarchy as much as the registry.
Bodies lookup_bodies() { return {lookup_body(1, kLarge), lookup_body(1, kSmall)}; }

// The same candidate; baseline: lookups spread over 600 registries of 100
// objects each (60,000 objects in all, shuffled): the same memory footprint,
// so the ratio is what a 600 times bigger registry costs by itself.
Bodies lookup_footprint_bodies() { return {lookup_body(1, kLarge), lookup_body(kLarge / kSmall, kSmall)}; }

// Candidate: inspect::dump_text of 60,000 objects (what `shmstate dump`
// prints); baseline: Segment::objects() of the same registry (one scan).
Bodies dump_bodies() {
  auto seg = std::make_shared<FilledSegment>(65536, kLarge);
  Body candidate = [seg](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += shmstate::inspect::dump_text(*seg->segment).size();
    return acc;
  };
  Body baseline = [seg](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += seg->segment->objects().size();
    return acc;
  };
  return {std::move(candidate), std::move(baseline)};
}

}  // namespace

void registry_rows(std::vector<Case>& cases) {
  Case create{"Segment::atomic (create) at 60000 objects", "the same at 100 objects", 1, Target{2.0, std::nullopt},
              [](Fixture&) { return create_bodies(); }};
  create.max_ops = kCreatesPerRound;
  cases.push_back(std::move(create));
  cases.push_back(Case{"Segment::open_atomic (lookup) at 60000 objects", "the same at 100 objects", 1,
                       Target{2.0, std::nullopt}, [](Fixture&) { return lookup_bodies(); }});
  cases.push_back(Case{"Segment::open_atomic (lookup) at 60000 objects, same footprint",
                       "the same in 600 registries of 100", 1, Target{2.0, std::nullopt},
                       [](Fixture&) { return lookup_footprint_bodies(); }});
  // Issue 6: dump of 60,000 objects under 1 s (ns/op here is ns per dump;
  // two dumps a round at most: one takes ~0.1 s).
  Case dump{"dump 60000 objects (inspect::dump_text)", "Segment::objects() of the same 60000", 1,
            Target{std::nullopt, 1e9}, [](Fixture&) { return dump_bodies(); }};
  dump.max_ops = 2;
  cases.push_back(std::move(dump));
}

}  // namespace shmstate_bench
