// Recyclable value blocks: power-of-two size classes with one free list each,
// guarded by the segment's robust block mutex. Every block has a header
// (layout.hpp, BlockHeader) saying its class, whether it is free and who owns
// it; nothing is handed out, written or freed unless its header says so.
//
// Crash safety: the header of a block a list head or a live descriptor points
// at is always whole and says what they expect, because
//   pop   unlinks first (the one store to the head), then claims the header;
//   push  releases the header first, then links it (the one store to the head);
//   bump  writes the header of a block nobody else can reach yet.
// A process killed between two of these steps leaves a block that no list and
// no descriptor reaches: leaked, never handed out twice. No repair is needed
// after an owner death of the block mutex.
#include <bit>
#include <chrono>
#include <cstring>
#include <thread>

#include "platform/crash_point.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate::detail {

namespace {
unsigned class_for(std::uint64_t bytes) {
  std::uint64_t rounded = std::bit_ceil(std::max<std::uint64_t>(bytes, std::uint64_t{1} << kMinBlockShift));
  return static_cast<unsigned>(std::countr_zero(rounded)) - kMinBlockShift;
}

std::uint64_t class_bytes(unsigned c) { return std::uint64_t{1} << (c + kMinBlockShift); }

std::string num(std::uint64_t v) { return std::to_string(v); }
}  // namespace

BlockHeader* SegmentImpl::block_header(std::uint64_t offset, std::uint64_t capacity) const noexcept {
  if (offset % 64 != 0 || offset < header->heap_begin + kBlockHeaderSize || !in_heap(offset, capacity)) return nullptr;
  return reinterpret_cast<BlockHeader*>(base + offset - kBlockHeaderSize);
}

bool SegmentImpl::block_owned_by(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) const noexcept {
  const BlockHeader* h = block_header(offset, capacity);
  return h != nullptr && h->tag.load(std::memory_order_relaxed) == (kBlockTag ^ offset) &&
         h->state.load(std::memory_order_relaxed) == kBlockOwned &&
         h->owner.load(std::memory_order_relaxed) == owner && std::has_single_bit(capacity) &&
         capacity >= class_bytes(0) && h->klass.load(std::memory_order_relaxed) == class_for(capacity);
}

std::string SegmentImpl::block_problem(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) const {
  const std::string at = "offset " + num(offset) + ", capacity " + num(capacity);
  const BlockHeader* h = block_header(offset, capacity);
  if (h == nullptr) return at + " is not a block of the heap";
  std::uint64_t tag = h->tag.load(std::memory_order_relaxed);
  std::uint32_t state = h->state.load(std::memory_order_relaxed);
  std::uint32_t klass = h->klass.load(std::memory_order_relaxed);
  std::uint64_t by = h->owner.load(std::memory_order_relaxed);
  if (tag != (kBlockTag ^ offset)) return at + ": no block header there (tag word " + num(tag) + ")";
  if (state == kBlockFree) return at + ": the block is free";
  if (state != kBlockOwned) return at + ": the block header's state word " + num(state) + " is neither free nor owned";
  if (by != owner) {
    std::string whose = "the object at offset " + num(by);
    try {
      for (const auto& o : objects())
        if (o.offset == by) whose = "object '" + o.name + "' (at offset " + num(by) + ")";
    } catch (...) {
      // A damaged registry: the offset says enough.
    }
    return at + ": the block belongs to " + whose + ", not to this one (at " + num(owner) + ")";
  }
  if (!std::has_single_bit(capacity) || capacity < class_bytes(0) || klass != class_for(capacity))
    return at + ": the block is of size class " + num(klass) + " (" +
           (klass < kSizeClasses ? num(class_bytes(klass)) + " bytes" : std::string("no such class")) + ")";
  if (!block_owned_by(offset, capacity, owner)) return at + ": the block header changed while it was read";
  return "";
}

// A free block of class c at `offset`, or nullptr. Holding the block mutex.
BlockHeader* SegmentImpl::free_block_at(std::uint64_t offset, unsigned c) const noexcept {
  BlockHeader* h = block_header(offset, class_bytes(c));
  if (h == nullptr || h->tag.load(std::memory_order_relaxed) != (kBlockTag ^ offset) ||
      h->state.load(std::memory_order_relaxed) != kBlockFree || h->klass.load(std::memory_order_relaxed) != c ||
      h->owner.load(std::memory_order_relaxed) != 0)
    return nullptr;
  return h;
}

std::uint64_t SegmentImpl::allocate_block(std::uint64_t bytes, std::uint64_t* capacity, std::uint64_t owner,
                                          std::string_view object) {
  if (bytes > kMaxSegmentSize)
    throw Error(ErrorCode::SegmentFull, where(object) + ": segment full: need " + std::to_string(bytes) + " bytes");
  unsigned c = class_for(bytes);
  std::uint64_t block = class_bytes(c);
  {
    platform::RobustLock lock(header->block_mutex, where(), []() noexcept {});
    std::uint64_t head = header->free_heads[c].load(std::memory_order_relaxed);
    if (head != 0) {
      BlockHeader* h = free_block_at(head, c);
      if (h == nullptr) {
        // Damaged: not a free block of this class (another object's block or
        // state, say). Drop the list, never follow or hand it out.
        header->free_heads[c].store(0, std::memory_order_relaxed);
      } else {
        std::uint64_t next = h->next.load(std::memory_order_relaxed);
        // Drop the damaged rest of the list; a block pointing at itself would
        // otherwise be handed out twice.
        if (next != 0 && (next == head || free_block_at(next, c) == nullptr)) next = 0;
        header->free_heads[c].store(next, std::memory_order_relaxed);
        SHMSTATE_CRASH_POINT("blocks.after_pop");
        // Unreachable now: claim it.
        h->next.store(0, std::memory_order_relaxed);
        h->owner.store(owner, std::memory_order_relaxed);
        h->state.store(kBlockOwned, std::memory_order_release);
        SHMSTATE_CRASH_POINT("blocks.after_claim");
        *capacity = block;
        return head;
      }
    }
  }
  std::uint64_t offset = allocate(kBlockHeaderSize + block, 64, object) + kBlockHeaderSize;
  SHMSTATE_CRASH_POINT("blocks.after_bump");
  // Nobody else can reach this block yet: a process killed while writing its
  // header leaks it.
  BlockHeader* h = block_header(offset, block);
  h->klass.store(c, std::memory_order_relaxed);
  h->owner.store(owner, std::memory_order_relaxed);
  h->next.store(0, std::memory_order_relaxed);
  h->state.store(kBlockOwned, std::memory_order_relaxed);
  h->tag.store(kBlockTag ^ offset, std::memory_order_release);
  *capacity = block;
  return offset;
}

bool SegmentImpl::free_block(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) noexcept {
  // Only a block of this owner and class is pushed: a double free or a
  // foreign block (damaged metadata) is refused, and the block leaks.
  if (!block_owned_by(offset, capacity, owner)) return false;
  unsigned c = class_for(capacity);
  if (c >= kSizeClasses) return false;
  BlockHeader* h = block_header(offset, capacity);
  try {
    platform::RobustLock lock(header->block_mutex, where(), []() noexcept {});
    if (!block_owned_by(offset, capacity, owner)) return false;
    std::uint64_t head = header->free_heads[c].load(std::memory_order_relaxed);
    // Released first, linked last (see the top of the file).
    h->state.store(kBlockFree, std::memory_order_relaxed);
    h->owner.store(0, std::memory_order_relaxed);
    h->next.store(head, std::memory_order_relaxed);
    SHMSTATE_CRASH_POINT("blocks.before_push");
    header->free_heads[c].store(offset, std::memory_order_release);
    return true;
  } catch (...) {
    // An unrecoverable mutex: leak the block rather than fail the caller.
    return false;
  }
}

std::string SegmentImpl::free_lists_problem() const {
  for (unsigned c = 0; c < kSizeClasses; ++c) {
    // Lock-free (dump may map read-only): a head read while a holder pops or
    // pushes may look wrong for an instant; damage stays. Report only a head
    // that is wrong every time it is looked at.
    std::uint64_t head = 0;
    bool damaged = true;
    for (int look = 0; look < 4 && damaged; ++look) {
      if (look > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      head = header->free_heads[c].load(std::memory_order_acquire);
      damaged = head != 0 && free_block_at(head, c) == nullptr &&
                header->free_heads[c].load(std::memory_order_acquire) == head;
    }
    if (damaged)
      return where() + ": corrupt free list of " + num(class_bytes(c)) + "-byte blocks: its head, offset " + num(head) +
             ", is not a free block of that size";
  }
  return "";
}

}  // namespace shmstate::detail
