// The bytes of a segment (layout version 4).
//
//   offset 0      SegmentHeader (1024 bytes)
//   registry_offset   RegistryEntry[registry_capacity] (128 bytes each)
//   index_offset  IndexSlot[index_capacity] (8 bytes each): the name index
//   heap_begin    heap: objects' shared states (bump-allocated, permanent) and
//                 value blocks (power-of-two classes, recycled through free
//                 lists), each after its 64-byte BlockHeader (see below)
//   size          end of the file
//
// Version 3 added the block headers (version 2 had bare blocks and kept a
// free block's next offset in its first 8 bytes). Version 4 added the watch
// summary (a library of version 3 would change watched atoms without telling
// it, so its segments are refused by version, LayoutMismatch).
//
// Fields never change after publication except: heap_top (atomic, only grows),
// the registry mutex, registry_used (only grows, under the mutex), registry
// entries (see EntryState) and index slots (see "The name index"). magic and
// layout_version stay at offsets 0 and 8 in every future layout, so any
// version can be recognised and refused by name.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <shmstate/detail/event_count.hpp>

#include "platform/process.hpp"
#include "platform/robust_mutex.hpp"

namespace shmstate::detail {

// "SHMSTATE" little-endian.
inline constexpr std::uint64_t kSegmentMagic = 0x45544154534d4853ULL;
inline constexpr std::size_t kRegistryEntrySize = 128;
inline constexpr std::size_t kObjectNameField = 64;  // 63 characters + NUL
inline constexpr std::uint32_t kMaxRegistryCapacity = 65536;
inline constexpr std::uint64_t kMaxSegmentSize = std::uint64_t{1} << 40;
// Block size classes: 64 bytes (2^6) up to 1 TiB (2^40).
inline constexpr unsigned kMinBlockShift = 6;
inline constexpr unsigned kSizeClasses = 40 - kMinBlockShift + 1;

// Registry entries are handed out in order: entries [0, registry_used) are
// ready, the others free, except the one at registry_used while its creator
// holds the registry mutex (reserving, or ready just before registry_used
// moves past it).
//
// The name index. index_capacity is a power of two at least twice the
// registry capacity (load at most 1/2: about 1.5 probes for a hit, 2.5 for a
// miss). Slot word: 0 = empty, else (name_hash(name) << 32) | (entry + 1).
// Linear probing from name_hash(name) & (index_capacity - 1); a slot is
// written once, when its entry is reserved, and emptied again only when that
// reservation dies unpublished (nothing was inserted after it, so no other
// name's probe path runs through it). The hash is part of the layout: FNV-1a
// over the name's bytes, folded to 32 bits (segment_impl.hpp, name_hash).
// The index is a copy of what the entries say: it is checked against them
// (SegmentImpl::check_registry) and a disagreement is Corrupt.
constexpr std::uint32_t index_capacity_for(std::uint32_t registry_capacity) {
  std::uint32_t c = 16;
  while (c < 2 * std::uint64_t{registry_capacity}) c *= 2;
  return c;
}

// The watch summary (issue 13; the protocol is in event_count.hpp, at
// kWatchBit): watch dispatchers of every process sleep on `changes`, one word
// per segment whatever the number of watched atoms; a notifier that finds an
// atom's kWatchBit set bumps the atom's bucket counter, then notifies
// `changes`. A dispatcher keeps its own copy of the counters and visits only
// the watched atoms of buckets whose counter moved. The counters are plain
// numbers nobody resets (any value is valid: damage costs at most a visit of
// a bucket's atoms); the bucket is computed from the atom's state offset
// (watch_bucket), never read from the segment.
inline constexpr unsigned kWatchBuckets = 64;
struct WatchSummary {
  EventCount changes;                                   // 0
  std::uint8_t reserved[64 - sizeof(EventCount)];       // 8
  std::atomic<std::uint32_t> buckets[kWatchBuckets];    // 64
};
static_assert(std::is_standard_layout_v<WatchSummary>);
static_assert(sizeof(WatchSummary) == 64 + 4 * kWatchBuckets);

// The bucket of the atom whose shared state is at `state_offset` (the same in
// every process: offsets are from the segment start).
constexpr unsigned watch_bucket(std::uint64_t state_offset) {
  return static_cast<unsigned>(((state_offset >> 6) * 0x9E3779B97F4A7C15ULL) >> 58) % kWatchBuckets;
}

struct SegmentHeader {
  std::uint64_t magic;                    // 0
  std::uint32_t layout_version;           // 8
  std::uint32_t header_size;              // 12: sizeof(SegmentHeader)
  std::uint64_t size;                     // 16: file size at creation
  std::uint64_t created_unix_ns;          // 24
  platform::ProcessIdentity creator;      // 32
  std::uint64_t pid_namespace;            // 48: inode of the creator's /proc/self/ns/pid
  std::uint64_t registry_offset;          // 56
  std::uint32_t registry_capacity;        // 64
  std::uint32_t reserved0;                // 68
  std::uint64_t heap_begin;               // 72
  std::uint64_t index_offset;             // 80: registry_offset + entries, 64-aligned
  std::uint32_t index_capacity;           // 88: index_capacity_for(registry_capacity)
  std::atomic<std::uint32_t> registry_used;  // 92: entries handed out (see above)
  std::uint8_t reserved1[128 - 96];       // 96
  alignas(64) std::atomic<std::uint64_t> heap_top;  // 128: next free heap byte
  std::uint8_t reserved2[64 - 8];
  platform::RobustMutex registry_mutex;   // 192: serialises object creation
  platform::RobustMutex block_mutex;      // 256: serialises the free lists
  // 320: free_heads[c] is the offset of the first free block of 2^(c+6)
  // bytes (0 = empty); a free block's header holds the next offset. Push and
  // pop are each one store to a head, and a block's header says "free" only
  // while it is on a list or unreachable (blocks.cpp), so a holder killed
  // midway leaves every list well formed (at worst one block leaked).
  std::atomic<std::uint64_t> free_heads[kSizeClasses];
  std::uint8_t reserved3[640 - 320 - 8 * kSizeClasses];
  alignas(64) WatchSummary watch;         // 640: see WatchSummary (layout 4)
  std::uint8_t reserved4[1024 - 640 - sizeof(WatchSummary)];  // room for later layouts' fields
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == 1024);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, index_offset) == 80);
static_assert(offsetof(SegmentHeader, registry_used) == 92);
static_assert(offsetof(SegmentHeader, heap_top) == 128);
static_assert(offsetof(SegmentHeader, registry_mutex) == 192);
static_assert(offsetof(SegmentHeader, free_heads) == 320);
static_assert(offsetof(SegmentHeader, watch) == 640);
static_assert(kWatchBuckets == 64 && (kWatchBuckets & (kWatchBuckets - 1)) == 0);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// free -> reserving(owner) -> ready; ready is final (objects are never deleted),
// which is what lets readers scan the registry and follow the index without a
// lock. A reserving entry exists only while its owner holds the registry
// mutex, so an owner death seen as EOWNERDEAD is exactly when a reserving entry
// (and its index slot) is reclaimed.
enum EntryState : std::uint32_t {
  kEntryFree = 0,
  kEntryReserving = 1,
  kEntryReady = 2,
};

struct RegistryEntry {
  std::atomic<std::uint32_t> state;  // EntryState; stored last (release) when publishing
  std::uint32_t kind;                // shmstate::Kind
  std::uint64_t offset;              // object's shared state, from the segment start
  std::uint64_t size;
  platform::ProcessIdentity owner;   // who reserved it
  char name[kObjectNameField];       // NUL-terminated
  std::uint8_t reserved[kRegistryEntrySize - 104];
};
static_assert(std::is_standard_layout_v<RegistryEntry>);
static_assert(sizeof(RegistryEntry) == kRegistryEntrySize);

// The header of a value block: the 64 bytes just before the block's payload
// (a block's offset, as free_heads, free-list links and atom buffers hold it,
// is its payload's, 64-aligned; its header is at offset - 64). It says what
// the bytes after it are, so that no write follows a damaged offset into
// another object:
//   tag    kBlockTag ^ the payload's offset: a header copied or pointed at
//          elsewhere does not fit
//   klass  size class c: the payload holds 2^(c + 6) bytes
//   state  kBlockFree (on a free list, or leaked by a process killed while
//          pushing or popping) or kBlockOwned
//   owner  owned: the offset of the owning object's shared state (states are
//          never freed or moved, so no other object ever has that offset);
//          free: 0
//   next   free: the next free block of the class (0 = end); owned: 0
// Only the block mutex's holder changes the header of a block on a free list,
// and a block's owner (holding its own lock, e.g. an atom's writer mutex) is
// the only one to free it. Every change is ordered so that a block a live
// descriptor or a list head points at always has a whole, matching header
// (blocks.cpp); the fields are atomics so that readers racing a change read
// old or new words, never torn ones.
inline constexpr std::uint64_t kBlockHeaderSize = 64;
// "SHMBLOCK" little-endian, xored with the payload's offset.
inline constexpr std::uint64_t kBlockTag = 0x4b434f4c424d4853ULL;
enum BlockState : std::uint32_t {
  kBlockFree = 0x46524545,   // "EERF"
  kBlockOwned = 0x4f574e44,  // "DNWO"
};

struct BlockHeader {
  std::atomic<std::uint64_t> tag;     // 0
  std::atomic<std::uint32_t> klass;   // 8
  std::atomic<std::uint32_t> state;   // 12
  std::atomic<std::uint64_t> owner;   // 16
  std::atomic<std::uint64_t> next;    // 24
  std::uint8_t reserved[kBlockHeaderSize - 32];
};
static_assert(std::is_standard_layout_v<BlockHeader>);
static_assert(sizeof(BlockHeader) == kBlockHeaderSize);

// One slot of the name index (see above).
using IndexSlot = std::atomic<std::uint64_t>;
inline constexpr std::size_t kIndexSlotSize = sizeof(IndexSlot);
static_assert(kIndexSlotSize == 8);

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// Where the index and the heap start for a registry of `capacity` entries
// (the one place these are computed: creation, validation, tests).
constexpr std::uint64_t index_offset_for(std::uint32_t capacity) {
  return align_up(sizeof(SegmentHeader) + std::uint64_t{capacity} * kRegistryEntrySize, 64);
}
constexpr std::uint64_t heap_begin_for(std::uint32_t capacity) {
  return align_up(index_offset_for(capacity) + std::uint64_t{index_capacity_for(capacity)} * kIndexSlotSize, 64);
}

}  // namespace shmstate::detail
