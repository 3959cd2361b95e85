// Segment lifecycle: create (publish by rename), open (validate, map once per
// process), remove, exists, and the read-only scan behind Segment::list().
#include <shmstate/segment.hpp>

#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "platform/crash_point.hpp"
#include "platform/durable_file.hpp"
#include "platform/process.hpp"
#include "platform/read_only.hpp"
#include "platform/system_error.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

namespace bip = boost::interprocess;
using detail::SegmentHeader;
using detail::SegmentImpl;

namespace {

constexpr const char* kShmDir = "/dev/shm/";
constexpr std::string_view kTempPrefix = ".shmstate-tmp-";

std::string shm_path(std::string_view name) { return std::string(kShmDir) + std::string(name); }

// Runs a Boost.Interprocess call, turning its exception into our Error.
template <class F>
auto boost_call(std::string_view context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const bip::interprocess_exception& e) {
    int err = e.get_native_error();
    if (err != 0) platform::throw_errno(err, context);
    throw Error(ErrorCode::Io, std::string(context) + ": " + e.what());
  }
}

// One mapping per segment file per process, kept until exit (see segment.hpp).
// Keyed by inode: a removed-and-recreated name is a new file. The inode of a
// file we map cannot be reused while we live, because the mapping pins it.
struct Cached {
  std::shared_ptr<SegmentImpl> impl;
  bip::mapped_region region;
};
std::mutex& cache_mutex() {
  static std::mutex* m = [] {
    auto* mu = new std::mutex();  // never destroyed, like the cache
    // Held across fork(): a child must not inherit it locked by a thread
    // (say, one opening a segment) that does not exist in the child.
    ::pthread_atfork([] { cache_mutex().lock(); }, [] { cache_mutex().unlock(); },
                     [] { cache_mutex().unlock(); });
    return mu;
  }();
  return *m;
}
// (device, inode, read-only): a read-only and a read-write mapping of one
// file are separate views, so a read-only open never hands out a writable
// mapping and a writer never gets a PROT_READ one.
using CacheKey = std::tuple<dev_t, ino_t, bool>;
std::map<CacheKey, Cached>& cache() {
  static auto* m = new std::map<CacheKey, Cached>();  // never destroyed
  return *m;
}

// Builds the process's view from a header that validate_header() accepted
// (a private copy: another process may rewrite the live one at any time), so
// the registry pointer and all bounds come from checked numbers only.
std::shared_ptr<SegmentImpl> make_impl(std::string_view name, bip::mapped_region& region,
                                       const SegmentHeader& checked) {
  if (region.get_size() < checked.size)
    throw Error(ErrorCode::Corrupt, platform::where(name) + ": the file shrank to " +
                                       std::to_string(region.get_size()) + " bytes while being opened");
  auto impl = std::make_shared<SegmentImpl>();
  impl->name = std::string(name);
  impl->base = static_cast<std::byte*>(region.get_address());
  impl->size = checked.size;
  impl->header = reinterpret_cast<SegmentHeader*>(impl->base);
  impl->entries = reinterpret_cast<detail::RegistryEntry*>(impl->base + checked.registry_offset);
  impl->capacity = checked.registry_capacity;
  impl->index = reinterpret_cast<detail::IndexSlot*>(impl->base + checked.index_offset);
  impl->index_capacity = checked.index_capacity;
  return impl;
}

// This process's mapping of the file, if it has one. REQUIRES: cache_mutex().
std::shared_ptr<SegmentImpl> cached(const struct stat& st, bool read_only) {
  auto it = cache().find(CacheKey{st.st_dev, st.st_ino, read_only});
  return it == cache().end() ? nullptr : it->second.impl;
}

void validate_options(std::string_view name, const SegmentOptions& o) {
  auto bad = [&](const std::string& what) {
    throw Error(ErrorCode::InvalidArgument, platform::where(name) + ": " + what);
  };
  if (o.mode > 0777) bad("mode must be at most 0777");
  if ((o.mode & 0600) != 0600) bad("mode must give the owner read and write (0600)");
  if (o.max_objects < 1 || o.max_objects > detail::kMaxRegistryCapacity)
    bad("max_objects must be 1.." + std::to_string(detail::kMaxRegistryCapacity));
  std::uint64_t minimum = detail::heap_begin_for(o.max_objects) + 4096;
  if (o.size < minimum)
    bad("size " + std::to_string(o.size) + " is too small: header and registry for " +
        std::to_string(o.max_objects) + " objects need at least " + std::to_string(minimum) + " bytes");
  if (o.size > detail::kMaxSegmentSize) bad("size must be at most 1 TiB");
}

// Removes temp files of creators that died before publishing (fact 7's loser
// or a killed creator). Temp names carry "<pid namespace>-<pid>-<start time>-";
// only our own PID namespace's are judged, since a pid means nothing elsewhere
// (containers may share /dev/shm).
void sweep_stale_temps() noexcept {
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) return;
  while (dirent* d = ::readdir(dir)) {
    std::string_view n(d->d_name);
    if (n.substr(0, kTempPrefix.size()) != kTempPrefix) continue;
    if (platform::writer_is_dead(n.substr(kTempPrefix.size()))) ::unlinkat(::dirfd(dir), d->d_name, 0);
  }
  ::closedir(dir);
}

void init_header(SegmentHeader& h, const SegmentOptions& o) {
  using namespace std::chrono;
  h.magic = detail::kSegmentMagic;
  h.layout_version = kLayoutVersion;
  h.header_size = sizeof(SegmentHeader);
  h.size = o.size;
  h.created_unix_ns = static_cast<std::uint64_t>(
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count());
  h.creator = platform::self_identity();
  h.pid_namespace = platform::pid_namespace_id();
  h.registry_offset = sizeof(SegmentHeader);
  h.registry_capacity = o.max_objects;
  h.index_offset = detail::index_offset_for(o.max_objects);
  h.index_capacity = detail::index_capacity_for(o.max_objects);
  h.registry_used.store(0, std::memory_order_relaxed);
  h.heap_begin = detail::heap_begin_for(o.max_objects);
  h.heap_top.store(h.heap_begin, std::memory_order_relaxed);
  h.registry_mutex.init();
  h.block_mutex.init();
  // Registry entries (free), index slots (empty), free-list heads (empty)
  // and the watch summary (no waiter, counters 0) are zero from ftruncate.
}

// fstat + header check + map, or reuse this process's mapping of the file.
Segment open_mapped(std::string_view name, bool read_only = false);

}  // namespace

// Friend-free factory: Segment's constructor is private, so the few places
// that make one go through this.
struct SegmentFactory {
  static Segment make(std::shared_ptr<SegmentImpl> impl) { return Segment(std::move(impl)); }
};

namespace {

Segment open_mapped(std::string_view name, bool read_only) {
  std::string ctx = platform::where(name) + (read_only ? ": open read-only" : ": open");
  const bip::mode_t access = read_only ? bip::read_only : bip::read_write;
  bip::shared_memory_object shm = boost_call(ctx, [&] {
    return bip::shared_memory_object(bip::open_only, std::string(name).c_str(), access);
  });
  int fd = shm.get_mapping_handle().handle;
  struct stat st;
  if (::fstat(fd, &st) != 0) platform::throw_errno(errno, ctx);
  std::lock_guard<std::mutex> guard(cache_mutex());
  CacheKey key{st.st_dev, st.st_ino, read_only};
  if (auto existing = cached(st, read_only)) return SegmentFactory::make(std::move(existing));

  alignas(64) std::byte head[sizeof(SegmentHeader)] = {};
  std::uint64_t file_size = static_cast<std::uint64_t>(st.st_size);
  ssize_t n = ::pread(fd, head, std::min<std::uint64_t>(sizeof head, file_size), 0);
  if (n < 0) platform::throw_errno(errno, ctx);
  detail::validate_header(name, head, file_size);

  // read_only: PROT_READ, MAP_SHARED (the writers' changes are seen).
  bip::mapped_region region = boost_call(ctx, [&] { return bip::mapped_region(shm, access); });
  auto impl = make_impl(name, region, *reinterpret_cast<const SegmentHeader*>(head));
  if (read_only) {
    platform::note_read_only(region.get_address(), region.get_size());
    impl->read_only = true;
  }
  cache().emplace(key, Cached{impl, std::move(region)});
  return SegmentFactory::make(std::move(impl));
}

}  // namespace

void Segment::check_options(std::string_view name, const SegmentOptions& options) {
  validate_options(name, options);
}

Segment Segment::create(std::string_view name, const SegmentOptions& options) {
  if (!options.restore_from.empty())
    throw Error(ErrorCode::InvalidArgument, platform::where(name) +
                                                ": create does not restore (restore_from is for open_or_create; "
                                                "use Segment::restore)");
  return detail::create_segment(name, options, nullptr);
}

namespace detail {

Segment create_segment(std::string_view name, const SegmentOptions& options,
                       const std::function<void(Segment&)>& fill) {
  detail::validate_segment_name(name);
  validate_options(name, options);
  sweep_stale_temps();

  std::string ctx = platform::where(name) + ": create";
  // The temp name keeps "<pid namespace>-<pid>-<start time>-" for the sweep,
  // then 64 random bits: another local user who can read /proc cannot guess it,
  // and a name squatted anyway (EEXIST) is skipped for a fresh one.
  std::string temp;
  std::optional<bip::shared_memory_object> created;
  for (int attempt = 0; !created; ++attempt) {
    temp = detail::temp_segment_name();
    try {
      created.emplace(boost_call(ctx, [&] {
        bip::permissions perm(options.mode);
        return bip::shared_memory_object(bip::create_only, temp.c_str(), bip::read_write, perm);
      }));
    } catch (const Error& e) {
      if (e.code() != ErrorCode::AlreadyExists || attempt >= 16) throw;
    }
  }
  bip::shared_memory_object& shm = *created;
  struct TempGuard {
    std::string name;
    bool armed = true;
    ~TempGuard() {
      if (armed) bip::shared_memory_object::remove(name.c_str());
    }
  } guard{temp};

  int fd = shm.get_mapping_handle().handle;
  // Boost applies the mode with fchmod, but say it here too: it is the contract.
  if (::fchmod(fd, static_cast<mode_t>(options.mode)) != 0) platform::throw_errno(errno, ctx);
  if (::ftruncate(fd, static_cast<off_t>(options.size)) != 0) platform::throw_errno(errno, ctx);
  // Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later.
  if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(options.size)); rc != 0)
    platform::throw_errno(rc, ctx + " (reserving " + std::to_string(options.size) + " bytes in /dev/shm)");
  bip::mapped_region region = boost_call(ctx, [&] { return bip::mapped_region(shm, bip::read_write); });
  init_header(*static_cast<SegmentHeader*>(region.get_address()), options);
  // The view under the public name: messages of the fill name the segment
  // being made, and after publishing this same view is cached.
  auto impl = make_impl(name, region, *static_cast<const SegmentHeader*>(region.get_address()));
  if (fill) {
    // Only this process can reach the file under its temp name; if fill
    // throws, the guard removes it and nothing is published.
    Segment unpublished = SegmentFactory::make(impl);
    fill(unpublished);
  }

  SHMSTATE_CRASH_POINT("segment.before_publish");
  if (::renameat2(AT_FDCWD, shm_path(temp).c_str(), AT_FDCWD, shm_path(name).c_str(), RENAME_NOREPLACE) != 0)
    platform::throw_errno(errno, ctx);
  guard.armed = false;

  struct stat st;
  if (::fstat(fd, &st) != 0) platform::throw_errno(errno, ctx);
  std::lock_guard<std::mutex> lock(cache_mutex());
  // Another thread of this process may have opened the published name
  // between the rename and here: use its mapping and drop ours (ours was
  // never used for locking, so unmapping it loses nothing).
  if (auto existing = cached(st, false)) return SegmentFactory::make(std::move(existing));
  cache().emplace(CacheKey{st.st_dev, st.st_ino, false}, Cached{impl, std::move(region)});
  return SegmentFactory::make(std::move(impl));
}

}  // namespace detail


Segment Segment::open(std::string_view name, Access access) {
  detail::validate_segment_name(name);
  return open_mapped(name, access == Access::ReadOnly);
}

bool Segment::read_only() const noexcept { return impl_->read_only; }

Segment Segment::open_or_create(std::string_view name, const SegmentOptions& options) {
  detail::validate_segment_name(name);
  validate_options(name, options);
  // Racing creators: exactly one rename wins; the others open its segment.
  // Bounded, because a remove() can slip between our create and open.
  for (int attempt = 0;; ++attempt) {
    try {
      return open_mapped(name);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::NotFound || attempt >= 8) throw;
    }
    try {
      if (options.restore_from.empty()) return create(name, options);
      // A snapshot (if there is one) decides size and mode; else `options`.
      if (auto restored = detail::restore_segment(name, options.restore_from, {}, /*missing_ok=*/true))
        return *restored;
      SegmentOptions plain = options;
      plain.restore_from.clear();
      return create(name, plain);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::AlreadyExists || attempt >= 8) throw;
    }
  }
}

bool Segment::remove(std::string_view name) {
  detail::validate_segment_name(name);
  std::string ctx = platform::where(name) + ": remove";
  int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    platform::throw_errno(errno, ctx);
  }
  std::uint64_t magic = 0;
  ssize_t n = ::pread(fd, &magic, sizeof magic, 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof magic) || magic != detail::kSegmentMagic)
    throw Error(ErrorCode::LayoutMismatch, ctx + ": not a shmstate segment; not removed");
  if (::unlink(shm_path(name).c_str()) != 0) {
    if (errno == ENOENT) return false;
    platform::throw_errno(errno, ctx);
  }
  return true;
}

bool Segment::exists(std::string_view name) {
  detail::validate_segment_name(name);
  struct stat st;
  return ::stat(shm_path(name).c_str(), &st) == 0;
}

std::vector<SegmentInfo> Segment::list() {
  std::vector<SegmentInfo> out;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(kShmDir), &::closedir);
  if (!dir) platform::throw_errno(errno, std::string("list ") + kShmDir);
  while (dirent* d = ::readdir(dir.get())) {
    std::string name(d->d_name);
    try {
      detail::validate_segment_name(name);
    } catch (const Error&) {
      continue;  // ".", "..", temp files, names we would never create
    }
    struct Fd {
      int fd;
      ~Fd() {
        if (fd >= 0) ::close(fd);
      }
    } file{::openat(::dirfd(dir.get()), d->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
    if (file.fd < 0) continue;
    struct stat st;
    if (::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    std::uint64_t file_size = static_cast<std::uint64_t>(st.st_size);
    alignas(64) std::byte head[sizeof(SegmentHeader)] = {};
    ssize_t n = ::pread(file.fd, head, std::min<std::uint64_t>(sizeof head, file_size), 0);
    std::uint64_t magic = 0;
    if (n >= 8) std::memcpy(&magic, head, 8);
    if (magic != detail::kSegmentMagic) continue;  // another program's file
    SegmentInfo info;
    info.name = name;
    info.size = file_size;
    info.mode = st.st_mode & 07777;
    try {
      detail::validate_header(name, head, file_size);
      const auto* h = reinterpret_cast<const SegmentHeader*>(head);
      std::uint64_t reg_bytes = std::uint64_t{h->registry_capacity} * detail::kRegistryEntrySize;
      std::unique_ptr<detail::RegistryEntry[]> entries(new detail::RegistryEntry[h->registry_capacity]);
      ssize_t r = ::pread(file.fd, entries.get(), reg_bytes, static_cast<off_t>(h->registry_offset));
      if (r != static_cast<ssize_t>(reg_bytes))
        throw Error(ErrorCode::Corrupt, platform::where(name) + ": short read of the registry");
      info = detail::summarize(name, *h, entries.get(), h->registry_capacity, st.st_mode & 07777);
    } catch (const Error& e) {
      std::uint32_t version = 0;
      if (n >= 12) std::memcpy(&version, head + 8, 4);
      info.layout_version = version;
      info.problem = e.what();
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const SegmentInfo& a, const SegmentInfo& b) { return a.name < b.name; });
  return out;
}

const std::string& Segment::name() const noexcept { return impl_->name; }

SegmentInfo Segment::info() const { return impl_->info(); }

std::vector<ObjectInfo> Segment::objects() const { return impl_->objects(); }

std::optional<ObjectInfo> Segment::find(std::string_view object_name) const {
  return impl_->find(object_name);
}

namespace detail {

std::string random_temp_segment_name() { return std::string(kTempPrefix) + platform::writer_tag(); }

std::string (*temp_segment_name)() = &random_temp_segment_name;

void validate_header(std::string_view name, const std::byte* bytes, std::uint64_t file_size) {
  std::string w = platform::where(name);
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  if (file_size >= 8) std::memcpy(&magic, bytes, 8);
  if (file_size >= 12) std::memcpy(&version, bytes + 8, 4);
  if (file_size < 12 || magic != kSegmentMagic) {
    char buf[160];
    std::snprintf(buf, sizeof buf, ": not a shmstate segment (%llu bytes, magic 0x%016llx, expected 0x%016llx)",
                  static_cast<unsigned long long>(file_size), static_cast<unsigned long long>(magic),
                  static_cast<unsigned long long>(kSegmentMagic));
    throw Error(ErrorCode::LayoutMismatch, w + buf);
  }
  if (version != kLayoutVersion)
    throw Error(ErrorCode::LayoutMismatch, w + ": layout version " + std::to_string(version) +
                                               ", but this library reads layout version " +
                                               std::to_string(kLayoutVersion));
  auto corrupt = [&](const std::string& what) { throw Error(ErrorCode::Corrupt, w + ": corrupt header: " + what); };
  if (file_size < sizeof(SegmentHeader)) corrupt("file is " + std::to_string(file_size) + " bytes, shorter than the header");
  const auto* h = reinterpret_cast<const SegmentHeader*>(bytes);
  if (h->header_size != sizeof(SegmentHeader)) corrupt("header_size " + std::to_string(h->header_size));
  if (h->size != file_size)
    corrupt("header says " + std::to_string(h->size) + " bytes, file has " + std::to_string(file_size));
  if (h->size > kMaxSegmentSize) corrupt("size beyond 1 TiB");
  if (h->registry_offset != sizeof(SegmentHeader)) corrupt("registry_offset " + std::to_string(h->registry_offset));
  if (h->registry_capacity < 1 || h->registry_capacity > kMaxRegistryCapacity)
    corrupt("registry_capacity " + std::to_string(h->registry_capacity));
  if (h->index_offset != index_offset_for(h->registry_capacity))
    corrupt("index_offset " + std::to_string(h->index_offset));
  if (h->index_capacity != index_capacity_for(h->registry_capacity))
    corrupt("index_capacity " + std::to_string(h->index_capacity));
  std::uint64_t heap_begin = heap_begin_for(h->registry_capacity);
  if (h->heap_begin != heap_begin || heap_begin > h->size) corrupt("heap_begin " + std::to_string(h->heap_begin));
  std::uint64_t top = h->heap_top.load(std::memory_order_relaxed);
  if (top < h->heap_begin || top > h->size) corrupt("heap_top " + std::to_string(top));
}

SegmentInfo summarize(std::string_view name, const SegmentHeader& h, const RegistryEntry* entries,
                      std::uint32_t capacity, unsigned mode) {
  SegmentInfo info;
  info.name = std::string(name);
  info.layout_version = h.layout_version;
  info.size = h.size;
  info.used = std::min(h.heap_top.load(std::memory_order_relaxed), h.size);
  info.max_objects = capacity;
  for (std::uint32_t i = 0; i < capacity; ++i)
    if (entries[i].state.load(std::memory_order_acquire) == kEntryReady) ++info.object_count;
  info.creator_pid = h.creator.pid;
  info.creator_start_time = h.creator.start_time;
  info.created = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(h.created_unix_ns)));
  info.same_pid_namespace = h.pid_namespace == platform::pid_namespace_id();
  if (info.same_pid_namespace) {
    switch (platform::liveness(h.creator)) {
      case platform::Liveness::Alive: info.creator_state = ProcessState::Alive; break;
      case platform::Liveness::Dead: info.creator_state = ProcessState::Dead; break;
      case platform::Liveness::Unknown: info.creator_state = ProcessState::Unknown; break;
    }
  }
  info.mode = mode;
  return info;
}

SegmentInfo SegmentImpl::info() const {
  struct stat st;
  unsigned mode = ::stat(shm_path(name).c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
  SegmentInfo out = summarize(name, *header, entries, capacity, mode);
  // A damaged lock word or mutex type would otherwise show only when a writer
  // next needs the mutex.
  if (std::string p = header->registry_mutex.problem(); !p.empty()) out.problem = "registry mutex: " + p;
  else if (std::string q = header->block_mutex.problem(); !q.empty()) out.problem = "block mutex: " + q;
  if (out.problem.empty()) {
    // A damaged index word or entry would otherwise show only when a lookup
    // or a creation runs into it.
    try {
      check_registry(false);
    } catch (const Error& e) {
      out.problem = e.what();
    }
  }
  // A damaged free-list head is dropped by the next allocation of its class;
  // until then dump names it.
  if (out.problem.empty()) out.problem = free_lists_problem();
  return out;
}

}  // namespace detail
}  // namespace shmstate
