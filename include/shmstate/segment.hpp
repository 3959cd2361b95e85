// shmstate/segment.hpp: named POSIX shared-memory segments holding named objects.
//
// A Segment is a file in /dev/shm (the segment name is the file name) that
// starts with a versioned header, then a fixed registry of named objects, then
// a heap. Objects (atomics, atoms, locks, ...) are created by name and kind and
// found again by any process that opens the segment.
//
// Lifetime. A segment exists until Segment::remove() (or a reboot); processes
// come and go. A process maps each segment once and keeps the mapping until it
// exits, even after the last Segment handle is gone: unmapping memory that
// holds robust mutexes can lose owner-death reports (glibc BZ 14485). Handles
// (Segment, Atomic<T>, ...) are cheap to copy and need no cleanup.
//
// Thread and process safety. Every member function may be called concurrently
// from any thread of any process. Creating a segment publishes it whole:
// openers never see a half-initialised segment, and a creator killed midway
// leaves nothing behind under the public name. Creating an object is atomic in
// the same sense: a process killed while creating one leaves no trace the next
// creator trips over (its reserved registry entry is reclaimed; at most the
// block it had allocated is leaked).
//
// Untrusted contents. Every reader validates the header and each registry entry
// before following an offset, and reports a damaged segment as Error(Corrupt)
// (or LayoutMismatch for another program's file or another layout version).
// The segment's mutexes (registry, blocks, each atom's writer) are validated
// before every lock and between 100 ms wait slices: a damaged type field, or a
// lock word naming a thread that does not exist, is Error(Corrupt) for the
// writer (never a hang or an abort), and info().problem names the registry or
// block mutex's damage. A registry name with bytes after its NUL is Corrupt.
// Known limit: a process that shrinks the file with ftruncate() makes the other
// processes' accesses fault (SIGBUS); POSIX shared memory cannot be sealed.
//
// Names. Segment names: 1..200 characters from [A-Za-z0-9._-], not starting
// with '.'. Object names: 1..63 characters from [A-Za-z0-9._:-]. Anything else
// is Error(InvalidArgument).
#pragma once

#include <shmstate/config.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <shmstate/error.hpp>

namespace shmstate {

template <class T>
class Atomic;
class Atom;
class AtomicReference;
class FifoLock;
class LockModes;
class Monitor;
class Signal;
}  // namespace shmstate

namespace boost::json {
class value;
}

namespace shmstate {

namespace detail {
struct SegmentImpl;
}

// The value types an Atomic<T> may hold.
template <class T>
concept AtomicValue =
    std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>;

// The kind tag of an object. Values are stored in segments: never renumber.
enum class Kind : std::uint32_t {
  Bool = 1,
  Int64 = 2,
  Double = 3,
  Atom = 4,
  Reference = 5,
  FifoLock = 6,
  Monitor = 7,
  Signal = 8,
};

// "bool", "int64", "double", "atom", "reference", "fifo_lock", "monitor", "signal".
SHMSTATE_API std::string_view kind_name(Kind kind) noexcept;
SHMSTATE_API std::optional<Kind> parse_kind(std::string_view name) noexcept;

inline constexpr std::size_t kMaxSegmentNameLength = 200;
inline constexpr std::size_t kMaxObjectNameLength = 63;

// Layout version of segments this library creates and reads (3: every value
// block has a header saying what it is and who owns it; 2 added the
// registry's name index). Other versions are refused, LayoutMismatch.
inline constexpr std::uint32_t kLayoutVersion = 4;

// What a creating accessor (Segment::atomic, atom, atomic_reference, ...) does
// when the name is taken. OpenOrCreate returns the existing object (or throws
// KindMismatch if it is another kind). Exclusive throws AlreadyExists whatever
// the existing object's kind: of any number of processes racing to create one
// name exclusively, exactly one succeeds (the check and the creation happen
// under the segment's registry mutex), so success means "this call created it".
enum class CreateMode { OpenOrCreate, Exclusive };

struct SegmentOptions {
  std::size_t size = 1 << 20;     // total bytes, header and registry included
  unsigned mode = 0600;           // applied exactly, whatever the umask; must include 0600
  std::uint32_t max_objects = 256;  // registry capacity, fixed at creation (1..65536)
  // open_or_create only: when it creates the segment and a snapshot file
  // exists at this path, the segment is restored from it (Segment::restore:
  // the snapshot's size, mode and max_objects, not the ones above). No file
  // there: created empty with the options above (a first start has no
  // snapshot yet). Any other problem with the file is an error and nothing is
  // created. Empty: no restore. Segment::create refuses a non-empty one.
  std::string restore_from = {};
};

// Segment::restore's choices; each unset one is the snapshot's own.
struct RestoreOptions {
  std::optional<std::size_t> size = std::nullopt;
  std::optional<unsigned> mode = std::nullopt;
  std::optional<std::uint32_t> max_objects = std::nullopt;
};

struct ObjectInfo {
  std::string name;
  Kind kind;
  std::uint64_t offset;  // of the object's shared state, from the segment start
  std::uint64_t size;    // bytes of the object's fixed shared state
};

enum class ProcessState { Alive, Dead, Unknown };
SHMSTATE_API std::string_view process_state_name(ProcessState state) noexcept;  // "alive", "dead", "unknown"

struct SegmentInfo {
  std::string name;
  std::uint32_t layout_version = 0;
  std::uint64_t size = 0;  // bytes
  std::uint64_t used = 0;  // header + registry + allocated heap bytes
  std::uint32_t max_objects = 0;
  std::uint32_t object_count = 0;
  std::int32_t creator_pid = 0;
  std::uint64_t creator_start_time = 0;  // clock ticks after boot (/proc/<pid>/stat field 22)
  std::chrono::system_clock::time_point created;
  // Alive/Dead are only meaningful when same_pid_namespace; else Unknown.
  ProcessState creator_state = ProcessState::Unknown;
  bool same_pid_namespace = true;
  unsigned mode = 0;  // permission bits of the file
  // Empty for a healthy segment. Segment::list() reports a damaged segment or
  // one of another layout version here instead of failing the whole listing;
  // Segment::info() reports a damaged registry or block mutex here.
  std::string problem;
};

class SHMSTATE_API Segment {
 public:
  // Creates a new segment. Throws AlreadyExists if the name is taken,
  // InvalidArgument for a bad name or options, PermissionDenied, Io.
  static Segment create(std::string_view name, const SegmentOptions& options = {});

  // Throws InvalidArgument (naming segment `name`) exactly when create()
  // would refuse `options`: mode, max_objects or size out of bounds. Looks
  // neither at the name's validity nor at /dev/shm. For callers that tell
  // bad options apart from other failures (the CLI's usage errors).
  static void check_options(std::string_view name, const SegmentOptions& options);

  // Opens an existing segment. Throws NotFound, LayoutMismatch (not ours, or
  // another layout version: the message names both), Corrupt, PermissionDenied.
  //
  // Access::ReadOnly opens the file O_RDONLY and maps it PROT_READ, so a user
  // with read permission only (a monitoring user of a 0644 segment) can read
  // every object: objects(), find(), info(), open_*(), get/deref/version,
  // dump views and snapshot(). The contract of a read-only handle:
  //  - This process never writes the segment through it, lazily neither: no
  //    repair of a dead holder's lock, no reclaim of a dead creator's entry,
  //    no registry check that stores a flag in the segment, no waiter word.
  //  - Every mutating call (creating an object, Atomic set/add/CAS, atom
  //    swap/reset/compare_and_set, lock acquire, monitor wait/notify,
  //    signal go) throws Error(PermissionDenied) naming the segment and the
  //    object, before anything is written; never a SIGSEGV.
  //  - Waits (wait_while_equal, wait_for_change, watches, signal waits and
  //    then-callbacks) work, but cannot announce themselves to writers (that
  //    is a store): they poll, seeing a change within one 100 ms slice
  //    instead of microseconds.
  // A process may hold both a read-only and a read-write mapping of one
  // segment (each open returns handles of its own access); futex wake-ups
  // and robust locks are per file, so the two interoperate.
  enum class Access { ReadWrite, ReadOnly };
  static Segment open(std::string_view name, Access access = Access::ReadWrite);

  // True if this handle's mapping is read-only (opened with Access::ReadOnly).
  bool read_only() const noexcept;

  // Opens the segment, creating it with `options` if it does not exist. When it
  // exists, `options` are ignored (the segment keeps its own size and mode).
  // With options.restore_from, a segment this call creates is restored from
  // that snapshot (see SegmentOptions); racing callers all get the one segment
  // that was published, restored whole. Throws what create() and restore() throw.
  static Segment open_or_create(std::string_view name, const SegmentOptions& options = {});

  // Creates segment `name` from the snapshot file at `path` (written by
  // snapshot()), with the snapshot's size, mode and max_objects unless
  // `options` says otherwise, holding every object of the snapshot in its
  // saved state (atoms and references with their versions, locks with their
  // mode tables and token counters; see each kind's contract). Published
  // whole, like create(): the segment is built under a temporary name and
  // renamed into place only when every object is restored, so no opener ever
  // sees it half-restored, and a process killed midway leaves nothing under
  // `name` (its temporary file is swept by a later create).
  // Restored versions and tokens equal the snapshot's: they never go
  // backwards relative to it (a process that saw a newer one before the
  // snapshot was taken may see them repeat).
  // Throws, creating nothing: NotFound (no file at `path`), LayoutMismatch
  // (not a snapshot, a newer snapshot format, or a kind this library cannot
  // restore), Corrupt (truncated or damaged: the message names the path and
  // the object), AlreadyExists (`name` is taken), SegmentFull (`options`
  // made it too small), InvalidArgument, PermissionDenied, Io.
  static Segment restore(std::string_view name, const std::string& path, const RestoreOptions& options = {});

  // Removes the name (processes that have it open keep using it; the memory is
  // freed when the last one exits). Returns false if there was no such
  // segment. Refuses (LayoutMismatch) to remove a file that is not a shmstate
  // segment; removes a damaged one.
  static bool remove(std::string_view name);

  // True if a file of that name exists in /dev/shm (it may still fail to open).
  static bool exists(std::string_view name);

  // The shmstate segments in /dev/shm, sorted by name, read without locking
  // and without writing. Files of other programs and files this process may
  // not read are skipped. A damaged segment, or one of another layout
  // version, is listed with SegmentInfo::problem saying why.
  static std::vector<SegmentInfo> list();

  const std::string& name() const noexcept;
  SegmentInfo info() const;

  // Writes every object's state to the file at `path` as one versioned JSON
  // document (format in docs/cli.md, "snapshot"), replacing the file
  // durably and atomically: a temp file beside it, fsync, rename, fsync of
  // the directory (the Store's writer). Readers of the file, and a later
  // restore(), see the previous snapshot or this one, never a mix, whenever
  // this process is killed. A new file gets the segment's permission bits; an
  // existing one keeps its mode.
  // What it captures: each object atomically (one consistent state of that
  // object), objects one after another. The whole is NOT one instant across
  // objects: a change to `a` then `b` by another process during the snapshot
  // may show in `b` and not in `a`. Writers are never blocked (locks are held
  // only while copying their own state); objects created while it runs may
  // or may not be in it. Doubles are exact, NaN and infinities included.
  // Throws KindMismatch if an object's kind cannot be saved (naming it),
  // Corrupt for a damaged object, and the file's errors: NotFound (no such
  // directory), PermissionDenied, InvalidArgument, Io (disk full included).
  void snapshot(const std::string& path) const;

  // The ready objects, in registry order. Lock-free; never blocks on a writer.
  // Throws Corrupt if a registry entry fails validation.
  std::vector<ObjectInfo> objects() const;
  std::optional<ObjectInfo> find(std::string_view object_name) const;

  // The Atomic<T> named `name`, created with `initial` if it does not exist
  // (`initial` is ignored otherwise). T is bool, std::int64_t or double and
  // is never deduced: write seg.atomic<std::int64_t>("hits", 0).
  // Throws KindMismatch if `name` is another kind, SegmentFull, InvalidArgument;
  // with CreateMode::Exclusive, AlreadyExists if `name` exists (any kind).
  template <AtomicValue T>
  Atomic<T> atomic(std::string_view name, std::type_identity_t<T> initial = T{},
                   CreateMode mode = CreateMode::OpenOrCreate);

  // The existing Atomic<T> named `name`. Throws NotFound or KindMismatch.
  template <AtomicValue T>
  Atomic<T> open_atomic(std::string_view name) const;

  // The Atom named `name` (<shmstate/atom.hpp>), created holding `initial` if
  // it does not exist. Throws KindMismatch, SegmentFull (the initial value
  // does not fit), InvalidArgument; with CreateMode::Exclusive, AlreadyExists
  // if `name` exists (any kind).
  Atom atom(std::string_view name, const boost::json::value& initial, CreateMode mode = CreateMode::OpenOrCreate);
  // The existing Atom named `name`. Throws NotFound or KindMismatch.
  Atom open_atom(std::string_view name) const;

  // The AtomicReference named `name`, created holding `initial` if missing
  // (errors and `mode` as for atom()).
  AtomicReference atomic_reference(std::string_view name, const boost::json::value& initial,
                                   CreateMode mode = CreateMode::OpenOrCreate);
  AtomicReference open_atomic_reference(std::string_view name) const;

  // The FifoLock named `name` (<shmstate/fifo_lock.hpp>), created with the
  // mode table `modes` and `slots` holder-or-waiter slots (1..4096) if it does
  // not exist. An existing lock must have been created with an equal table:
  // else KindMismatch naming both tables (`slots` is then ignored).
  // Throws KindMismatch, SegmentFull, InvalidArgument.
  FifoLock fifo_lock(std::string_view name, const LockModes& modes, std::uint32_t slots = 64);
  // The existing FifoLock named `name`, with its stored table. Throws
  // NotFound, KindMismatch, Corrupt.
  FifoLock open_fifo_lock(std::string_view name) const;

  // The Monitor named `name` (<shmstate/monitor.hpp>), created with room for
  // `waiters` threads in wait() at once (1..4095; its lock gets waiters + 1
  // slots) if it does not exist; an existing one keeps its own capacity.
  // Throws KindMismatch, SegmentFull, InvalidArgument, Corrupt.
  Monitor monitor(std::string_view name, std::uint32_t waiters = 64);
  // The existing Monitor named `name`. Throws NotFound, KindMismatch, Corrupt.
  Monitor open_monitor(std::string_view name) const;

  // The Signal named `name` (<shmstate/signal.hpp>), created pending if it
  // does not exist. Throws KindMismatch, SegmentFull, InvalidArgument.
  Signal signal(std::string_view name);
  // The existing Signal named `name`. Throws NotFound, KindMismatch, Corrupt.
  Signal open_signal(std::string_view name) const;

  // For the library's own primitives; not a stable API.
  detail::SegmentImpl& impl() const noexcept { return *impl_; }

 private:
  friend struct SegmentFactory;
  explicit Segment(std::shared_ptr<detail::SegmentImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<detail::SegmentImpl> impl_;
};

}  // namespace shmstate
