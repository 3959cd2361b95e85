// bench harness: rounds, interleaved medians, child processes, output and the
// command line. What is measured and how is described in harness.hpp.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/error.hpp>
#include <shmstate/segment.hpp>

#include "harness.hpp"
#include "platform/futex.hpp"
#include "rows.hpp"

namespace shmstate_bench {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC: comparable across processes

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

SharedPages::SharedPages(std::size_t size) : size_(size) {
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno(errno, "mmap(MAP_SHARED|MAP_ANONYMOUS)");
  base_ = p;
}

SharedPages::~SharedPages() { ::munmap(base_, size_); }

HelperProcess::HelperProcess(const std::function<void()>& fn) {
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw_errno(errno, "fork");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench helper: %s\n", e.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
}

HelperProcess::~HelperProcess() { kill(); }

void HelperProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

struct alignas(64) FutexRoundTrip::Words {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> turn{0};  // 1: the helper's turn
};

FutexRoundTrip::FutexRoundTrip() : words_(new (page_.get()) Words()) {
  Words* w = words_;
  helper_ = std::make_unique<HelperProcess>([w] {
    w->ready.store(1);
    for (;;) {
      while (w->turn.load(std::memory_order_acquire) != 1)
        shmstate::platform::futex_wait(w->turn, 0, std::chrono::seconds(1));
      w->turn.store(0, std::memory_order_release);
      shmstate::platform::futex_wake(w->turn, 1);
    }
  });
  while (w->ready.load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
}

FutexRoundTrip::~FutexRoundTrip() = default;  // the helper goes first (declared last)

std::uint64_t FutexRoundTrip::run(std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) {
    words_->turn.store(1, std::memory_order_release);
    shmstate::platform::futex_wake(words_->turn, 1);
    while (words_->turn.load(std::memory_order_acquire) != 0)
      shmstate::platform::futex_wait(words_->turn, 1, std::chrono::seconds(1));
  }
  return n;
}

void kill_a_waiter(const std::function<void()>& wait, const std::function<bool()>& armed) {
  HelperProcess waiter(wait);
  auto end = Clock::now() + std::chrono::seconds(10);
  while (!armed()) {
    if (Clock::now() > end) throw std::runtime_error("the waiter to kill never armed its event count");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  waiter.kill();
}

namespace {

// CPU time of the calling thread: does not advance while it is descheduled.
std::int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Every Body's result ends up here, so no measured loop is dead code.
volatile std::uint64_t g_sink = 0;

// ---------------------------------------------------------------------------
// The temporary segment: uniquely named, removed at the end, on an exception
// (RAII) and on SIGINT/SIGTERM/SIGHUP (the handler unlinks the file itself,
// which is async-signal-safe, then dies by the same signal).

char g_segment_path[256] = {};  // "/dev/shm/<name>" once the segment exists

extern "C" void on_fatal_signal(int sig) {
  if (g_segment_path[0] != '\0') ::unlink(g_segment_path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

constexpr int kCleanupSignals[] = {SIGINT, SIGTERM, SIGHUP};

void install_cleanup_handlers() {
  for (int sig : kCleanupSignals) {
    struct sigaction sa {};
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
}

class TempSegment {
 public:
  TempSegment() {
    std::random_device rd;
    char name[64];
    std::snprintf(name, sizeof name, "shmstate-bench-%ld-%08x", static_cast<long>(::getpid()),
                  static_cast<unsigned>(rd()));
    name_ = name;
    shmstate::SegmentOptions options;
    options.size = 1 << 20;
    segment_.emplace(shmstate::Segment::create(name_, options));
    std::snprintf(g_segment_path, sizeof g_segment_path, "/dev/shm/%s", name_.c_str());
  }
  ~TempSegment() {
    g_segment_path[0] = '\0';
    try {
      shmstate::Segment::remove(name_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench: could not remove segment '%s': %s\n", name_.c_str(), e.what());
    }
  }
  TempSegment(const TempSegment&) = delete;
  TempSegment& operator=(const TempSegment&) = delete;

  shmstate::Segment& segment() { return *segment_; }

 private:
  std::string name_;
  std::optional<shmstate::Segment> segment_;
};

}  // namespace

OwnSegment::OwnSegment(const shmstate::SegmentOptions& options) {
  static std::atomic<unsigned> serial{0};
  std::random_device rd;
  char name[80];
  std::snprintf(name, sizeof name, "shmstate-bench-%ld-%u-%08x", static_cast<long>(::getpid()), serial++,
                static_cast<unsigned>(rd()));
  name_ = name;
  segment_.emplace(shmstate::Segment::create(name_, options));
}

OwnSegment::~OwnSegment() {
  try {
    shmstate::Segment::remove(name_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: could not remove segment '%s': %s\n", name_.c_str(), e.what());
  }
}

namespace {

// ---------------------------------------------------------------------------
// Running a Body in this process or in N forked processes.


// process may run on, so N children really run on N different cores (left to
// itself the scheduler often stacks a freshly forked child on its sibling's
// core, and the row then measures time slicing, not contention). Empty (no
// pinning) when fewer CPUs than children are available.
std::vector<int> child_cpus(int processes) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return {};
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && static_cast<int>(cpus.size()) < processes; ++cpu)
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  if (static_cast<int>(cpus.size()) < processes) return {};
  return cpus;
}

// One round's figure: ns per operation, and how many operations it did (all
// processes together).
struct RoundTime {
  double ns_per_op = 0;
  std::uint64_t ops = 0;
  // N procs: the children's CPU time / (N x wall time of the window). 1.0
  // when every child ran the whole window; less when some were descheduled,
  // and a lone child then ran uncontended (faster): such rounds understate
  // the cost of contention.
  double cpu_busy = 1;
};

// How a row's rounds run, fixed once per row by calibrate().
struct Plan {
  int processes = 1;
  std::uint64_t ops = 0;        // 1 proc: operations per round
  std::uint64_t chunk = 0;      // N procs: operations between two looks at the clock
  std::int64_t window_ns = 0;   // N procs: length of the timed window
  bool wall_time = false;       // 1 proc: Case::wall_time
};

// `n` operations in this thread, timed by its CPU time (see the file comment),
// or by the wall clock for rows that measure sleeping.
RoundTime run_here(const Body& body, std::uint64_t n, bool wall_time = false) {
  auto clock = wall_time ? now_ns : thread_cpu_ns;
  std::int64_t t0 = clock();
  std::uint64_t r = body(n);
  std::int64_t t1 = clock();
  g_sink = g_sink + r;
  return {static_cast<double>(t1 - t0) / static_cast<double>(n), n};
}

// Forks `processes` children, pinned to CPUs of their own when there are
// enough. They meet at a spin barrier; the last to arrive sets a start time
// slightly ahead on CLOCK_MONOTONIC, all spin until it, then each runs the
// body in chunks of `chunk` operations until the common deadline start +
// window has passed. ns/op = (latest child end - start) / total operations.
// A fixed window rather than a fixed share of work keeps the whole timed
// span contended: with fixed shares, the child that the cache-line
// arbitration favours finishes early and the other then runs alone, fast
// (seen here: 2-27 ms of uncontended tail in 100 ms rounds).
RoundTime run_children(const Body& body, int processes, std::uint64_t chunk, std::int64_t window_ns) {
  struct alignas(64) Control {
    std::atomic<std::uint32_t> arrived;
    std::atomic<std::int64_t> start_ns;  // 0 until the last child arrives
  };
  struct alignas(64) Slot {
    std::int64_t end_ns;
    std::int64_t cpu_ns;
    std::uint64_t ops;
    std::uint64_t result;
  };
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(std::atomic<std::int64_t>::is_always_lock_free);
  constexpr std::int64_t kStartSlack = 100'000;  // ns from the last arrival to the start

  const std::size_t bytes = sizeof(Control) + sizeof(Slot) * static_cast<std::size_t>(processes);
  SharedPages pages(bytes);
  auto* control = new (pages.get()) Control{};
  auto* slots = reinterpret_cast<Slot*>(static_cast<char*>(pages.get()) + sizeof(Control));
  for (int i = 0; i < processes; ++i) new (&slots[i]) Slot{};

  const pid_t parent = ::getpid();
  const std::vector<int> cpus = child_cpus(processes);
  std::vector<pid_t> children;

  std::fflush(nullptr);  // no buffered output duplicated in the children
  for (int i = 0; i < processes; ++i) {
    pid_t pid = ::fork();
    if (pid < 0) {
      int err = errno;
      for (pid_t c : children) ::kill(c, SIGKILL);
      for (pid_t c : children) ::waitpid(c, nullptr, 0);
      throw_errno(err, "fork");
    }
    if (pid == 0) {
      // Child: leaves only by _exit, so it never runs the parent's destructors
      // (which would remove the segment) nor flushes the parent's buffers.
      for (int sig : kCleanupSignals) ::signal(sig, SIG_DFL);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(4);
      if (!cpus.empty()) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[static_cast<std::size_t>(i)], &one);
        ::sched_setaffinity(0, sizeof one, &one);  // best effort
      }
      if (control->arrived.fetch_add(1) + 1 == static_cast<std::uint32_t>(processes))
        control->start_ns.store(now_ns() + kStartSlack);
      // Give up after 10 s: a sibling that never came (the parent failed to fork).
      const std::int64_t give_up = now_ns() + 10'000'000'000;
      std::int64_t start = 0;
      for (std::uint32_t spins = 1; (start = control->start_ns.load()) == 0; ++spins) {
        if ((spins & 0xfff) == 0) {
          if (now_ns() > give_up) ::_exit(3);
          ::sched_yield();
        }
      }
      while (now_ns() < start) {
      }
      try {
        const std::int64_t deadline = start + window_ns;
        const std::int64_t cpu0 = thread_cpu_ns();
        std::uint64_t ops = 0, result = 0;
        do {
          result += body(chunk);
          ops += chunk;
        } while (now_ns() < deadline);
        slots[i].end_ns = now_ns();
        slots[i].cpu_ns = thread_cpu_ns() - cpu0;
        slots[i].ops = ops;
        slots[i].result = result;
        ::_exit(0);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench: in a child: %s\n", e.what());
      } catch (...) {
      }
      ::_exit(5);
    }
    children.push_back(pid);
  }

  std::string failure;
  for (pid_t c : children) {
    int status = 0;
    pid_t r;
    do r = ::waitpid(c, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      failure = std::string("waitpid: ") + std::strerror(errno);
    } else if (WIFSIGNALED(status)) {
      failure = "a bench child died by signal " + std::to_string(WTERMSIG(status));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      int code = WEXITSTATUS(status);
      failure = "a bench child exited with status " + std::to_string(code) +
                (code == 3 ? " (its siblings never reached the start barrier)" : "");
    }
  }
  if (!failure.empty()) throw std::runtime_error(failure);

  const std::int64_t start = control->start_ns.load();
  std::int64_t last_end = start;
  std::uint64_t ops = 0, results = 0;
  std::int64_t cpu = 0;
  for (int i = 0; i < processes; ++i) {
    last_end = std::max(last_end, slots[i].end_ns);
    ops += slots[i].ops;
    results += slots[i].result;
    cpu += slots[i].cpu_ns;
  }
  g_sink = g_sink + results;
  const auto wall = static_cast<double>(last_end - start);
  return {wall / static_cast<double>(ops), ops, static_cast<double>(cpu) / (wall * processes)};
}

RoundTime run_round(const Body& body, const Plan& plan) {
  if (plan.processes <= 1) return run_here(body, plan.ops, plan.wall_time);
  return run_children(body, plan.processes, plan.chunk, plan.window_ns);
}

// ---------------------------------------------------------------------------
// Measuring one case.

struct Result {
  const Case* c = nullptr;
  double ns_per_op = 0;
  double baseline_ns_per_op = 0;
  double ratio = 0;
  int rounds = 0;
  // Operations per round, all processes together (N procs rounds run for a
  // fixed time: the mean over all rounds of both sides).
  std::uint64_t iterations = 0;
  std::optional<bool> target_met;
  std::vector<double> rounds_ns_per_op, rounds_baseline_ns_per_op;  // in the order run
  double cpu_busy = 1;  // N procs: median RoundTime::cpu_busy over all rounds
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// run_here after the row's untimed Bodies::prepare, if it has one.
RoundTime run_prepared(const Bodies& bodies, bool candidate, std::uint64_t n, bool wall_time) {
  if (bodies.prepare) bodies.prepare(candidate, n);
  return run_here(candidate ? bodies.candidate : bodies.baseline, n, wall_time);
}

// Times the baseline in this thread, growing a trial run until it takes a
// quarter of a round, and derives the plan: 1 proc, operations for one round
// of about round_ns; N procs, a window of round_ns and chunks of about a
// thousandth of it (the clock is read once per chunk, ~20 ns). 1 proc rows do
// at most Case::max_ops per round.
Plan calibrate(const Bodies& bodies, const Case& c, double round_ns) {
  const int processes = c.processes;
  const bool wall_time = c.wall_time;
  constexpr std::uint64_t kMaxOps = std::uint64_t{1} << 34;
  const std::uint64_t max_ops = c.max_ops != 0 ? c.max_ops : kMaxOps;
  std::uint64_t n = std::min<std::uint64_t>(64, max_ops);
  double per_op = 0;
  for (;;) {
    per_op = std::max(run_prepared(bodies, false, n, wall_time).ns_per_op, 0.01);
    if (per_op * static_cast<double>(n) >= round_ns / 4 || n >= max_ops) break;
    n = std::min(n * 8, max_ops);
  }
  Plan plan;
  plan.processes = processes;
  plan.wall_time = wall_time;
  const auto per_round = static_cast<std::uint64_t>(round_ns / per_op);
  if (processes <= 1) {
    plan.ops = std::clamp<std::uint64_t>(per_round, 1, max_ops);
  } else {
    plan.chunk = std::clamp<std::uint64_t>(per_round / 1000, 1, std::uint64_t{1} << 20);
    plan.window_ns = static_cast<std::int64_t>(round_ns);
  }
  return plan;
}

void check_target(Result& r, const Case& c);

Result measure(const Case& c, Fixture& f, int rounds, double round_ns) {
  Result r;
  r.c = &c;
  if (c.direct) {
    auto [cand, base] = c.direct(f, round_ns < 50e6);
    r.rounds = 1;
    r.ns_per_op = cand;
    r.baseline_ns_per_op = base;
    r.ratio = base != 0 ? cand / base : 0;
    r.rounds_ns_per_op = {cand};
    r.rounds_baseline_ns_per_op = {base};
    check_target(r, c);
    return r;
  }
  Bodies bodies = c.setup(f);
  r.rounds = rounds;
  const Plan plan = calibrate(bodies, c, round_ns);  // also warms the baseline up
  // Warm the candidate up as much (a quarter of a round, in this thread).
  run_prepared(bodies, true, std::max<std::uint64_t>(1, plan.processes <= 1 ? plan.ops / 4 : plan.chunk * 250),
               false);

  std::vector<double> cand, base, busy;
  std::uint64_t ops = 0;
  auto one = [&](const Body& body, std::vector<double>& into) {
    if (bodies.prepare && plan.processes <= 1) bodies.prepare(&body == &bodies.candidate, plan.ops);
    RoundTime t = run_round(body, plan);
    into.push_back(t.ns_per_op);
    ops += t.ops;
    busy.push_back(t.cpu_busy);
  };
  for (int i = 0; i < rounds; ++i) {
    if (i % 2 == 0) {
      one(bodies.candidate, cand);
      one(bodies.baseline, base);
    } else {
      one(bodies.baseline, base);
      one(bodies.candidate, cand);
    }
  }
  r.iterations = ops / (2 * static_cast<std::uint64_t>(rounds));
  r.cpu_busy = median(busy);
  r.rounds_ns_per_op = cand;
  r.rounds_baseline_ns_per_op = base;
  r.ns_per_op = median(cand);
  r.baseline_ns_per_op = median(base);
  r.ratio = r.ns_per_op / r.baseline_ns_per_op;
  check_target(r, c);
  return r;
}

void check_target(Result& r, const Case& c) {
  if (c.target.max_ratio || c.target.max_ns_per_op) {
    bool met = true;
    if (c.target.max_ratio && r.ratio > *c.target.max_ratio) met = false;
    if (c.target.max_ns_per_op && r.ns_per_op > *c.target.max_ns_per_op) met = false;
    r.target_met = met;
  }
}

// ---------------------------------------------------------------------------
// Output.

std::string format_fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string target_text(const Target& t) {
  std::string s;
  if (t.max_ratio) s += "ratio <= " + format_fixed(*t.max_ratio, 2);
  if (t.max_ns_per_op) s += std::string(s.empty() ? "" : ", ") + "<= " + format_fixed(*t.max_ns_per_op, 0) + " ns";
  return s.empty() ? "-" : s;
}

struct Columns {
  std::size_t name = 4, baseline = 8, target = 6;
};

// The target column comes last and is not padded: "ratio <= 1.10  ok".
void print_header(const Columns& w) {
  std::printf("%-*s  %9s  %-*s  %9s  %6s  %s\n", static_cast<int>(w.name), "name", "ns/op",
              static_cast<int>(w.baseline), "baseline", "ns/op", "ratio", "target");
  std::size_t total = w.name + 2 + 9 + 2 + w.baseline + 2 + 9 + 2 + 6 + 2 + w.target + 8;
  std::printf("%s\n", std::string(total, '-').c_str());
}

void print_row(const Columns& w, const Result& r) {
  std::string target = target_text(r.c->target);
  if (r.target_met) target += *r.target_met ? "  ok" : "  MISSED";
  std::printf("%-*s  %9.2f  %-*s  %9.2f  %6.3f  %s\n", static_cast<int>(w.name), r.c->name.c_str(),
              r.ns_per_op, static_cast<int>(w.baseline), r.c->baseline.c_str(), r.baseline_ns_per_op,
              r.ratio, target.c_str());
  std::fflush(stdout);
}

double rounded(double v, int decimals) {
  double scale = std::pow(10.0, decimals);
  return std::round(v * scale) / scale;
}

boost::json::value to_json(const Result& r) {
  boost::json::object o;
  o["name"] = r.c->name;
  o["ns_per_op"] = rounded(r.ns_per_op, 3);
  o["baseline"] = r.c->baseline;
  o["baseline_ns_per_op"] = rounded(r.baseline_ns_per_op, 3);
  o["ratio"] = rounded(r.ratio, 4);
  o["processes"] = r.c->processes;
  o["rounds"] = r.rounds;
  o["iterations"] = r.iterations;
  auto round_list = [](const std::vector<double>& v) {
    boost::json::array a;
    for (double x : v) a.push_back(rounded(x, 3));
    return a;
  };
  o["rounds_ns_per_op"] = round_list(r.rounds_ns_per_op);
  o["rounds_baseline_ns_per_op"] = round_list(r.rounds_baseline_ns_per_op);
  if (r.c->processes > 1) o["cpu_busy"] = rounded(r.cpu_busy, 3);
  boost::json::object target;
  if (r.c->target.max_ratio) target["max_ratio"] = *r.c->target.max_ratio;
  if (r.c->target.max_ns_per_op) target["max_ns_per_op"] = *r.c->target.max_ns_per_op;
  if (target.empty())
    o["target"] = nullptr;
  else
    o["target"] = std::move(target);
  if (r.target_met)
    o["target_met"] = *r.target_met;
  else
    o["target_met"] = nullptr;
  return o;
}

// ---------------------------------------------------------------------------
// Command line.

constexpr const char* kUsage =
    "usage: bench [--json] [--quick] [--rounds N] [--filter SUBSTRING] [--list]\n"
    "\n"
    "Measures shmstate operations against plain baselines in the same run and\n"
    "prints ns/op, the baseline's ns/op and their ratio, each the median of\n"
    "several interleaved rounds. Targets are reported, never enforced.\n"
    "\n"
    "  --json              print one JSON array: [{\"name\", \"ns_per_op\", \"baseline\",\n"
    "                      \"baseline_ns_per_op\", \"ratio\", \"processes\", \"rounds\",\n"
    "                      \"iterations\", \"target\", \"target_met\",\n"
    "                      \"rounds_ns_per_op\", \"rounds_baseline_ns_per_op\",\n"
    "                      \"cpu_busy\" (N procs rows: share of the window the\n"
    "                      children were on a CPU, 1.0 = fully concurrent)}]\n"
    "  --quick             few operations and 3 rounds: a smoke run, figures are rough\n"
    "  --rounds N          rounds per row (default 7; 3 with --quick)\n"
    "  --filter SUBSTRING  run only the rows whose name contains SUBSTRING\n"
    "  --list              print the row names and exit\n"
    "  --help              this text\n"
    "\n"
    "\"N procs\" rows fork N children (each pinned to its own CPU when there are\n"
    "enough) that hammer the same object; their ns/op is the wall time from the\n"
    "first child's start to the last child's end divided by the total operations\n"
    "of all children (the inverse of the aggregate throughput).\n";

struct Options {
  bool json = false;
  bool quick = false;
  bool list = false;
  std::optional<int> rounds;
  std::string filter;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "bench: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> inline_value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) usage_error(std::string(arg) + " needs a value");
      return argv[++i];
    };
    auto no_value = [&] {
      if (inline_value) usage_error(std::string(arg) + " takes no value");
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--json") {
      no_value();
      o.json = true;
    } else if (arg == "--quick") {
      no_value();
      o.quick = true;
    } else if (arg == "--list") {
      no_value();
      o.list = true;
    } else if (arg == "--rounds") {
      std::string_view v = value();
      int n = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc{} || end != v.data() + v.size() || n < 1 || n > 1000)
        usage_error("--rounds needs a whole number from 1 to 1000, not '" + std::string(v) + "'");
      o.rounds = n;
    } else if (arg == "--filter") {
      o.filter = std::string(value());
    } else {
      usage_error("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  return o;
}

int run(const Options& opt) {
  std::vector<Case> all = all_cases();
  std::vector<const Case*> selected;
  for (const Case& c : all)
    if (c.name.find(opt.filter) != std::string::npos) selected.push_back(&c);

  if (opt.list) {
    for (const Case* c : selected) std::printf("%s\n", c->name.c_str());
    return 0;
  }
  if (selected.empty()) {
    std::fprintf(stderr, "bench: no row matches --filter '%s' (see --list)\n", opt.filter.c_str());
    return 1;
  }

  const int rounds = opt.rounds.value_or(opt.quick ? 3 : 7);
  const double round_ns = opt.quick ? 2e6 : 100e6;

  install_cleanup_handlers();
  TempSegment temp;
  Fixture fixture{temp.segment()};

  Columns w;
  for (const Case* c : selected) {
    w.name = std::max(w.name, c->name.size());
    w.baseline = std::max(w.baseline, c->baseline.size());
    w.target = std::max(w.target, target_text(c->target).size());
  }
  if (!opt.json) {
    double load[1] = {0};
    std::printf("# %u CPUs, load average %.2f, median of %d rounds per figure, ~%.0f ms per round%s\n",
                std::thread::hardware_concurrency(), ::getloadavg(load, 1) == 1 ? load[0] : 0.0, rounds,
                round_ns / 1e6, opt.quick ? " (--quick: rough figures)" : "");
    std::printf("# 1 proc: CPU time of this thread; N procs: wall time of the round / all ops\n");
    print_header(w);
  }

  boost::json::array out;
  std::vector<std::string> notes;
  for (const Case* c : selected) {
    Result r = measure(*c, fixture, rounds, round_ns);
    if (opt.json) {
      out.push_back(to_json(r));
    } else {
      print_row(w, r);
      if (c->processes > 1 && r.cpu_busy < 0.9)
        notes.push_back("# '" + c->name + "': the children were on a CPU only " +
                        format_fixed(100 * r.cpu_busy, 0) +
                        "% of the window (other load); the figures mix contended and lone-child time.");
    }
  }
  if (opt.json) std::printf("%s\n", boost::json::serialize(out).c_str());
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
  return 0;
}

}  // namespace
}  // namespace shmstate_bench

int main(int argc, char** argv) {
  using namespace shmstate_bench;
  Options opt = parse_options(argc, argv);
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: %s\n", e.what());
    return 1;
  }
}
