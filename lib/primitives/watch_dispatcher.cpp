// The per-process thread that delivers other processes' atom changes to this
// process's watches. It sleeps on the event counts of every watched atom at
// once (futex_wait_any: one futex_waitv up to 128 words, helper threads for
// the words beyond, issue 13) plus a process-local "epoch" word that is
// bumped when the watched set changes or a writer asks for a re-check.
//
// While nothing changes it sleeps: one timed re-check per kQuietSlice, which
// bounds how late a change is delivered whose notifier was killed between
// publishing it and waking (the wake never comes). When a watched word lies
// in a read-only mapping (no sleeper bit can be set there, so no notifier
// wakes for it) it re-checks every kWaitSlice, as other waiters there do.
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
#endif

struct Dispatcher {
  explicit Dispatcher(pid_t p) : pid(p) {}
  pid_t pid;
  std::mutex mu;
  std::vector<std::shared_ptr<AtomCore>> watched;
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

void run(Dispatcher* d) {
  std::vector<std::shared_ptr<AtomCore>> cores;
  std::vector<const std::atomic<std::uint32_t>*> words;
  std::vector<std::uint32_t> seen;
  std::vector<std::shared_ptr<DispatchSource>> sources;
  WaitSet ws;
  for (;;) {
#if SHMSTATE_TEST_HOOKS
    g_dispatcher_passes.fetch_add(1, std::memory_order_relaxed);
#endif
    std::uint32_t epoch = d->epoch.load(std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> g(d->mu);
      cores = d->watched;
      sources = d->sources;
    }
    words.assign(1, &d->epoch);
    seen.assign(1, epoch);
    // Arm each event count (read its sequence, set the sleeper bit) before
    // checking its atom: a change after the check moves the sequence, so the
    // wait below returns at once. Re-armed every pass, as the notifier
    // clears the bit: a dead dispatcher leaves nothing set for long.
    for (auto& c : cores) {
      words.push_back(&c->changes().seq);
      seen.push_back(c->changes().arm());
    }
    for (auto& c : cores) {
      try {
        c->deliver_foreign();
      } catch (...) {
        // A damaged atom must not stop deliveries for the others.
      }
    }
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
    bool read_only = std::any_of(words.begin(), words.end(), [](auto* w) { return platform::is_read_only(w); });
    platform::futex_wait_any(words.data(), seen.data(), static_cast<unsigned>(words.size()),
                             read_only ? std::chrono::nanoseconds(kWaitSlice) : std::chrono::nanoseconds(kQuietSlice));
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
    // Its sleeper bit, if set, is cleared by the atom's next notify.
    d.watched.erase(it);
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
#endif
