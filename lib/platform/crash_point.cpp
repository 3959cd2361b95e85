#include "platform/crash_point.hpp"

#include <atomic>
#include <cstring>
#include <string>

#include <unistd.h>

#include <shmstate/testing.hpp>

namespace shmstate {
namespace {
// Armed name; a process-local string, set by the test before the operation.
std::atomic<const char*> g_armed{nullptr};
// A point that runs a function once instead (testing::at_next_point).
std::atomic<const char*> g_hook_name{nullptr};
std::atomic<void (*)()> g_hook_fn{nullptr};
}  // namespace

namespace testing {

void arm_crash_point(const char* name) noexcept {
  // Leaked on purpose: the process is about to die at it, or disarms once.
  g_armed.store(name ? ::strdup(name) : nullptr, std::memory_order_release);
}

void disarm_crash_point() noexcept { g_armed.store(nullptr, std::memory_order_release); }

void at_next_point(const char* name, void (*fn)()) noexcept {
  g_hook_fn.store(nullptr, std::memory_order_seq_cst);
  g_hook_name.store(name ? ::strdup(name) : nullptr, std::memory_order_seq_cst);  // leaked: tests only
  g_hook_fn.store(fn, std::memory_order_seq_cst);
}

}  // namespace testing

namespace platform {
void crash_point_hit(const char* name) noexcept {
  const char* armed = g_armed.load(std::memory_order_acquire);
  if (armed != nullptr && std::strcmp(armed, name) == 0) ::_exit(testing::kCrashExitCode);
  const char* hooked = g_hook_name.load(std::memory_order_seq_cst);
  if (hooked != nullptr && std::strcmp(hooked, name) == 0)
    if (auto* fn = g_hook_fn.exchange(nullptr, std::memory_order_seq_cst)) fn();
}
}  // namespace platform
}  // namespace shmstate
