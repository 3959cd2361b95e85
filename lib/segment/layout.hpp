// The bytes of a segment (layout version 1).
//
//   offset 0      SegmentHeader (1024 bytes)
//   registry_offset   RegistryEntry[registry_capacity] (128 bytes each)
//   heap_begin    heap: objects' shared states (bump-allocated, permanent) and
//                 value blocks (power-of-two classes, recycled through free lists)
//   size          end of the file
//
// Fields never change after publication except: heap_top (atomic, only grows),
// the registry mutex, and registry entries (see EntryState). magic and
// layout_version stay at offsets 0 and 8 in every future layout, so any
// version can be recognised and refused by name.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

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
  std::uint8_t reserved1[128 - 80];       // 80
  alignas(64) std::atomic<std::uint64_t> heap_top;  // 128: next free heap byte
  std::uint8_t reserved2[64 - 8];
  platform::RobustMutex registry_mutex;   // 192: serialises object creation
  platform::RobustMutex block_mutex;      // 256: serialises the free lists
  // 320: free_heads[c] is the offset of the first free block of 2^(c+6)
  // bytes (0 = empty); a free block's first 8 bytes hold the next offset.
  // Push and pop are each one store to a head, so a holder killed midway
  // leaves every list well formed (at worst one block leaked).
  std::atomic<std::uint64_t> free_heads[kSizeClasses];
  std::uint8_t reserved3[1024 - 320 - 8 * kSizeClasses];  // room for later layouts' fields
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == 1024);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, heap_top) == 128);
static_assert(offsetof(SegmentHeader, registry_mutex) == 192);
static_assert(offsetof(SegmentHeader, free_heads) == 320);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// free -> reserving(owner) -> ready; ready is final (objects are never deleted),
// which is what lets readers scan the registry without a lock. A reserving
// entry exists only while its owner holds the registry mutex, so an owner
// death seen as EOWNERDEAD is exactly when reserving entries are reclaimed.
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

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace shmstate::detail
