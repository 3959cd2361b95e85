// The process-local view of one mapped segment, shared by all handles to it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <shmstate/detail/object_header.hpp>
#include <shmstate/segment.hpp>

#include "segment/layout.hpp"

namespace shmstate::detail {

struct ObjectSlot {
  std::byte* address;
  ObjectInfo info;
  // True when this call created the object (and ran init); false when it
  // found an existing one. Exactly one of any number of racing creators of a
  // name sees true.
  bool created = false;
};

struct SegmentImpl {
  std::string name;
  std::byte* base = nullptr;
  std::uint64_t size = 0;
  SegmentHeader* header = nullptr;
  RegistryEntry* entries = nullptr;
  std::uint32_t capacity = 0;
  IndexSlot* index = nullptr;
  std::uint32_t index_capacity = 0;  // a power of two (validate_header)
  // Mapped PROT_READ (Segment::Access::ReadOnly): nothing may store into it.
  bool read_only = false;
  // Set once check_registry() passed under the registry mutex in this process
  // (the first creation checks the whole index, later ones their own path).
  std::atomic<bool> registry_checked{false};

  // "segment 'x'" / "segment 'x', object 'y'".
  std::string where(std::string_view object = {}) const;

  // Throws Error(PermissionDenied) naming `object` if the mapping is
  // read-only: "<where>: cannot <action>: the segment is open read-only".
  // Every writer that knows its segment calls it before its first store.
  void require_writable(std::string_view object, std::string_view action) const {
    if (read_only) [[unlikely]] refuse_write(object, action);
  }
  [[noreturn]] void refuse_write(std::string_view object, std::string_view action) const;

  // Finds `object`, or creates it: under the registry mutex reserves an entry,
  // allocates `bytes` aligned to `align` from the heap, zeroes them, runs
  // init(address) and publishes the entry. init may throw (nothing is
  // published then, and the block is leaked); it must not block.
  // With CreateMode::Exclusive an existing object of that name (whatever its
  // kind) is Error(AlreadyExists) instead of being returned; the check is made
  // under the registry mutex, so of racing exclusive creators exactly one wins.
  // ObjectSlot::created says which case happened.
  // Throws KindMismatch (OpenOrCreate only), AlreadyExists (Exclusive only),
  // SegmentFull (registry or heap), InvalidArgument (name).
  ObjectSlot find_or_create(std::string_view object, Kind kind, std::uint64_t bytes,
                            std::uint64_t align, const std::function<void(std::byte*)>& init,
                            CreateMode mode = CreateMode::OpenOrCreate);

  // Finds an existing object of `kind`. Throws NotFound, KindMismatch.
  ObjectSlot find_existing(std::string_view object, Kind kind) const;

  // Lock-free: an index lookup (expected O(1) whatever the registry's size).
  // Throws Corrupt for a damaged index word or entry on the name's probe path.
  std::optional<ObjectInfo> find(std::string_view object) const;
  // Every ready entry in registry order (a scan of the whole table).
  std::vector<ObjectInfo> objects() const;

  // Checks the registry against its index: entries [0, registry_used) ready
  // and valid, each found by its name through the index, no other slot in
  // use, the entries past registry_used free (one in-flight creation
  // tolerated when `locked` is false). Throws Corrupt naming what disagrees.
  // O(capacity); run once per process before its first creation and by
  // info() (dump), so a damaged index word is reported, never trusted into a
  // second object of one name.
  void check_registry(bool locked) const;

  // Bump-allocates from the heap: one CAS on heap_top, so a process killed
  // around it leaks at most this block. Returns the offset. Throws
  // SegmentFull naming `object`, with requested and free bytes.
  std::uint64_t allocate(std::uint64_t bytes, std::uint64_t align, std::string_view object);

  // Recyclable blocks for variable-size data (atom values). A block of class c
  // holds 2^(c+6) bytes, is 64-aligned and has a BlockHeader just before it
  // (layout.hpp) naming its class and its owner: the offset of the owning
  // object's shared state. allocate_block returns the offset and sets
  // *capacity; it pops the class's free list (only a head whose header says
  // "free, this class": a damaged list is dropped, never followed) or
  // bump-allocates, and the block's header then says "owned by `owner`".
  // Throws SegmentFull naming `object`. free_block pushes the block back if
  // its header says it is `owner`'s block of `capacity` bytes (else it is
  // refused, false: a double free, or damaged metadata pointing at another
  // object's block); REQUIRES: nobody will write the block again (stale
  // readers may still read it: they must validate).
  std::uint64_t allocate_block(std::uint64_t bytes, std::uint64_t* capacity, std::uint64_t owner,
                               std::string_view object);
  bool free_block(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) noexcept;
  // True if [offset, offset + capacity) is a block of exactly `capacity`
  // bytes whose header says it is owned by `owner`: the check before a block
  // is written. Lock-free (a few relaxed loads of one cache line).
  bool block_owned_by(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) const noexcept;
  // "" if block_owned_by(), else what the bytes there are ("offset X,
  // capacity Y: the block belongs to the object at offset Z ...").
  std::string block_problem(std::uint64_t offset, std::uint64_t capacity, std::uint64_t owner) const;
  // "" or "<where>: corrupt free list ...": a list head that is not a free
  // block of its class, seen so several times (for info()/dump).
  std::string free_lists_problem() const;

  // True if [offset, offset + bytes) lies inside the heap.
  bool in_heap(std::uint64_t offset, std::uint64_t bytes) const noexcept {
    return offset >= header->heap_begin && offset <= size && bytes <= size - offset;
  }

  // A notifier found that someone waits for its object through the watch
  // summary (event_count.hpp, kWatchBit): an atom's notifier that cleared
  // kWatchBit, or the go() that fired a signal whose word has
  // one_shot::kWatch (a wide wait). Bumps the object's bucket of the watch
  // summary, then notifies the summary's event count. `state_offset` is the
  // object's state offset (bucket: watch_bucket). The one function both use.
  void note_watched_change(std::uint64_t state_offset) noexcept {
    header->watch.buckets[watch_bucket(state_offset)].fetch_add(1, std::memory_order_seq_cst);
    header->watch.changes.notify_all();
  }

  // Validated access to an object's state struct: the slot must be big enough
  // and aligned, and its ObjectHeader must carry the slot's kind and `version`.
  template <class State>
  State* state_of(const ObjectSlot& slot, std::uint32_t version) const {
    check_state(slot, sizeof(State), alignof(State), version);
    return reinterpret_cast<State*>(slot.address);
  }

  SegmentInfo info() const;

 private:
  // nullopt for a free/reserving entry; throws Corrupt for an invalid ready one.
  std::optional<ObjectInfo> read_entry(std::uint32_t index) const;
  std::optional<ObjectSlot> lookup(std::string_view object) const;
  // Index slot of entry `e` on the probe path of `hash`, or nullptr.
  IndexSlot* index_slot_of(std::uint32_t hash, std::uint32_t e, std::string_view object) const;
  void index_insert(std::uint32_t hash, std::uint32_t e, std::string_view object);
  Error corrupt_index(std::uint32_t pos, std::string_view object, const std::string& what) const;
  void check_state(const ObjectSlot& slot, std::size_t bytes, std::size_t align,
                   std::uint32_t version) const;
  // The header of the block at `offset` (its payload), if offset and
  // capacity lie in the heap with room for a header; nullptr otherwise.
  BlockHeader* block_header(std::uint64_t offset, std::uint64_t capacity) const noexcept;
  BlockHeader* free_block_at(std::uint64_t offset, unsigned c) const noexcept;
  // After a creator died holding the registry mutex: its reservation (entry
  // registry_used, and its index slot) is undone, or, if it had published,
  // registry_used is moved past it.
  void reclaim_dead_creation() noexcept;
};

// The name index's hash (part of the segment layout, see layout.hpp): FNV-1a
// over the name's bytes, folded to 32 bits.
std::uint32_t fnv1a_name_hash(std::string_view name) noexcept;
// What the registry calls; tests point it at a function that makes names
// collide (in forked children too, which inherit it). Every process that uses
// a segment must use the same function.
extern std::uint32_t (*name_hash)(std::string_view name) noexcept;

// Name checks shared by the library and the CLI; throw InvalidArgument.
void validate_segment_name(std::string_view name);
void validate_object_name(std::string_view segment, std::string_view object);

// Fills a SegmentInfo from a validated header and registry (used for both
// mapped segments and the read-only scan of Segment::list()).
SegmentInfo summarize(std::string_view name, const SegmentHeader& header,
                      const RegistryEntry* entries, std::uint32_t capacity, unsigned mode);

// A temp name for a segment being built: ".shmstate-tmp-" + platform::writer_tag()
// (who made it, for the sweep of dead creators' files, and 64 random bits).
std::string random_temp_segment_name();
// What Segment::create calls for each temp name it tries; tests point it
// elsewhere to squat names. Defaults to random_temp_segment_name.
extern std::string (*temp_segment_name)();

// Segment::create's protocol with one more step: `fill` (if set) runs on the
// new segment before it is published, while only this process can reach it
// (it is under its temp name). If fill throws, the temp file is removed and
// nothing is published; the error propagates. Throws what create throws
// (AlreadyExists from the publishing rename, after fill has run).
Segment create_segment(std::string_view name, const SegmentOptions& options,
                       const std::function<void(Segment&)>& fill);

// Segment::restore (lib/store/segment_snapshot.cpp). With missing_ok, no file
// at `path` returns nullopt instead of throwing NotFound.
std::optional<Segment> restore_segment(std::string_view name, const std::string& path, const RestoreOptions& options,
                                       bool missing_ok);

// Validates a header found in a file of `file_size` bytes. Throws
// LayoutMismatch (not ours / other version) or Corrupt, naming `name`.
void validate_header(std::string_view name, const std::byte* bytes, std::uint64_t file_size);

}  // namespace shmstate::detail
