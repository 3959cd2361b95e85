// bench rows of FifoLock (issue 8): each candidate beside its baseline
// (harness.hpp). Baselines live in anonymous shared memory: a robust,
// process-shared pthread mutex, a FIFO ticket lock on a futex (below), and a
// raw futex ping-pong.
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <shmstate/fifo_lock.hpp>

#include "harness.hpp"
#include "platform/futex.hpp"
#include "primitives/fifo_lock.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {

using namespace std::chrono_literals;
namespace platform = shmstate::platform;

// A robust (PTHREAD_MUTEX_ROBUST), process-shared pthread mutex in shared
// memory: what shmstate's FifoLock replaces. EOWNERDEAD is made consistent
// (no process dies in these rows; the branch is there as it would be in use).
struct RobustMutex {
  pthread_mutex_t m;
  void init() {
    pthread_mutexattr_t a;
    ::pthread_mutexattr_init(&a);
    ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    ::pthread_mutex_init(&m, &a);
    ::pthread_mutexattr_destroy(&a);
  }
  void lock() {
    if (::pthread_mutex_lock(&m) == EOWNERDEAD) ::pthread_mutex_consistent(&m);
  }
  void unlock() { ::pthread_mutex_unlock(&m); }
};

// A FIFO ticket lock on a futex: take a ticket, sleep until it is served.
// Release serves the next ticket and wakes the sleepers (all of them: each
// re-checks whether it is its turn; with 2 to 4 processes the herd is small).
// Not robust: a holder that dies blocks it forever.
struct alignas(64) TicketLock {
  std::atomic<std::uint32_t> next{0};
  std::atomic<std::uint32_t> serving{0};
  std::atomic<std::uint32_t> sleepers{0};
  void lock() {
    std::uint32_t t = next.fetch_add(1, std::memory_order_relaxed);
    for (int spin = 0; spin < 100; ++spin)
      if (serving.load(std::memory_order_acquire) == t) return;
    for (;;) {
      std::uint32_t s = serving.load(std::memory_order_acquire);
      if (s == t) return;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      if (serving.load(std::memory_order_seq_cst) == s) platform::futex_wait(serving, s, 100ms);
      sleepers.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  void unlock() {
    serving.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) platform::futex_wake(serving, INT_MAX);
  }
};

template <class T>
std::pair<std::shared_ptr<SharedPages>, T*> in_shared_memory() {
  auto page = std::make_shared<SharedPages>(4096);
  return {page, new (page->get()) T()};
}

// What a critical section of the "with work" rows does: a read-modify-write
// of four cache lines of shared data (they move between the processes, as
// protected data does) and `iters` rounds of arithmetic (about 1 ns each).
struct alignas(64) Protected {
  std::uint64_t words[32];
};
inline void critical_section(Protected* data, int iters) noexcept {
  if (data == nullptr) return;
  std::uint64_t x = data->words[0];
  for (int i = 0; i < iters; ++i) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    asm volatile("" : "+r"(x));
  }
  for (int i = 0; i < 32; i += 8) data->words[i] += x;
}

Body fifo_lock_body(shmstate::FifoLock lock, Protected* data, int iters) {
  return [lock, data, iters](std::uint64_t n) mutable {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      auto g = lock.acquire();
      critical_section(data, iters);
      acc += g.token() & 1u;
    }
    return acc;
  };
}

template <class Lock>
Body lock_body(Lock* l, Protected* data, int iters) {
  return [l, data, iters](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      l->lock();
      critical_section(data, iters);
      l->unlock();
    }
    return n;
  };
}

enum class Against { Mutex, Ticket };
// The candidate is FifoLock, or (reference rows) the ticket lock itself.
enum class Candidate { FifoLock, Ticket };

// `iters` < 0: an empty critical section (no shared data touched).
Bodies lock_bodies(Fixture& f, const std::string& object_name, Against against, int iters = -1,
                   Candidate candidate = Candidate::FifoLock) {
  struct Shared {
    RobustMutex mutex;
    TicketLock ticket;
    Protected data;
  };
  auto [page, sh] = in_shared_memory<Shared>();
  sh->mutex.init();
  Protected* data = iters < 0 ? nullptr : &sh->data;
  Bodies b;
  if (candidate == Candidate::Ticket)
    b.candidate = lock_body(&sh->ticket, data, iters);
  else
    b.candidate = fifo_lock_body(f.segment.fifo_lock(object_name, shmstate::LockModes::exclusive()), data, iters);
  b.baseline = against == Against::Ticket ? lock_body(&sh->ticket, data, iters) : lock_body(&sh->mutex, data, iters);
  // The page lives as long as either body.
  b.candidate = [page = page, body = std::move(b.candidate)](std::uint64_t n) { return body(n); };
  return b;
}

// Handover latency. A helper process loops acquire+release while the
// candidate runs, and each side releases only once the other is queued (a
// lock released while nobody waits is simply idle, and the releaser's next
// acquire takes the uncontended fast path: no handover). With strict FIFO
// each release then grants the other side, so every operation of this
// process's loop is a round trip of two handovers (release here -> acquire
// returns there, and back). The baseline is the same round trip through a raw futex word (set,
// FUTEX_WAKE, FUTEX_WAIT for the answer): two wakes. The helper sleeps on a
// phase word while the other side runs.
struct alignas(64) PingPong {
  std::atomic<std::uint32_t> phase{0};  // 0 idle, 1 lock, 2 futex
  std::atomic<std::uint32_t> turn{0};   // futex ping-pong: 1 = helper's turn
};

// A request of another process is queued on the lock.
bool someone_queued(const shmstate::FifoLock& lock) {
  return shmstate::detail::queued_count(shmstate::detail::FifoLockAccess::handle(lock)->s) != 0;
}

Bodies handover_bodies(Fixture& f, const std::string& object_name) {
  auto lock = f.segment.fifo_lock(object_name, shmstate::LockModes::exclusive());
  auto [page, pp] = in_shared_memory<PingPong>();
  auto helper = std::make_shared<HelperProcess>([lock, pp = pp]() mutable {
    for (;;) {
      std::uint32_t p = pp->phase.load(std::memory_order_acquire);
      if (p == 0) {
        platform::futex_wait(pp->phase, 0, 100ms);
      } else if (p == 1) {
        auto g = lock.acquire();
        while (!someone_queued(lock) && pp->phase.load(std::memory_order_acquire) == 1) {
        }
      } else {
        if (pp->turn.load(std::memory_order_acquire) != 1) {
          platform::futex_wait(pp->turn, 0, 10ms);
          continue;
        }
        pp->turn.store(0, std::memory_order_release);
        platform::futex_wake(pp->turn, 1);
      }
    }
  });
  auto start = [pp = pp](std::uint32_t phase) {
    pp->phase.store(phase, std::memory_order_release);
    platform::futex_wake(pp->phase, 1);
  };
  Body candidate = [lock, page = page, pp = pp, helper, start](std::uint64_t n) mutable {
    start(1);
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      auto g = lock.acquire();
      acc += g.token() & 1u;
      while (!someone_queued(lock)) {
      }
    }
    pp->phase.store(0, std::memory_order_release);
    return acc;
  };
  Body baseline = [page = page, pp = pp, helper, start](std::uint64_t n) {
    start(2);
    for (std::uint64_t i = 0; i < n; ++i) {
      pp->turn.store(1, std::memory_order_release);
      platform::futex_wake(pp->turn, 1);
      while (pp->turn.load(std::memory_order_acquire) != 0) platform::futex_wait(pp->turn, 1, 10ms);
    }
    pp->phase.store(0, std::memory_order_release);
    return n;
  };
  return {std::move(candidate), std::move(baseline)};
}

// Fairness and the longest wait: `procs` forked processes (unpinned) take
// the lock in a loop for a window, each counting its acquisitions and its
// longest acquire (call to return, CLOCK_MONOTONIC). Returns max/min of the
// counts and the longest wait of all. The hold is empty, as in the
// throughput rows.
struct Contention {
  double share = 0;         // max/min acquisitions per process
  double longest_ns = 0;    // the longest single acquire
  double idle_pct = 0;      // % of acquisitions that found the lock idle
  double waited_share = 0;  // max/min acquisitions per process that did not find it idle
};

template <class Lock, class Unlock>
Contention contend(int procs, std::int64_t window_ns, Lock lock, Unlock unlock) {
  struct alignas(64) Slot {
    std::uint64_t count;
    std::uint64_t idle;  // acquisitions that found the lock idle
    std::int64_t longest;
  };
  struct Control {
    std::atomic<std::int64_t> start_ns;
    Slot slots[8];
  };
  SharedPages page(sizeof(Control));
  auto* c = new (page.get()) Control();
  std::vector<pid_t> kids;
  std::fflush(nullptr);
  for (int i = 0; i < procs; ++i) {
    pid_t pid = ::fork();
    if (pid < 0) throw_errno(errno, "fork");
    if (pid == 0) {
      std::int64_t start;
      while ((start = c->start_ns.load(std::memory_order_acquire)) == 0) {
      }
      while (now_ns() < start) {
      }
      std::uint64_t count = 0, idle = 0;
      std::int64_t longest = 0;
      for (;;) {
        std::int64_t t0 = now_ns();
        if (t0 >= start + window_ns) break;
        bool was_idle = lock();
        std::int64_t t1 = now_ns();
        unlock();
        ++count;
        idle += was_idle ? 1 : 0;
        longest = std::max(longest, t1 - t0);
      }
      c->slots[i].count = count;
      c->slots[i].idle = idle;
      c->slots[i].longest = longest;
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  c->start_ns.store(now_ns() + 20'000'000, std::memory_order_release);
  for (pid_t k : kids)
    while (::waitpid(k, nullptr, 0) < 0 && errno == EINTR) {
    }
  Contention r;
  std::uint64_t lo = ~std::uint64_t{0}, hi = 0, wlo = ~std::uint64_t{0}, whi = 0, all = 0, idle = 0;
  for (int i = 0; i < procs; ++i) {
    const auto& sl = c->slots[i];
    lo = std::min(lo, sl.count);
    hi = std::max(hi, sl.count);
    wlo = std::min(wlo, sl.count - sl.idle);
    whi = std::max(whi, sl.count - sl.idle);
    all += sl.count;
    idle += sl.idle;
    r.longest_ns = std::max(r.longest_ns, static_cast<double>(sl.longest));
  }
  r.share = lo == 0 ? 1e9 : static_cast<double>(hi) / static_cast<double>(lo);
  r.waited_share = wlo == 0 ? 1e9 : static_cast<double>(whi) / static_cast<double>(wlo);
  r.idle_pct = all == 0 ? 0 : 100.0 * static_cast<double>(idle) / static_cast<double>(all);
  return r;
}

// One measurement feeds both rows of a process count (share, longest wait):
// FifoLock and the robust pthread mutex in turn, 3 windows each (1 s each;
// 0.1 s with --quick), the median window of each.
struct FairnessFigures {
  Contention fifo, mutex;
};

FairnessFigures fairness(Fixture& f, int procs, bool quick) {
  auto lock = f.segment.fifo_lock("bench.fifo.fair" + std::to_string(procs), shmstate::LockModes::exclusive());
  auto [page, mutex] = in_shared_memory<RobustMutex>();
  RobustMutex* m = mutex;  // clang 14 cannot capture a structured binding
  m->init();
  const std::int64_t window = quick ? 100'000'000 : 1'000'000'000;
  std::vector<Contention> a, b;
  std::optional<shmstate::FifoLock::Guard> held;
  // "Found the lock idle": FifoLock's uncontended fast path (the hold is in
  // the lock's fast word, with this grant's token); for the mutex, a
  // trylock that succeeded before lock() had to be called.
  auto* st = shmstate::detail::FifoLockAccess::handle(lock)->s;
  for (int i = 0; i < 3; ++i) {
    a.push_back(contend(
        procs, window,
        [&] {
          held.emplace(lock.acquire());
          return (st->fast.word.load(std::memory_order_relaxed) & shmstate::detail::kFastHeld) != 0 &&
                 std::atomic_ref<std::uint64_t>(st->fast.token).load(std::memory_order_relaxed) == held->token();
        },
        [&] { held.reset(); }));
    b.push_back(contend(
        procs, window,
        [&] {
          if (::pthread_mutex_trylock(&m->m) == 0) return true;
          m->lock();
          return false;
        },
        [&] { m->unlock(); }));
  }
  auto mid = [](std::vector<Contention> v, double Contention::*field) {
    std::vector<double> x;
    for (auto& c : v) x.push_back(c.*field);
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  FairnessFigures out;
  out.fifo = {mid(a, &Contention::share), mid(a, &Contention::longest_ns), mid(a, &Contention::idle_pct),
              mid(a, &Contention::waited_share)};
  out.mutex = {mid(b, &Contention::share), mid(b, &Contention::longest_ns), mid(b, &Contention::idle_pct),
               mid(b, &Contention::waited_share)};
  return out;
}

}  // namespace

void fifo_lock_rows(std::vector<Case>& cases) {
  // Issue 8, "Benchmark": uncontended exclusive acquire+release vs a robust
  // pthread mutex lock+unlock: target <= 2x.
  // At most 100,000 operations a round: the rounds are calibrated on the
  // (much faster) baseline.
  Case uncontended{
      "FifoLock exclusive acquire+release uncontended 1 proc",
      "robust pshared pthread_mutex lock+unlock 1 proc",
      1,
      Target{2.0, std::nullopt},
      [](Fixture& f) { return lock_bodies(f, "bench.fifo.1", Against::Mutex); },
  };
  uncontended.max_ops = 100'000;
  cases.push_back(std::move(uncontended));
  // Contended: ns/op is the inverse of the throughput of all processes
  // together; target >= 0.5x the pthread mutex's throughput (ratio <= 2).
  // The ticket lock rows compare with another strictly FIFO lock (no target).
  for (int procs : {2, 4}) {
    std::string p = " " + std::to_string(procs) + " procs";
    cases.push_back(Case{
        "FifoLock exclusive acquire+release contended" + p,
        "robust pshared pthread_mutex lock+unlock" + p,
        procs,
        Target{2.0, std::nullopt},
        [procs](Fixture& f) { return lock_bodies(f, "bench.fifo.m" + std::to_string(procs), Against::Mutex); },
    });
    cases.push_back(Case{
        "FifoLock exclusive acquire+release contended (vs ticket lock)" + p,
        "FIFO futex ticket lock lock+unlock" + p,
        procs,
        Target{},
        [procs](Fixture& f) { return lock_bodies(f, "bench.fifo.t" + std::to_string(procs), Against::Ticket); },
    });
    // Reference (no target): the ticket lock itself against the mutex, the
    // throughput a strictly FIFO lock with no bookkeeping at all reaches.
    cases.push_back(Case{
        "FIFO futex ticket lock (reference, not shmstate) contended" + p,
        "robust pshared pthread_mutex lock+unlock" + p,
        procs,
        Target{},
        [procs](Fixture& f) {
          return lock_bodies(f, "bench.fifo.r" + std::to_string(procs), Against::Mutex, -1, Candidate::Ticket);
        },
    });
    // A critical section that does something (four shared cache lines and
    // ~200 ns of arithmetic): where the lock's handover is not all there is.
    cases.push_back(Case{
        "FifoLock exclusive contended, ~200 ns critical section on 4 shared lines" + p,
        "robust pshared pthread_mutex, the same critical section" + p,
        procs,
        Target{},
        [procs](Fixture& f) { return lock_bodies(f, "bench.fifo.w" + std::to_string(procs), Against::Mutex, 200); },
    });
  }
  // Fairness (target: max/min share <= 1.05) and the longest wait, from one
  // measurement per process count. These rows' figures are not ns/op: the
  // share row reports max/min acquisitions per process in ns_per_op (FifoLock)
  // and baseline_ns_per_op (the robust mutex); the longest-wait row reports
  // the longest single acquire in ns.
  for (int procs : {2, 4}) {
    auto figures = std::make_shared<std::optional<FairnessFigures>>();
    auto get = [figures, procs](Fixture& f, bool quick) -> FairnessFigures& {
      if (!*figures) *figures = fairness(f, procs, quick);
      return **figures;
    };
    std::string p = " " + std::to_string(procs) + " procs";
    // One row per figure of the measurement: FifoLock's in ns_per_op, the
    // robust mutex's in baseline_ns_per_op.
    auto row = [&](std::string name, std::string baseline, Target target, double Contention::*field) {
      Case c{std::move(name), std::move(baseline), procs, target, {}};
      c.direct = [get, field](Fixture& f, bool quick) {
        auto& x = get(f, quick);
        return std::pair{x.fifo.*field, x.mutex.*field};
      };
      cases.push_back(std::move(c));
    };
    row("FifoLock fairness: max/min acquisitions per process (a ratio, not ns)" + p,
        "robust pshared pthread_mutex: max/min acquisitions per process" + p, Target{std::nullopt, 1.05},
        &Contention::share);
    row("FifoLock longest single acquire (ns) contended" + p,
        "robust pshared pthread_mutex longest single lock (ns)" + p, Target{}, &Contention::longest_ns);
    // Why the share above is not the lock's fairness: with 2 shared CPUs a
    // process is often preempted outside the lock, and another then finds
    // the lock idle and takes it alone (the fast path, ~20 ns an operation)
    // until it comes back; no queued request is overtaken then (nothing is
    // queued), but the counts drift apart by scheduler luck. These rows
    // show how many acquisitions found the lock idle (the mutex: trylock
    // succeeded) and the max/min share of the others, those that had to
    // wait, which are the ones FIFO order governs. They do not show the
    // order itself (the multiprocess tests check that exactly), nor
    // fairness under a longer critical section. Not ns/op.
    row("FifoLock % of acquisitions that found the lock idle (not ns)" + p,
        "robust pshared pthread_mutex % of locks whose trylock succeeded" + p, Target{}, &Contention::idle_pct);
    row("FifoLock fairness of the acquisitions that waited: max/min per process (not ns)" + p,
        "robust pshared pthread_mutex: max/min per process of locks that waited" + p, Target{},
        &Contention::waited_share);
  }
  // Handover latency, as a round trip of two handovers between 2 processes
  // vs a raw futex wake round trip: target <= 1.3x.
  Case handover{
      "FifoLock handover round trip (release -> acquire returns, twice) 2 procs",
      "raw futex wake round trip (FUTEX_WAKE -> FUTEX_WAIT returns, twice) 2 procs",
      1,
      Target{1.3, std::nullopt},
      [](Fixture& f) { return handover_bodies(f, "bench.fifo.handover"); },
  };
  handover.wall_time = true;
  cases.push_back(std::move(handover));
}

}  // namespace shmstate_bench
