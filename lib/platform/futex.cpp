#include "platform/futex.hpp"
#include "platform/process.hpp"

#include <cerrno>
#include <climits>
#include <ctime>
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

namespace shmstate::platform {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(kWaitvMax == FUTEX_WAITV_MAX);

namespace {
// The kernel reads the word through its own address; the const_cast is how
// the address is passed, the kernel never writes it for WAIT/WAKE.
std::uint32_t* address_of(const std::atomic<std::uint32_t>& word) noexcept {
  return reinterpret_cast<std::uint32_t*>(const_cast<std::atomic<std::uint32_t>*>(&word));
}
}  // namespace

FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout) noexcept {
  if (timeout <= std::chrono::nanoseconds::zero()) return FutexResult::TimedOut;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  long rc = ::syscall(SYS_futex, address_of(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
  if (rc == 0) return FutexResult::Woken;
  switch (errno) {
    case EAGAIN: return FutexResult::ValueChanged;
    case ETIMEDOUT: return FutexResult::TimedOut;
    case EINTR: return FutexResult::Interrupted;
    default: return FutexResult::Woken;  // EFAULT/EINVAL cannot happen for a mapped, aligned word
  }
}

namespace {

using std::chrono::nanoseconds;

// futex_waitv on `count` (<= 128) prepared entries until the absolute
// CLOCK_MONOTONIC `deadline`.
FutexResult waitv(futex_waitv* waiters, unsigned count, const timespec& deadline) noexcept {
  long rc = ::syscall(SYS_futex_waitv, waiters, count, 0, &deadline, CLOCK_MONOTONIC);
  if (rc >= 0) return FutexResult::Woken;
  switch (errno) {
    case EAGAIN: return FutexResult::ValueChanged;
    case ETIMEDOUT: return FutexResult::TimedOut;
    case EINTR: return FutexResult::Interrupted;
    case ENOSYS: {
      // No futex_waitv (Linux < 5.16): a bounded sleep, callers re-check.
      timespec now;
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      std::int64_t left = (deadline.tv_sec - now.tv_sec) * 1'000'000'000 + (deadline.tv_nsec - now.tv_nsec);
      if (left > 0) ::usleep(static_cast<useconds_t>(std::min<std::int64_t>(left / 1000, 10'000)));
      return FutexResult::TimedOut;
    }
    default: return FutexResult::Woken;
  }
}

void fill(futex_waitv& w, const std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  w = {};
  w.val = expected;
  w.uaddr = reinterpret_cast<std::uintptr_t>(address_of(word));
  w.flags = FUTEX_32;  // shared: no FUTEX_PRIVATE_FLAG
}

timespec deadline_after(nanoseconds timeout) noexcept {
  // futex_waitv takes an absolute deadline on the given clock.
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  std::int64_t ns = now.tv_nsec + timeout.count() % 1'000'000'000;
  return timespec{static_cast<time_t>(now.tv_sec + timeout.count() / 1'000'000'000 + ns / 1'000'000'000),
                  static_cast<long>(ns % 1'000'000'000)};
}

// ---- waits on more than 128 words: helper threads ----
//
// The caller sleeps on the first kChunk words plus the round's `ended` word;
// each further kChunk words are a job for a helper thread of this process,
// which sleeps on them plus the same `ended` word. Whoever returns first (a
// word moved, a wake, the deadline) sets `ended` and wakes the others. Every
// part compares its words with the values the caller armed them at, so a
// helper that starts late still sees a change made before it started: no
// wake-up is lost to the hand-over. Nothing of this is in shared memory: a
// dead process leaves nothing behind but the waiter bits its words' own
// protocols already clear.
constexpr unsigned kChunk = FUTEX_WAITV_MAX - 1;

#if SHMSTATE_TEST_HOOKS
std::atomic<std::uint64_t> g_helper_rounds{0};
#endif

struct Round {
  std::atomic<std::uint32_t> ended{0};
  std::vector<futex_waitv> entries;  // words [kChunk, count) of the caller's
  timespec deadline{};
};

void end_round(Round& r) noexcept {
  if (r.ended.exchange(1, std::memory_order_seq_cst) == 0) futex_wake(r.ended, INT_MAX);
}

struct Job {
  std::shared_ptr<Round> round;
  std::size_t begin = 0, end = 0;  // into round->entries
};

// One per process (a fork()ed child makes its own: its copy's threads do not
// exist there and its mutex may be held). Never destroyed: helpers may
// outlive static destruction. Threads are made on demand, as many as the
// waits in progress need at once, and are kept for later waits.
struct Helpers {
  explicit Helpers(pid_t p) : pid(p) {}
  pid_t pid;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;
  std::size_t threads = 0;
  std::size_t demand = 0;  // jobs of the waits now in progress

  void run() {
    futex_waitv entries[FUTEX_WAITV_MAX];
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !jobs.empty(); });
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      Round& r = *job.round;
      unsigned n = 0;
      fill(entries[n++], r.ended, 0);
      for (std::size_t i = job.begin; i < job.end; ++i) entries[n++] = r.entries[i];
      waitv(entries, n, r.deadline);
      end_round(r);
    }
  }
};

Helpers& helpers() {
  static std::atomic<Helpers*> current{nullptr};
  pid_t self = platform::current_pid();
  Helpers* h = current.load(std::memory_order_acquire);
  while (h == nullptr || h->pid != self) {
    auto* fresh = new Helpers(self);
    if (current.compare_exchange_strong(h, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;
  }
  return *h;
}

FutexResult wait_many(const std::atomic<std::uint32_t>* const* words, const std::uint32_t* expected,
                      unsigned count, nanoseconds timeout) noexcept {
#if SHMSTATE_TEST_HOOKS
  g_helper_rounds.fetch_add(1, std::memory_order_relaxed);
#endif
  std::shared_ptr<Round> round;
  std::size_t jobs = 0;
  Helpers& h = helpers();
  bool staffed = true;
  try {
    round = std::make_shared<Round>();
    round->deadline = deadline_after(timeout);
    round->entries.resize(count - kChunk);
    for (unsigned i = kChunk; i < count; ++i) fill(round->entries[i - kChunk], *words[i], expected[i]);
    jobs = (round->entries.size() + kChunk - 1) / kChunk;
    std::lock_guard<std::mutex> lock(h.mu);
    h.demand += jobs;
    try {
      while (h.threads < h.demand) {
        std::thread([&h] { h.run(); }).detach();
        ++h.threads;
      }
    } catch (...) {
      // No thread for some job (the queued ones are served, late, by helpers
      // that come back): the caller re-checks every 10 ms instead.
      staffed = false;
    }
    for (std::size_t j = 0; j < jobs; ++j)
      h.jobs.push_back(Job{round, j * kChunk, std::min<std::size_t>((j + 1) * kChunk, round->entries.size())});
  } catch (...) {
    // Out of memory: a bounded sleep, the caller re-checks.
    ::usleep(static_cast<useconds_t>(std::min<std::int64_t>(timeout.count() / 1000, 10'000)));
    if (jobs != 0) {
      std::lock_guard<std::mutex> lock(h.mu);
      h.demand -= jobs;
    }
    return FutexResult::TimedOut;
  }
  h.cv.notify_all();
  futex_waitv entries[FUTEX_WAITV_MAX];
  unsigned n = 0;
  fill(entries[n++], round->ended, 0);
  for (unsigned i = 0; i < kChunk; ++i) fill(entries[n++], *words[i], expected[i]);
  timespec deadline = round->deadline;
  if (!staffed) deadline = deadline_after(std::min<nanoseconds>(timeout, std::chrono::milliseconds(10)));
  FutexResult result = waitv(entries, n, deadline);
  end_round(*round);
  {
    std::lock_guard<std::mutex> lock(h.mu);
    h.demand -= jobs;
  }
  return result;
}

}  // namespace

FutexResult futex_wait_any(const std::atomic<std::uint32_t>* const* words, const std::uint32_t* expected,
                           unsigned count, std::chrono::nanoseconds timeout) noexcept {
  if (timeout <= std::chrono::nanoseconds::zero()) return FutexResult::TimedOut;
  if (count == 0) {
    ::usleep(static_cast<useconds_t>(std::min<std::int64_t>(timeout.count() / 1000, 10'000)));
    return FutexResult::TimedOut;
  }
  if (count > FUTEX_WAITV_MAX) return wait_many(words, expected, count, timeout);
  futex_waitv entries[FUTEX_WAITV_MAX];
  for (unsigned i = 0; i < count; ++i) fill(entries[i], *words[i], expected[i]);
  return waitv(entries, count, deadline_after(timeout));
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  long rc = ::syscall(SYS_futex, address_of(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

}  // namespace shmstate::platform

#if SHMSTATE_TEST_HOOKS
std::uint64_t shmstate::testing::futex_helper_round_count() noexcept {
  return shmstate::platform::g_helper_rounds.load(std::memory_order_relaxed);
}
#endif
