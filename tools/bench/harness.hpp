// bench: the one place where shmstate measures speed (the tests never assert it).
//
// Every row times a candidate (a shmstate operation) and a baseline (the same
// work done the plain way) in the same run on the same machine, and reports
// ns/op of both and their ratio (candidate / baseline). Machines are shared
// and noisy, so each figure is the MEDIAN of several rounds, and candidate and
// baseline rounds are interleaved (C B, B C, C B, ...) so that drift hits
// both alike. Rounds last about 100 ms (2 ms with --quick): the number of
// operations per round (1 proc) or the chunk size (N procs) is calibrated once
// per row on the baseline and is then the same for both sides.
//
// Timing. "1 proc" rows run in this process and are timed by its thread CPU
// time (CLOCK_THREAD_CPUTIME_ID): on a busy machine the wall time of a round
// includes whole time slices spent descheduled (measured here under load:
// the same loop from 9 to 56 ns/op by wall time), the CPU time does not.
//
// Multi-process rows ("N procs") fork N children per round, each pinned to a
// CPU of its own when the process may use at least N CPUs. The children meet
// at a spin barrier in shared memory and start together at a common instant
// on CLOCK_MONOTONIC (one clock for the whole machine), then hammer the same
// shared object until a common deadline (a fixed window, ~100 ms), counting
// their operations. The row's time is the WALL time of the window, from the
// common start to the latest child's end, divided by the total operations of
// all children: ns/op is the inverse of the aggregate throughput, so with
// perfect scaling it would halve from 1 to 2 processes, and with contention on
// one cache line it grows. (A child's own time per op is about N times the
// figure.) Fork, child start-up, the barrier and waitpid are outside the
// window. Children are not immune to being descheduled by other load: on a
// busy machine these rows are the noisy ones.
//
// Usage: bench [--json] [--quick] [--rounds N] [--filter SUBSTRING] [--list]
// Exit status: 0 (also when a target is missed: targets are reported, not
// enforced), 1 on an error, 2 on a usage error.
//
// Adding a row: add a Case in the rows file of its primitive
// (tools/bench/<primitive>_rows.cpp); a new primitive adds one such file, its
// function in rows.hpp and one line in the table of all_cases() (rows.cpp). A Case names the
// candidate and its baseline, gives the process count and the target, and has
// a setup that runs once (only if the row is selected) and returns two Bodies.
// A Body does `n` operations and returns a value derived from their results;
// the harness folds it into a volatile sink so the loop cannot be optimised
// away. It is called many times per round (in chunks in N procs rows), and in
// N procs rows in forked children, each with its own copy of the Body's
// captures: state meant to be shared must live in shared memory. Keep the two
// Bodies alike except for the thing being compared.
//
// Files: harness.{hpp,cpp} (this interface; rounds, medians, child processes,
// output, command line), rows.{hpp,cpp} (the ordered table of every
// primitive's rows), <primitive>_rows.cpp (each row's candidate beside its
// baseline).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <shmstate/segment.hpp>

namespace shmstate_bench {

[[noreturn]] void throw_errno(int err, const std::string& what);

// CLOCK_MONOTONIC now, in ns: one clock for every process of the machine.
std::int64_t now_ns();

// Shared memory for baselines and for the harness itself.

// An anonymous MAP_SHARED mapping: shmem pages like a /dev/shm file, shared
// with the children forked after it was made, and gone with the last of them.
class SharedPages {
 public:
  explicit SharedPages(std::size_t size);
  ~SharedPages();
  SharedPages(const SharedPages&) = delete;
  SharedPages& operator=(const SharedPages&) = delete;

  void* get() const noexcept { return base_; }

 private:
  std::size_t size_;
  void* base_ = nullptr;
};

// A process forked by a row's setup (a waiter to kill, a watcher that
// acknowledges changes): runs fn, then _exit(0)s. The handle SIGKILLs and reaps
// it when it goes, so no row leaves a process behind.
class HelperProcess {
 public:
  explicit HelperProcess(const std::function<void()>& fn);
  ~HelperProcess();
  HelperProcess(const HelperProcess&) = delete;
  HelperProcess& operator=(const HelperProcess&) = delete;
  // SIGKILLs and reaps it now (at most once).
  void kill();

 private:
  pid_t pid_ = -1;
};

// The baseline of every wake-up latency row: a raw futex wake round trip
// between this process and a helper process it forks. Each op stores 1 in a
// shared word and FUTEX_WAKEs the helper asleep on it, then sleeps in
// FUTEX_WAIT until the helper has stored 0 and woken it back: two wakes, one
// each way, and nothing else. The helper sleeps between calls (no timed
// re-checks that would disturb the rows timed meanwhile); it goes with this.
class FutexRoundTrip {
 public:
  FutexRoundTrip();  // returns once the helper runs
  FutexRoundTrip(const FutexRoundTrip&) = delete;
  FutexRoundTrip& operator=(const FutexRoundTrip&) = delete;
  ~FutexRoundTrip();
  // `n` round trips; returns n.
  std::uint64_t run(std::uint64_t n);

 private:
  struct Words;
  SharedPages page_{4096};
  Words* words_;
  std::unique_ptr<HelperProcess> helper_;
};

// Issue 6 item 3's scene: forks a process that runs `wait` (a blocking wait
// on a shared object, or a watch that keeps its dispatcher asleep on one),
// waits until armed() is true (its waiter bit is set in the segment), gives it
// 20 ms to reach FUTEX_WAIT, and SIGKILLs it there. Throws if armed() stays
// false for 10 s.
void kill_a_waiter(const std::function<void()>& wait, const std::function<bool()>& armed);

// A segment of a row's own, for rows the fixture's 1 MiB, 256-object segment
// cannot hold: a unique name, created with `options`, removed when this goes
// (the mapping stays until the process exits, as every mapping does).
class OwnSegment {
 public:
  explicit OwnSegment(const shmstate::SegmentOptions& options);
  ~OwnSegment();
  OwnSegment(const OwnSegment&) = delete;
  OwnSegment& operator=(const OwnSegment&) = delete;

  shmstate::Segment& get() noexcept { return *segment_; }

 private:
  std::string name_;
  std::optional<shmstate::Segment> segment_;
};

// Does `n` operations; returns something computed from their results.
using Body = std::function<std::uint64_t(std::uint64_t n)>;

struct Target {
  std::optional<double> max_ratio;      // candidate ns/op <= max_ratio * baseline ns/op
  std::optional<double> max_ns_per_op;  // candidate ns/op <= this, whatever the baseline
};

struct Bodies {
  Body candidate;
  Body baseline;
  // 1 proc rows, optional: runs untimed before every timed call of a Body
  // (calibration, warm-up, rounds), told which Body and how many operations
  // follow. For operations that use something up (creations fill a
  // registry): it makes room for `n` more, e.g. in a fresh segment.
  std::function<void(bool candidate, std::uint64_t n)> prepare = {};
};

struct Fixture {
  shmstate::Segment& segment;  // a fresh, uniquely named segment for this run
};

struct Case {
  std::string name;      // candidate, e.g. "Atomic<int64_t>::add_and_get 1 proc"
  std::string baseline;  // what it is compared with
  int processes = 1;
  Target target;
  // Runs once, before the row's first round, only if the row is selected.
  // May create objects in the fixture's segment (use names unique to the row)
  // and keep baseline state alive by capturing it in the Bodies.
  std::function<Bodies(Fixture&)> setup;
  // 1 proc rows: time rounds by the wall clock instead of this thread's CPU
  // time. For rows whose operation sleeps (a wake-up latency), where the CPU
  // time would leave out exactly what is measured.
  bool wall_time = false;
  // 1 proc rows: at most this many operations per call of a Body (0: as
  // calibrated). For operations that use something up (see Bodies::prepare).
  std::uint64_t max_ops = 0;
  // Rows whose figure is not the time per operation of a loop (a median or
  // maximum over single waits, a fairness ratio): when set, it replaces
  // setup and the rounds; it returns the candidate's and the baseline's
  // figure (`quick`: a rough, short measurement), reported in the ns_per_op
  // and baseline_ns_per_op fields with their ratio. The row's name says what
  // the figure is when it is not nanoseconds.
  std::function<std::pair<double, double>(Fixture&, bool quick)> direct = {};
};

}  // namespace shmstate_bench
