// bench rows of watches on many atoms (issue 13): each candidate beside its
// baseline (harness.hpp).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>

#include "harness.hpp"
#include "platform/futex.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {

using namespace std::chrono_literals;
namespace platform = shmstate::platform;

// change -> watch latency with `watched` atoms watched by each side. This
// process watches "pong" and a helper process watches "ping", each beside
// watched - 1 atoms that nobody changes (the same ones on both sides), added
// first. Each dispatcher sleeps on the segment's watch summary (one word);
// a change wakes it once, and it visits the watched atoms of the changed
// atom's bucket (with 1,000 atoms about 16, the changed one last: the others
// cost two loads each, only the changed one is read). An op is
// a round trip of two changes, each seen by the other process's watch, like
// the raw futex round trip it is compared with: the body resets ping; the
// helper's watch on ping resets pong; this process's watch on pong resets
// ping again, on its dispatcher thread, until n round trips are done and it
// wakes the body (one in-process wake per call, not per op).
struct alignas(64) Control {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> done{0};
  std::atomic<std::uint64_t> left{0};  // round trips still to do
};

struct WatchPingPong {
  std::unique_ptr<OwnSegment> segment;
  SharedPages page{4096};
  Control* c = new (page.get()) Control();
  std::vector<shmstate::Atom> watched;  // this process's, pong last
  std::optional<shmstate::Atom> ping;
  std::unique_ptr<HelperProcess> helper;

  explicit WatchPingPong(int count) {
    shmstate::SegmentOptions o;
    o.size = 8u << 20;
    o.max_objects = static_cast<std::uint32_t>(count) + 16;
    segment = std::make_unique<OwnSegment>(o);
    auto& seg = segment->get();
    const boost::json::value zero = 0;
    for (int i = 0; i < count - 1; ++i) seg.atom("idle." + std::to_string(i), zero);
    ping = seg.atom("ping", zero);
    seg.atom("pong", zero);
    Control* ctl = c;
    std::string name = seg.name();
    helper = std::make_unique<HelperProcess>([ctl, name, count] {
      auto seg = shmstate::Segment::open(name);
      std::vector<shmstate::Atom> mine;
      for (int i = 0; i < count - 1; ++i) {
        mine.push_back(seg.open_atom("idle." + std::to_string(i)));
        mine.back().add_watch("bench", [](const shmstate::WatchEvent&) {});
      }
      auto pong = seg.open_atom("pong");
      std::int64_t k = 0;
      mine.push_back(seg.open_atom("ping"));
      mine.back().add_watch("bench", [pong, &k](const shmstate::WatchEvent&) mutable { pong.reset(++k); });
      ctl->ready.store(1);
      for (;;) std::this_thread::sleep_for(1h);  // killed with the row
    });
    for (int i = 0; i < count - 1; ++i) {
      watched.push_back(seg.open_atom("idle." + std::to_string(i)));
      watched.back().add_watch("bench", [](const shmstate::WatchEvent&) {});
    }
    watched.push_back(seg.open_atom("pong"));
    shmstate::Atom p = *ping;
    watched.back().add_watch("bench", [ctl, p](const shmstate::WatchEvent&) mutable {
      if (ctl->left.fetch_sub(1, std::memory_order_acq_rel) > 1) {
        p.reset(static_cast<std::int64_t>(ctl->left.load(std::memory_order_relaxed)));
      } else {
        ctl->done.store(1, std::memory_order_release);
        platform::futex_wake(ctl->done, 1);
      }
    });
    while (c->ready.load() == 0) std::this_thread::sleep_for(100us);
    std::this_thread::sleep_for(20ms);  // both dispatchers asleep on every word
  }

  ~WatchPingPong() {
    helper.reset();
    for (auto& a : watched) a.remove_watch("bench");
  }

  std::uint64_t run(std::uint64_t n) {
    c->done.store(0, std::memory_order_relaxed);
    c->left.store(n, std::memory_order_release);
    ping->reset(-1);
    while (c->done.load(std::memory_order_acquire) == 0) platform::futex_wait(c->done, 0, 1s);
    return n;
  }
};

Bodies watch_bodies(int count) {
  auto pp = std::make_shared<WatchPingPong>(count);
  auto futex = std::make_shared<FutexRoundTrip>();
  Body candidate = [pp](std::uint64_t n) { return pp->run(n); };
  Body baseline = [futex](std::uint64_t n) { return futex->run(n); };
  return {std::move(candidate), std::move(baseline)};
}

}  // namespace

void watch_rows(std::vector<Case>& cases) {
  // Issue 13, "Bench rows": change -> watch latency with 10 and with 1,000
  // watched atoms, each against a raw futex wake round trip measured in the
  // same run: target <= 2x for both.
  for (int count : {10, 1000}) {
    std::string n = count == 10 ? "10" : "1,000";
    Case c{
        "Atom change -> watch runs round trip (twice), " + n + " watched atoms 2 procs",
        "raw futex wake round trip (FUTEX_WAKE -> FUTEX_WAIT returns, twice) 2 procs",
        1,
        Target{2.0, std::nullopt},
        [count](Fixture&) { return watch_bodies(count); },
    };
    c.wall_time = true;
    cases.push_back(std::move(c));
  }
}

}  // namespace shmstate_bench
