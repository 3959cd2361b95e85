// The shared state of an Atom or AtomicReference (layout version 1).
//
//   current     (version << 1) | active buffer. Only writers holding `writer`
//               store it, seq_cst (release for the buffer's bytes, and the
//               Dekker pair with the event count: atom.hpp); readers load it
//               with acquire before and after copying the active buffer, and
//               retry if it moved.
//   changes     event count: bumped after each publish when anyone waits.
//   buffers[2]  where each value buffer lives in the heap. Only the inactive
//               buffer's fields are ever written, so the active one is stable
//               while `current` is unchanged. Atomic fields (relaxed) so that a
//               reader racing a writer reads stale numbers, never torn ones;
//               it bounds-checks them before copying and the version re-check
//               discards the copy.
//   writer      robust mutex serialising writers. Nothing needs repair after a
//               writer dies: until the one store to `current`, the published
//               state is untouched.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/detail/object_header.hpp>

#include "platform/robust_mutex.hpp"

namespace shmstate::detail {

inline constexpr std::uint32_t kAtomLayoutVersion = 1;

struct AtomBuffer {
  std::atomic<std::uint64_t> offset;    // of the block, from the segment start; 0 = none
  std::atomic<std::uint64_t> capacity;  // bytes of the block (a power of two)
  std::atomic<std::uint64_t> length;    // bytes of serialized JSON in it
};

struct alignas(64) AtomState {
  ObjectHeader header;                 // 0
  std::atomic<std::uint64_t> current;  // 8
  EventCount changes;                  // 16
  std::uint64_t reserved0;             // 24
  AtomBuffer buffers[2];               // 32
  std::uint8_t reserved1[128 - 80];    // 80
  platform::RobustMutex writer;        // 128
};
static_assert(sizeof(AtomState) == 192);
static_assert(offsetof(AtomState, writer) == 128);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The highest version a reader accepts (2^62: centuries of writes at one per
// nanosecond). A published word beyond it, all ones say, is damage: Corrupt,
// never a value, and the writer's version + 1 can never wrap around.
inline constexpr std::uint64_t kMaxAtomVersion = std::uint64_t{1} << 62;

constexpr std::uint64_t atom_version(std::uint64_t word) { return word >> 1; }
constexpr unsigned atom_buffer(std::uint64_t word) { return static_cast<unsigned>(word & 1); }

// The seqlock's read side: the copy may race with a writer reusing the
// buffer, and is thrown away when the published word changed meanwhile; the
// acquire fence orders the copy before the re-check of the word.
// ThreadSanitizer (tools/test.sh's TSan build) sees the copy as the race it is
// by design and does not model fences (GCC refuses atomic_thread_fence under
// -fsanitize=thread), so there the copy's reads are ignored and the re-check
// is a read-modify-write, which it does model: the same protocol, checked for
// everything around it.
#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
inline void seqlock_copy(std::string& out, const std::byte* p, std::uint64_t n) {
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
  out.assign(reinterpret_cast<const char*>(p), n);
  AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
}
inline std::uint64_t seqlock_recheck(std::atomic<std::uint64_t>& word) {
  return word.fetch_add(0, std::memory_order_acq_rel);
}
#else
inline void seqlock_copy(std::string& out, const std::byte* p, std::uint64_t n) {
  out.assign(reinterpret_cast<const char*>(p), n);
}
inline std::uint64_t seqlock_recheck(const std::atomic<std::uint64_t>& word) {
  std::atomic_thread_fence(std::memory_order_acquire);
  return word.load(std::memory_order_relaxed);
}
#endif

}  // namespace shmstate::detail
