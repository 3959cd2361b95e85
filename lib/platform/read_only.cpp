#include "platform/read_only.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include <shmstate/error.hpp>

namespace shmstate::platform {

namespace {

constexpr std::size_t kMaxRanges = 1024;
struct Range {
  std::atomic<std::uintptr_t> begin{0}, end{0};
};
Range g_ranges[kMaxRanges];
// Ranges [0, g_count) are filled; release on the count publishes them.
std::atomic<std::size_t> g_count{0};
std::mutex g_mu;  // serialises note_read_only

}  // namespace

void note_read_only(const void* begin, std::size_t size) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::size_t n = g_count.load(std::memory_order_relaxed);
  if (n == kMaxRanges)
    throw Error(ErrorCode::Io, "read-only open: this process already has " + std::to_string(kMaxRanges) +
                                   " read-only segment mappings");
  auto b = reinterpret_cast<std::uintptr_t>(begin);
  g_ranges[n].begin.store(b, std::memory_order_relaxed);
  g_ranges[n].end.store(b + size, std::memory_order_relaxed);
  g_count.store(n + 1, std::memory_order_release);
}

bool is_read_only(const void* p) noexcept {
  std::size_t n = g_count.load(std::memory_order_acquire);
  auto a = reinterpret_cast<std::uintptr_t>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (a >= g_ranges[i].begin.load(std::memory_order_relaxed) && a < g_ranges[i].end.load(std::memory_order_relaxed))
      return true;
  return false;
}

}  // namespace shmstate::platform

namespace shmstate::platform {

void require_writable_at(const void* p, std::string_view where, std::string_view action) {
  if (is_read_only(p))
    throw Error(ErrorCode::PermissionDenied,
                std::string(where) + ": cannot " + std::string(action) + ": the segment is open read-only");
}

}  // namespace shmstate::platform
