// The per-process thread that delivers other processes' atom changes to this
// process's watches. It sleeps on each watched segment's watch summary (one
// word per segment, whatever the number of watched atoms: layout.hpp,
// WatchSummary; the protocol is in event_count.hpp, at kWatchBit) plus a
// process-local "epoch" word that is bumped when the watched set changes or
// a writer asks for a re-check. A wake-up reads the counters of the buckets
// that hold an atom it watches and visits only the watched atoms of those
// whose counters moved (O(buckets + changed), not O(watched)), re-arming
// each (kWatchBit) before checking it. The check of an unchanged atom is
// two loads (its published version against the one delivered last): no
// lock, no read, no JSON; only changed atoms are read and delivered.
//
// A full pass (every watched atom armed and checked) runs when the watched
// set changed, on a poke, and at least once per kQuietSlice: that bounds how
// late a change is delivered whose notifier was killed between publishing it
// and bumping the summary (the wake never comes). While nothing changes it
// sleeps until then. A segment mapped read-only cannot be armed (no bit can
// be set there, so no notifier wakes for it): its atoms are all checked every
// pass and the dispatcher re-checks every kWaitSlice, as other waiters there
// do. Up to 127 segments take one futex_waitv; beyond, futex_wait_any's
// helper threads sleep on the rest (futex.cpp).
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "platform/process.hpp"
#include "platform/futex.hpp"
#include "platform/read_only.hpp"
#include "primitives/atom_core.hpp"
#include "primitives/condition.hpp"

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

namespace shmstate::detail {

namespace {

constexpr std::chrono::seconds kQuietSlice{1};

#if SHMSTATE_TEST_HOOKS
std::atomic<std::uint64_t> g_dispatcher_passes{0};
std::atomic<std::uint64_t> g_dispatcher_visits{0};
std::atomic<std::uint64_t> g_dispatcher_reads{0};
#endif

struct Dispatcher {
  explicit Dispatcher(pid_t p) : pid(p) {}
  pid_t pid;
  std::mutex mu;
  std::vector<std::shared_ptr<AtomCore>> watched;
  std::uint64_t generation = 0;  // of `watched`: bumped by every change to it
  // Other sources (segment signals' then-callbacks), dropped once delivered.
  std::vector<std::shared_ptr<DispatchSource>> sources;
  std::atomic<std::uint32_t> epoch{0};
  bool started = false;
};

// One per process. After fork() the child's copy may hold a mutex locked by a
// thread that does not exist there, so a child makes a fresh one (and leaks
// the copy). Never destroyed: the thread may outlive static destruction.
Dispatcher& dispatcher() {
  static std::atomic<Dispatcher*> current{nullptr};
  pid_t self = platform::current_pid();
  Dispatcher* d = current.load(std::memory_order_acquire);
  while (d == nullptr || d->pid != self) {
    auto* fresh = new Dispatcher(self);
    if (current.compare_exchange_strong(d, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread installed one; d now holds it
  }
  return *d;
}

// The watched atoms of one segment, by bucket, and the bucket counters as
// this dispatcher last saw them.
struct SegmentWatch {
  SegmentImpl* segment = nullptr;
  WatchSummary* summary = nullptr;
  bool read_only = false;
  std::vector<AtomCore*> buckets[kWatchBuckets];
  std::uint32_t seen[kWatchBuckets] = {};
  // The buckets that hold a watched atom, ascending: the only counters a
  // pass reads (with 10 watched atoms, 10 loads, not 64).
  std::vector<unsigned> used;
};

void visit(AtomCore* c) noexcept {
#if SHMSTATE_TEST_HOOKS
  g_dispatcher_visits.fetch_add(1, std::memory_order_relaxed);
#endif
  // Arm before checking: a change after the check finds the bit and bumps
  // the bucket (event_count.hpp, kWatchBit).
  c->changes().arm(EventCount::kWatchBit);
  try {
    [[maybe_unused]] bool read = c->deliver_foreign();
#if SHMSTATE_TEST_HOOKS
    if (read) g_dispatcher_reads.fetch_add(1, std::memory_order_relaxed);
#endif
  } catch (...) {
    // A damaged atom must not stop deliveries for the others.
  }
}

void run(Dispatcher* d) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::shared_ptr<AtomCore>> cores;  // keeps the cores of `groups` alive
  std::vector<std::unique_ptr<SegmentWatch>> groups;
  std::uint64_t generation = ~std::uint64_t{0};
  std::uint32_t last_epoch = 0;
  Clock::time_point last_full{};
  std::vector<const std::atomic<std::uint32_t>*> words;
  std::vector<std::uint32_t> seen;
  std::vector<std::shared_ptr<DispatchSource>> sources;
  WaitSet ws;
  bool full = true;
  for (;;) {
#if SHMSTATE_TEST_HOOKS
    g_dispatcher_passes.fetch_add(1, std::memory_order_relaxed);
#endif
    std::uint32_t epoch = d->epoch.load(std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> g(d->mu);
      if (d->generation != generation) {
        generation = d->generation;
        cores = d->watched;
        groups.clear();
        for (auto& c : cores) {
          SegmentImpl* seg = &c->segment();
          auto it = std::find_if(groups.begin(), groups.end(), [&](auto& g) { return g->segment == seg; });
          if (it == groups.end()) {
            auto g = std::make_unique<SegmentWatch>();
            g->segment = seg;
            g->summary = &seg->header->watch;
            g->read_only = seg->read_only || platform::is_read_only(&seg->header->watch.changes);
            groups.push_back(std::move(g));
            it = groups.end() - 1;
          }
          (*it)->buckets[watch_bucket(c->state_offset())].push_back(c.get());
        }
        for (auto& g : groups)
          for (unsigned b = 0; b < kWatchBuckets; ++b)
            if (!g->buckets[b].empty()) g->used.push_back(b);
        full = true;
      }
      sources = d->sources;
    }
    if (epoch != last_epoch) full = true;  // a poke: re-check everything
    last_epoch = epoch;
    auto now = Clock::now();
    if (now - last_full >= kQuietSlice) full = true;
    if (full) last_full = now;
    words.assign(1, &d->epoch);
    seen.assign(1, epoch);
    bool read_only = false;
    for (auto& g : groups) {
      // Arm the summary first, then read the counters (event_count.hpp).
      words.push_back(&g->summary->changes.seq);
      seen.push_back(g->summary->changes.arm());
      bool all = full || g->read_only;
      read_only = read_only || g->read_only;
      for (unsigned b : g->used) {
        std::uint32_t count = g->summary->buckets[b].load(std::memory_order_seq_cst);
        if (!all && count == g->seen[b]) continue;
        g->seen[b] = count;
        for (AtomCore* c : g->buckets[b]) visit(c);
      }
    }
    full = false;
    ws.clear();
    for (auto& src : sources) src->arm(ws);
    for (std::size_t i = 0; i < ws.words.size(); ++i) {
      words.push_back(ws.words[i]);
      seen.push_back(ws.expected[i]);
    }
    std::vector<DispatchSource*> done;
    for (auto& src : sources) {
      try {
        if (src->deliver()) done.push_back(src.get());
      } catch (...) {
        done.push_back(src.get());  // a damaged signal: stop watching it
      }
    }
    if (!done.empty()) {
      std::lock_guard<std::mutex> g(d->mu);
      std::erase_if(d->sources, [&](auto& s) { return std::find(done.begin(), done.end(), s.get()) != done.end(); });
      continue;
    }
    // A word that moved already (a watch of this pass wrote a watched atom,
    // say): the next pass at once, without a system call.
    bool moved = false;
    for (std::size_t i = 0; i < words.size() && !moved; ++i)
      moved = words[i]->load(std::memory_order_seq_cst) != seen[i];
    if (moved) continue;
    for (std::size_t i = 1; i < words.size() && !read_only; ++i) read_only = platform::is_read_only(words[i]);
    // From the pass's start (one clock read per pass): the full pass comes at
    // most one pass late.
    auto until_full = std::chrono::duration_cast<std::chrono::nanoseconds>(last_full + kQuietSlice - now);
    auto slice = read_only ? std::min<std::chrono::nanoseconds>(kWaitSlice, until_full) : until_full;
    if (slice <= std::chrono::nanoseconds::zero()) continue;
    platform::futex_wait_any(words.data(), seen.data(), static_cast<unsigned>(words.size()), slice);
  }
}

void bump(Dispatcher& d) noexcept {
  d.epoch.fetch_add(1, std::memory_order_seq_cst);
  platform::futex_wake(d.epoch, 1);
}

}  // namespace

void dispatcher_watch(std::shared_ptr<AtomCore> core) {
  Dispatcher& d = dispatcher();
  {
    std::lock_guard<std::mutex> g(d.mu);
    if (!d.started) {  // first: if the thread cannot start, nothing is registered
      std::thread(run, &d).detach();
      d.started = true;
    }
    if (std::none_of(d.watched.begin(), d.watched.end(), [&](auto& c) { return c == core; })) {
      // The dispatcher arms the atom's event count on its next pass (the
      // bump below makes it run one).
      d.watched.push_back(std::move(core));
      ++d.generation;
    }
  }
  bump(d);
}

void dispatcher_unwatch(const AtomCore* core) {
  Dispatcher& d = dispatcher();
  {
    std::lock_guard<std::mutex> g(d.mu);
    auto it = std::find_if(d.watched.begin(), d.watched.end(), [&](auto& c) { return c.get() == core; });
    if (it == d.watched.end()) return;
    // Its kWatchBit, if set, is cleared by the atom's next notify.
    d.watched.erase(it);
    ++d.generation;
  }
  bump(d);
}

void dispatcher_watch_source(std::shared_ptr<DispatchSource> source) {
  Dispatcher& d = dispatcher();
  {
    std::lock_guard<std::mutex> g(d.mu);
    if (!d.started) {
      std::thread(run, &d).detach();
      d.started = true;
    }
    d.sources.push_back(std::move(source));
  }
  bump(d);
}

void dispatcher_poke() noexcept { bump(dispatcher()); }

}  // namespace shmstate::detail

#if SHMSTATE_TEST_HOOKS
std::uint64_t shmstate::testing::dispatcher_pass_count() noexcept {
  return shmstate::detail::g_dispatcher_passes.load(std::memory_order_relaxed);
}
std::uint64_t shmstate::testing::dispatcher_visit_count() noexcept {
  return shmstate::detail::g_dispatcher_visits.load(std::memory_order_relaxed);
}
std::uint64_t shmstate::testing::dispatcher_read_count() noexcept {
  return shmstate::detail::g_dispatcher_reads.load(std::memory_order_relaxed);
}
#endif
