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

std::optional<ObjectSlot> SegmentImpl::lookup(std::string_view object) const {
  // Names are validated to be shorter than the field, so a NUL-terminated
  // copy compares with one memcmp before the validating read.
  char key[kObjectNameField] = {};
  std::memcpy(key, object.data(), std::min(object.size(), kObjectNameField - 1));
  for (std::uint32_t i = 0; i < capacity; ++i) {
    if (entries[i].state.load(std::memory_order_acquire) != kEntryReady) continue;
    // Name and NUL only: read_entry then refuses bytes after the NUL (Corrupt),
    // so a damaged entry is reported, not skipped and created a second time.
    if (std::memcmp(entries[i].name, key, object.size() + 1) != 0) continue;
    if (auto info = read_entry(i); info && info->name == object)
      return ObjectSlot{base + info->offset, std::move(*info)};
  }
  return std::nullopt;
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

void SegmentImpl::reclaim_reserving_entries() noexcept {
  // Only the registry mutex holder writes non-ready entries, and that holder
  // died: its reservation will never be published.
  for (std::uint32_t i = 0; i < capacity; ++i)
    if (entries[i].state.load(std::memory_order_relaxed) == kEntryReserving) clear_entry(entries[i]);
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

  platform::RobustLock lock(header->registry_mutex, where(), [this]() noexcept { reclaim_reserving_entries(); });
  if (auto slot = existing()) return *slot;  // created by another process while we waited

  RegistryEntry* entry = nullptr;
  for (std::uint32_t i = 0; i < capacity && entry == nullptr; ++i)
    if (entries[i].state.load(std::memory_order_relaxed) == kEntryFree) entry = &entries[i];
  if (entry == nullptr)
    throw Error(ErrorCode::SegmentFull, where(object) + ": segment full: the registry holds its maximum of " +
                                            std::to_string(capacity) + " objects");

  entry->owner = platform::self_identity();
  entry->kind = static_cast<std::uint32_t>(kind);
  std::memset(entry->name, 0, sizeof entry->name);
  std::memcpy(entry->name, object.data(), object.size());
  entry->state.store(kEntryReserving, std::memory_order_relaxed);
  SHMSTATE_CRASH_POINT("registry.after_reserve");

  std::uint64_t offset = 0;
  try {
    offset = allocate(bytes, align, object);
    SHMSTATE_CRASH_POINT("registry.after_allocate");
    std::memset(base + offset, 0, bytes);
    init(base + offset);
  } catch (...) {
    clear_entry(*entry);
    throw;
  }
  SHMSTATE_CRASH_POINT("registry.before_publish");
  entry->offset = offset;
  entry->size = bytes;
  entry->state.store(kEntryReady, std::memory_order_release);
  return ObjectSlot{base + offset, ObjectInfo{std::string(object), kind, offset, bytes}, true};
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
