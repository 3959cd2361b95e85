// bench rows of Atomic<T>: each candidate beside its baseline (harness.hpp).
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

#include <shmstate/atomic.hpp>

#include "harness.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {

Bodies atomic_add_bodies(Fixture& f, const std::string& object_name) {
  auto atomic = f.segment.atomic<std::int64_t>(object_name, 0);
  auto page = std::make_shared<SharedPages>(4096);
  auto* raw = new (page->get()) std::atomic<std::int64_t>(0);
  Body candidate = [atomic](std::uint64_t n) {
    auto a = atomic;
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += static_cast<std::uint64_t>(a.add_and_get(1));
    return acc;
  };
  Body baseline = [page, raw](std::uint64_t n) {
    std::atomic<std::int64_t>* a = raw;
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += static_cast<std::uint64_t>(a->fetch_add(1) + 1);
    return acc;
  };
  return {std::move(candidate), std::move(baseline)};
}

// A JSON object of about 1 KB: a counter and a list of client names, like the
}  // namespace

void atomic_rows(std::vector<Case>& cases) {
  // Foundation issue, "Benchmark": target ratio <= 1.1 with 1 and 2 processes.
  cases.push_back(Case{
      "Atomic<int64_t>::add_and_get 1 proc",
      "std::atomic<int64_t>::fetch_add on shm 1 proc",
      1,
      Target{1.1, std::nullopt},
      [](Fixture& f) { return atomic_add_bodies(f, "bench.add_and_get.1"); },
  });
  cases.push_back(Case{
      "Atomic<int64_t>::add_and_get 2 procs",
      "std::atomic<int64_t>::fetch_add on shm 2 procs",
      2,
      Target{1.1, std::nullopt},
      [](Fixture& f) { return atomic_add_bodies(f, "bench.add_and_get.2"); },
  });
}

}  // namespace shmstate_bench
