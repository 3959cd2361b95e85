// The object registry: a fixed table of entries in the segment, scanned
// lock-free by readers, written under the robust registry mutex.
#include <algorithm>
#include <cstring>

#include "platform/crash_point.hpp"
#include "platform/system_error.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

namespace {
bool is_name_char(char c, bool allow_colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || (allow_colon && c == ':');
}
}  // namespace

std::string_view process_state_name(ProcessState state) noexcept {
  switch (state) {
    case ProcessState::Alive: return "alive";
    case ProcessState::Dead: return "dead";
    case ProcessState::Unknown: break;
  }
  return "unknown";
}

namespace detail {

void validate_segment_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxSegmentNameLength && name.front() != '.';
  for (char c : name) ok = ok && is_name_char(c, false);
  if (!ok)
    throw Error(ErrorCode::InvalidArgument,
                "invalid segment name '" + platform::excerpt(name, platform::kMaxQuotedName) +
                    "': use 1.." + std::to_string(kMaxSegmentNameLength) +
                    " characters from [A-Za-z0-9._-], not starting with '.'");
}

void validate_object_name(std::string_view segment, std::string_view object) {
  bool ok = !object.empty() && object.size() <= kMaxObjectNameLength;
  for (char c : object) ok = ok && is_name_char(c, true);
  if (!ok)
    throw Error(ErrorCode::InvalidArgument,
                platform::where(segment) + ": invalid object name '" + platform::excerpt(object, platform::kMaxQuotedName) +
                    "': use 1.." + std::to_string(kMaxObjectNameLength) + " characters from [A-Za-z0-9._:-]");
}

std::string SegmentImpl::where(std::string_view object) const { return platform::where(name, object); }

void SegmentImpl::refuse_write(std::string_view object, std::string_view action) const {
  throw Error(ErrorCode::PermissionDenied,
              where(object) + ": cannot " + std::string(action) + ": the segment is open read-only");
}

std::optional<ObjectInfo> SegmentImpl::read_entry(std::uint32_t index) const {
  const RegistryEntry& e = entries[index];
  if (e.state.load(std::memory_order_acquire) != kEntryReady) return std::nullopt;
  auto corrupt = [&](const std::string& what) -> Error {
    return Error(ErrorCode::Corrupt, where() + ": registry entry " + std::to_string(index) + " is corrupt: " + what);
  };
  const void* nul = std::memchr(e.name, '\0', sizeof e.name);
  if (nul == nullptr) throw corrupt("name is not terminated");
  std::string object(e.name, static_cast<const char*>(nul));
  // Bytes after the NUL would make the name one thing to a lister and
  // another to a lookup (which compares the whole field).
  for (std::size_t i = object.size() + 1; i < sizeof e.name; ++i)
    if (e.name[i] != '\0') throw corrupt("name '" + platform::excerpt(object, 64) + "' has bytes after its NUL");
  try {
    validate_object_name(name, object);
  } catch (const Error&) {
    throw corrupt("invalid name");
  }
  if (kind_name(static_cast<Kind>(e.kind)) == "unknown") throw corrupt("unknown kind " + std::to_string(e.kind));
  if (e.offset < header->heap_begin || e.offset > size || e.size == 0 || e.size > size - e.offset)
    throw corrupt("object '" + object + "' at offset " + std::to_string(e.offset) + " size " +
                  std::to_string(e.size) + " lies outside the heap");
  return ObjectInfo{std::move(object), static_cast<Kind>(e.kind), e.offset, e.size};
}

std::uint32_t fnv1a_name_hash(std::string_view name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

std::uint32_t (*name_hash)(std::string_view name) noexcept = &fnv1a_name_hash;

namespace {
constexpr std::uint64_t slot_word(std::uint32_t hash, std::uint32_t e) {
  return (std::uint64_t{hash} << 32) | (std::uint64_t{e} + 1);
}
}  // namespace

Error SegmentImpl::corrupt_index(std::uint32_t pos, std::string_view object, const std::string& what) const {
  return Error(ErrorCode::Corrupt, where(object) + ": the registry index is corrupt: slot " + std::to_string(pos) +
                                       " " + what);
}

// Every probe loop below runs at most index_capacity steps and checks each
// word's entry number before using it: a damaged index is Corrupt, never an
// endless loop or a read outside the registry.
std::optional<ObjectSlot> SegmentImpl::lookup(std::string_view object) const {
  // Names are validated to be shorter than the field, so a NUL-terminated
  // copy compares with one memcmp before the validating read.
  char key[kObjectNameField] = {};
  std::memcpy(key, object.data(), std::min(object.size(), kObjectNameField - 1));
  const std::uint32_t hash = name_hash(object);
  const std::uint32_t mask = index_capacity - 1;
  std::uint32_t pos = hash & mask;
  for (std::uint32_t probe = 0; probe < index_capacity; ++probe, pos = (pos + 1) & mask) {
    // Acquire pairs with the creator's release of the slot; the entry's own
    // state (acquire below) is what says whether its fields may be read.
    const std::uint64_t word = index[pos].load(std::memory_order_acquire);
    if (word == 0) return std::nullopt;
    const std::uint64_t e1 = word & 0xffffffffu;
    if (e1 == 0 || e1 > capacity)
      throw corrupt_index(pos, object, "names entry " + std::to_string(e1) + " of " + std::to_string(capacity));
    if (word >> 32 != hash) continue;
    const auto e = static_cast<std::uint32_t>(e1 - 1);
    // Not ready: a creation in progress (or one that died): not an object yet.
    if (entries[e].state.load(std::memory_order_acquire) != kEntryReady) continue;
    // Name and NUL only: read_entry then refuses bytes after the NUL (Corrupt),
    // so a damaged entry is reported, not skipped and created a second time.
    if (std::memcmp(entries[e].name, key, object.size() + 1) != 0) continue;  // a 32-bit hash collision
    if (auto info = read_entry(e); info && info->name == object)
      return ObjectSlot{base + info->offset, std::move(*info)};
  }
  throw corrupt_index(pos, object, "is on a probe path with no empty slot");
}

IndexSlot* SegmentImpl::index_slot_of(std::uint32_t hash, std::uint32_t e, std::string_view object) const {
  const std::uint32_t mask = index_capacity - 1;
  const std::uint64_t want = slot_word(hash, e);
  std::uint32_t pos = hash & mask;
  for (std::uint32_t probe = 0; probe < index_capacity; ++probe, pos = (pos + 1) & mask) {
    const std::uint64_t word = index[pos].load(std::memory_order_acquire);
    if (word == want) return &index[pos];
    if (word == 0) return nullptr;
    const std::uint64_t e1 = word & 0xffffffffu;
    if (e1 == 0 || e1 > capacity)
      throw corrupt_index(pos, object, "names entry " + std::to_string(e1) + " of " + std::to_string(capacity));
  }
  return nullptr;
}

// REQUIRES: the registry mutex.
void SegmentImpl::index_insert(std::uint32_t hash, std::uint32_t e, std::string_view object) {
  const std::uint32_t mask = index_capacity - 1;
  std::uint32_t pos = hash & mask;
  for (std::uint32_t probe = 0; probe < index_capacity; ++probe, pos = (pos + 1) & mask) {
    const std::uint64_t word = index[pos].load(std::memory_order_relaxed);
    if (word == 0) {
      // Release: a reader that sees the slot sees the entry's reserving state
      // and name (it still reads the fields only after acquiring kEntryReady).
      index[pos].store(slot_word(hash, e), std::memory_order_release);
      return;
    }
    const std::uint64_t e1 = word & 0xffffffffu;
    if (e1 == 0 || e1 > capacity)
      throw corrupt_index(pos, object, "names entry " + std::to_string(e1) + " of " + std::to_string(capacity));
  }
  throw corrupt_index(pos, object, "is on a probe path with no empty slot");
}

std::optional<ObjectInfo> SegmentImpl::find(std::string_view object) const {
  validate_object_name(name, object);
  if (auto slot = lookup(object)) return slot->info;
  return std::nullopt;
}

std::vector<ObjectInfo> SegmentImpl::objects() const {
  std::vector<ObjectInfo> out;
  for (std::uint32_t i = 0; i < capacity; ++i)
    if (auto info = read_entry(i)) out.push_back(std::move(*info));
  return out;
}

namespace {
Error kind_mismatch(const SegmentImpl& s, const ObjectInfo& info, Kind wanted) {
  return Error(ErrorCode::KindMismatch,
               s.where(info.name) + " is " + a_kind(info.kind) + ", not " + a_kind(wanted));
}
void clear_entry(RegistryEntry& e) noexcept {
  e.kind = 0;
  e.offset = 0;
  e.size = 0;
  e.owner = {};
  std::memset(e.name, 0, sizeof e.name);
  e.state.store(kEntryFree, std::memory_order_release);
}
}  // namespace

ObjectSlot SegmentImpl::find_existing(std::string_view object, Kind kind) const {
  validate_object_name(name, object);
  auto slot = lookup(object);
  if (!slot) throw Error(ErrorCode::NotFound, where(object) + ": no such object");
  if (slot->info.kind != kind) throw kind_mismatch(*this, slot->info, kind);
  return *slot;
}

void SegmentImpl::reclaim_dead_creation() noexcept {
  // Only the registry mutex holder writes entries and slots, and that holder
  // died: its reservation will never be published. It can only be the entry
  // at registry_used (entries are handed out in order). Each step below is
  // one store and the whole is idempotent, so a reclaimer killed midway
  // leaves the next one the same work.
  const std::uint32_t used = header->registry_used.load(std::memory_order_relaxed);
  if (used >= capacity) return;  // full, or damaged (check_registry says which)
  RegistryEntry& e = entries[used];
  const std::uint32_t state = e.state.load(std::memory_order_relaxed);
  if (state == kEntryReady) {
    header->registry_used.store(used + 1, std::memory_order_release);  // it published: count it
    return;
  }
  if (state != kEntryReserving) return;
  const void* nul = std::memchr(e.name, '\0', sizeof e.name);
  if (nul != nullptr) {
    std::string_view object(e.name, static_cast<std::size_t>(static_cast<const char*>(nul) - e.name));
    try {
      // The slot goes first: the entry's name is what finds it. It was the
      // last one inserted, so no other name's probe path runs through it.
      if (IndexSlot* slot = index_slot_of(name_hash(object), used, object))
        slot->store(0, std::memory_order_release);
    } catch (const Error&) {
      // A damaged index: left for check_registry to report.
    }
  }
  clear_entry(e);
}

ObjectSlot SegmentImpl::find_or_create(std::string_view object, Kind kind, std::uint64_t bytes,
                                       std::uint64_t align,
                                       const std::function<void(std::byte*)>& init, CreateMode mode) {
  validate_object_name(name, object);
  auto existing = [&]() -> std::optional<ObjectSlot> {
    auto slot = lookup(object);
    if (slot && mode == CreateMode::Exclusive)
      throw Error(ErrorCode::AlreadyExists, where(object) + ": already exists (a " +
                                                std::string(kind_name(slot->info.kind)) + ")");
    if (slot && slot->info.kind != kind) throw kind_mismatch(*this, slot->info, kind);
    return slot;
  };
  if (auto slot = existing()) return *slot;
  require_writable(object, "create it");

  platform::RobustLock lock(header->registry_mutex, where(), [this]() noexcept { reclaim_dead_creation(); });
  // Before this process's first creation, the whole index is checked against
  // the entries: a damaged slot would otherwise hide an object from the
  // lookup below and let it be created a second time.
  if (!registry_checked.load(std::memory_order_acquire)) {
    check_registry(true);
    registry_checked.store(true, std::memory_order_release);
  }
  if (auto slot = existing()) return *slot;  // created by another process while we waited

  const std::uint32_t used = header->registry_used.load(std::memory_order_relaxed);
  if (used >= capacity) {
    if (used > capacity)
      throw Error(ErrorCode::Corrupt, where(object) + ": the registry is corrupt: registry_used " +
                                          std::to_string(used) + " exceeds the capacity " + std::to_string(capacity));
    throw Error(ErrorCode::SegmentFull, where(object) + ": segment full: the registry holds its maximum of " +
                                            std::to_string(capacity) + " objects");
  }
  RegistryEntry* entry = &entries[used];
  if (entry->state.load(std::memory_order_relaxed) != kEntryFree)
    throw Error(ErrorCode::Corrupt, where(object) + ": the registry is corrupt: entry " + std::to_string(used) +
                                        " (the next to hand out) is not free");

  const std::uint32_t hash = name_hash(object);
  entry->owner = platform::self_identity();
  entry->kind = static_cast<std::uint32_t>(kind);
  std::memset(entry->name, 0, sizeof entry->name);
  std::memcpy(entry->name, object.data(), object.size());
  entry->state.store(kEntryReserving, std::memory_order_relaxed);
  SHMSTATE_CRASH_POINT("registry.after_reserve");

  std::uint64_t offset = 0;
  try {
    index_insert(hash, used, object);
    SHMSTATE_CRASH_POINT("registry.after_index");
    offset = allocate(bytes, align, object);
    SHMSTATE_CRASH_POINT("registry.after_allocate");
    std::memset(base + offset, 0, bytes);
    init(base + offset);
  } catch (...) {
    reclaim_dead_creation();  // our own reservation: undone the same way
    throw;
  }
  SHMSTATE_CRASH_POINT("registry.before_publish");
  entry->offset = offset;
  entry->size = bytes;
  // The publication: release pairs with the acquire of readers' state loads
  // (lookup, objects), which then read the fields written above.
  entry->state.store(kEntryReady, std::memory_order_release);
  SHMSTATE_CRASH_POINT("registry.after_publish");
  header->registry_used.store(used + 1, std::memory_order_release);
  return ObjectSlot{base + offset, ObjectInfo{std::string(object), kind, offset, bytes}, true};
}

void SegmentImpl::check_registry(bool locked) const {
  auto corrupt = [&](const std::string& what) {
    return Error(ErrorCode::Corrupt, where() + ": the registry is corrupt: " + what);
  };
  // Acquire: entries below the mark were published before it moved.
  const std::uint32_t used = header->registry_used.load(std::memory_order_acquire);
  if (used > capacity)
    throw corrupt("registry_used " + std::to_string(used) + " exceeds the capacity " + std::to_string(capacity));
  for (std::uint32_t e = 0; e < used; ++e) {
    auto info = read_entry(e);  // Corrupt for a damaged ready entry
    if (!info) throw corrupt("entry " + std::to_string(e) + " is below registry_used " + std::to_string(used) +
                             " but not ready");
    if (index_slot_of(name_hash(info->name), e, info->name) == nullptr)
      throw corrupt("object '" + info->name + "' (entry " + std::to_string(e) +
                    ") cannot be found through the index");
  }
  // Past the mark: free. Unlocked, other processes may be creating: the
  // entry at the mark as it is now is in flight, those below it published.
  for (std::uint32_t e = used; e < capacity; ++e)
    if (entries[e].state.load(std::memory_order_relaxed) != kEntryFree &&
        (locked || e > header->registry_used.load(std::memory_order_acquire)))
      throw corrupt("entry " + std::to_string(e) + " is past registry_used " + std::to_string(used) +
                    " but not free");
  // Each entry below the mark was found through a slot of its own above; a
  // second slot for one of them is damage. Slots of entries past the mark
  // belong to creations in flight (unlocked only; the mark is read again
  // after the scan, creations may have happened meanwhile).
  std::uint32_t below = 0, past = 0;
  for (std::uint32_t pos = 0; pos < index_capacity; ++pos) {
    const std::uint64_t word = index[pos].load(std::memory_order_acquire);
    if (word == 0) continue;
    const std::uint64_t e1 = word & 0xffffffffu;
    if (e1 == 0 || e1 > capacity)
      throw corrupt_index(pos, {}, "names entry " + std::to_string(e1) + " of " + std::to_string(capacity));
    ++(e1 <= used ? below : past);
  }
  const std::uint32_t now = std::min(header->registry_used.load(std::memory_order_acquire), capacity);
  if (below != used || (locked && past != 0) || past > (now >= used ? now - used + 1 : 0))
    throw corrupt("the index has " + std::to_string(below + past) + " slots in use for " + std::to_string(used) +
                  " objects");
}

std::uint64_t SegmentImpl::allocate(std::uint64_t bytes, std::uint64_t align, std::string_view object) {
  if (align == 0 || (align & (align - 1)) != 0 || bytes == 0)
    throw Error(ErrorCode::InvalidArgument, where(object) + ": bad allocation request");
  std::uint64_t top = header->heap_top.load(std::memory_order_relaxed);
  for (;;) {
    if (top < header->heap_begin || top > size)
      throw Error(ErrorCode::Corrupt, where(object) + ": heap_top " + std::to_string(top) + " is outside the heap");
    std::uint64_t start = align_up(top, align);
    if (start > size || bytes > size - start)
      throw Error(ErrorCode::SegmentFull, where(object) + ": segment full: need " + std::to_string(bytes) +
                                              " bytes, " + std::to_string(size - top) + " of " +
                                              std::to_string(size) + " free");
    if (header->heap_top.compare_exchange_weak(top, start + bytes, std::memory_order_acq_rel))
      return start;
  }
}

void SegmentImpl::check_state(const ObjectSlot& slot, std::size_t bytes, std::size_t align,
                              std::uint32_t version) const {
  const auto* h = reinterpret_cast<const ObjectHeader*>(slot.address);
  std::string problem;
  if (slot.info.size < bytes)
    problem = "state is " + std::to_string(slot.info.size) + " bytes, expected " + std::to_string(bytes);
  else if (slot.info.offset % align != 0)
    problem = "state at offset " + std::to_string(slot.info.offset) + " is misaligned";
  else if (h->kind != static_cast<std::uint32_t>(slot.info.kind))
    problem = "state header says kind " + std::to_string(h->kind) + ", registry says " +
              std::string(kind_name(slot.info.kind));
  else if (h->layout_version != version)
    throw Error(ErrorCode::LayoutMismatch, where(slot.info.name) + ": " + std::string(kind_name(slot.info.kind)) +
                                               " layout version " + std::to_string(h->layout_version) +
                                               ", but this library reads version " + std::to_string(version));
  if (!problem.empty()) throw Error(ErrorCode::Corrupt, where(slot.info.name) + ": corrupt object: " + problem);
}

}  // namespace detail
}  // namespace shmstate
