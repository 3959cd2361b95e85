// Recyclable value blocks: power-of-two size classes with one free list each,
// guarded by the segment's robust block mutex.
#include <bit>
#include <cstring>

#include "platform/crash_point.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate::detail {

namespace {
unsigned class_for(std::uint64_t bytes) {
  std::uint64_t rounded = std::bit_ceil(std::max<std::uint64_t>(bytes, std::uint64_t{1} << kMinBlockShift));
  return static_cast<unsigned>(std::countr_zero(rounded)) - kMinBlockShift;
}
}  // namespace

std::uint64_t SegmentImpl::allocate_block(std::uint64_t bytes, std::uint64_t* capacity, std::string_view object) {
  if (bytes > kMaxSegmentSize)
    throw Error(ErrorCode::SegmentFull, where(object) + ": segment full: need " + std::to_string(bytes) + " bytes");
  unsigned c = class_for(bytes);
  std::uint64_t block = std::uint64_t{1} << (c + kMinBlockShift);
  *capacity = block;
  {
    // Nothing to repair after an owner death: each step is one store.
    platform::RobustLock lock(header->block_mutex, where(), []() noexcept {});
    auto valid = [&](std::uint64_t off) { return off % 64 == 0 && in_heap(off, block); };
    std::uint64_t head = header->free_heads[c].load(std::memory_order_relaxed);
    if (head != 0 && !valid(head)) {
      header->free_heads[c].store(0, std::memory_order_relaxed);  // damaged: drop, never follow
    } else if (head != 0) {
      std::uint64_t next = 0;
      std::memcpy(&next, base + head, sizeof next);
      // Drop the damaged rest of the list; a block pointing at itself would
      // otherwise be handed out twice.
      if (next != 0 && (!valid(next) || next == head)) next = 0;
      header->free_heads[c].store(next, std::memory_order_relaxed);
      return head;
    }
  }
  return allocate(block, 64, object);
}

void SegmentImpl::free_block(std::uint64_t offset, std::uint64_t capacity) noexcept {
  if (capacity == 0 || !std::has_single_bit(capacity) || offset % 64 != 0 || !in_heap(offset, capacity)) return;
  unsigned c = class_for(capacity);
  if (c >= kSizeClasses) return;
  try {
    platform::RobustLock lock(header->block_mutex, where(), []() noexcept {});
    std::uint64_t head = header->free_heads[c].load(std::memory_order_relaxed);
    std::memcpy(base + offset, &head, sizeof head);
    SHMSTATE_CRASH_POINT("blocks.before_push");
    header->free_heads[c].store(offset, std::memory_order_relaxed);
  } catch (...) {
    // An unrecoverable mutex: leak the block rather than fail the caller.
  }
}

}  // namespace shmstate::detail
