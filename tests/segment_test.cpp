// Segments: lifecycle, names, options, modes, validation of untrusted bytes,
// the object registry, SegmentFull.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>

#include "segment/layout.hpp"
#include "segment/segment_impl.hpp"
#include "support/checks.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Kind;
using shmstate::Segment;
using shmstate::SegmentOptions;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

using test::error_of;

// Bytes of one Atomic<T>'s shared state (value line + event-count line).
constexpr std::uint64_t kAtomicStateSize = sizeof(shmstate::detail::AtomicState<std::int64_t>);

// Sets the process umask for a scope.
struct Umask {
  explicit Umask(mode_t m) : old(::umask(m)) {}
  ~Umask() { ::umask(old); }
  mode_t old;
};

unsigned file_mode(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

void write_file(const std::string& path, const void* data, std::size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data, n) == static_cast<ssize_t>(n));
  ::close(fd);
}

void patch(const std::string& path, std::uint64_t offset, const void* data, std::size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, data, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n));
  ::close(fd);
}

template <class T>
void patch_value(const std::string& path, std::uint64_t offset, T value) {
  patch(path, offset, &value, sizeof value);
}

std::string read_file(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

// Creates the segment in a child process, so this process has no mapping of
// it (a process maps each segment once and trusts its own mapping after
// that): the next open here reads and validates the header afresh.
void create_elsewhere(const std::string& name, const SegmentOptions& o = {}, bool with_object = false) {
  test::Child c([&] {
    auto seg = Segment::create(name, o);
    if (with_object) seg.atomic<std::int64_t>("n", 42);
    return 0;
  });
  REQUIRE(c.exit_code_within(10s) == 0);
}

bool listed(const std::vector<shmstate::SegmentInfo>& list, const std::string& name,
            shmstate::SegmentInfo* out = nullptr) {
  for (const auto& i : list)
    if (i.name == name) {
      if (out) *out = i;
      return true;
    }
  return false;
}

constexpr std::uint64_t kHeader = sizeof(shmstate::detail::SegmentHeader);
constexpr std::uint64_t kEntry = shmstate::detail::kRegistryEntrySize;

using shmstate::detail::heap_begin_for;

}  // namespace

// ---------------------------------------------------------------- lifecycle

TEST_CASE("create, exists, open, info, remove") {
  test::TempSegment t;
  CHECK_FALSE(Segment::exists(t.name()));
  auto before = std::chrono::system_clock::now();
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600, .max_objects = 16});
  auto after = std::chrono::system_clock::now();
  CHECK(seg.name() == t.name());
  CHECK(Segment::exists(t.name()));

  struct stat st {};
  REQUIRE(::stat(t.path().c_str(), &st) == 0);
  CHECK(st.st_size == 64 * 1024);

  auto info = seg.info();
  CHECK(info.name == t.name());
  CHECK(info.layout_version == shmstate::kLayoutVersion);
  CHECK(info.size == 64 * 1024);
  CHECK(info.max_objects == 16);
  CHECK(info.object_count == 0);
  CHECK(info.used == heap_begin_for(16));
  CHECK(info.creator_pid == ::getpid());
  CHECK(info.creator_start_time == shmstate::platform::self_identity().start_time);
  CHECK(info.creator_state == shmstate::ProcessState::Alive);
  CHECK(info.same_pid_namespace);
  CHECK(info.mode == 0600);
  CHECK(info.problem.empty());
  CHECK(info.created >= before - 1s);
  CHECK(info.created <= after + 1s);

  seg.atomic<std::int64_t>("a", 5);
  info = seg.info();
  CHECK(info.object_count == 1);
  CHECK(info.used == heap_begin_for(16) + kAtomicStateSize);

  Segment again = Segment::open(t.name());
  CHECK(again.open_atomic<std::int64_t>("a").get() == 5);

  CHECK(Segment::remove(t.name()));
  CHECK_FALSE(Segment::exists(t.name()));
  CHECK_FALSE(Segment::remove(t.name()));
  CHECK_ERROR(Segment::open(t.name()), ErrorCode::NotFound);
  // Handles keep working after remove (the mapping stays).
  CHECK(seg.open_atomic<std::int64_t>("a").add_and_get(1) == 6);
}

TEST_CASE("info reports a creator that has exited as dead") {
  test::TempSegment t;
  create_elsewhere(t.name());
  auto info = Segment::open(t.name()).info();
  CHECK(info.creator_pid != ::getpid());
  CHECK(info.creator_state == shmstate::ProcessState::Dead);
}

TEST_CASE("create of a taken name: AlreadyExists, the existing segment untouched") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  seg.atomic<std::int64_t>("keep", 7);
  auto err = error_of([&] { Segment::create(t.name(), {.size = 128 * 1024}); });
  CHECK(err.code() == ErrorCode::AlreadyExists);
  CHECK(contains(err.what(), t.name()));
  CHECK(Segment::open(t.name()).info().size == 64 * 1024);
  CHECK(Segment::open(t.name()).open_atomic<std::int64_t>("keep").get() == 7);
}

TEST_CASE("open of a missing segment: NotFound naming it") {
  test::TempSegment t;
  auto err = error_of([&] { Segment::open(t.name()); });
  CHECK(err.code() == ErrorCode::NotFound);
  CHECK(contains(err.what(), t.name()));
}

TEST_CASE("open_or_create creates once, then opens with the existing size and mode") {
  test::TempSegment t;
  Segment a = Segment::open_or_create(t.name(), {.size = 64 * 1024, .mode = 0640});
  a.atomic<std::int64_t>("x", 1);
  Segment b = Segment::open_or_create(t.name(), {.size = 256 * 1024, .mode = 0600});
  CHECK(b.info().size == 64 * 1024);
  CHECK(file_mode(t.path()) == 0640);
  CHECK(b.open_atomic<std::int64_t>("x").get() == 1);
}

TEST_CASE("a removed and recreated name is a new segment, also in the same process") {
  test::TempSegment t;
  Segment a = Segment::create(t.name(), {.size = 64 * 1024});
  a.atomic<std::int64_t>("old", 1);
  REQUIRE(Segment::remove(t.name()));
  Segment b = Segment::create(t.name(), {.size = 128 * 1024});
  CHECK(b.info().size == 128 * 1024);
  CHECK_FALSE(b.find("old").has_value());
  CHECK(Segment::open(t.name()).objects().empty());
  // The old handle still sees the old (unlinked) segment.
  CHECK(a.find("old").has_value());
}

// ---------------------------------------------------------------- modes

TEST_CASE("mode is applied exactly, whatever the umask") {
  for (mode_t mask : {mode_t{077}, mode_t{022}, mode_t{0}, mode_t{0777}}) {
    for (unsigned mode : {0640u, 0600u, 0666u, 0660u}) {
      CAPTURE(mask);
      CAPTURE(mode);
      test::TempSegment t;
      {
        Umask u(mask);
        Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = mode});
        CHECK(seg.info().mode == mode);
      }
      CHECK(file_mode(t.path()) == mode);
    }
  }
}

TEST_CASE("default mode is 0600, also with a permissive umask") {
  test::TempSegment t;
  {
    Umask u(0);
    Segment::create(t.name());
  }
  CHECK(file_mode(t.path()) == 0600);
  CHECK(SegmentOptions{}.mode == 0600);
}

TEST_CASE("open_or_create applies the mode exactly when it creates") {
  test::TempSegment t;
  {
    Umask u(077);
    Segment::open_or_create(t.name(), {.size = 64 * 1024, .mode = 0660});
  }
  CHECK(file_mode(t.path()) == 0660);
}

TEST_CASE("PermissionDenied for a process the mode shuts out") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to switch to another user in a child");
    return;
  }
  test::TempSegment t;
  Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600});
  test::Child other([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    try {
      Segment::open(t.name());
    } catch (const shmstate::Error& e) {
      if (e.code() == ErrorCode::PermissionDenied && std::string(e.what()).find(t.name()) != std::string::npos)
        return 0;
      return 3;
    }
    return 1;
  });
  CHECK(other.exit_code_within(10s) == 0);
}

// ---------------------------------------------------------------- names and options

TEST_CASE("segment names") {
  std::string longest(shmstate::kMaxSegmentNameLength - 20, 'a');
  test::TempSegment t;  // prefix for a unique name of maximal length
  std::string max_name = (t.name() + "-" + longest).substr(0, shmstate::kMaxSegmentNameLength);
  REQUIRE(max_name.size() == shmstate::kMaxSegmentNameLength);
  {
    Segment::create(max_name, {.size = 64 * 1024});
    CHECK(Segment::exists(max_name));
    CHECK(Segment::remove(max_name));
  }
  std::string ok_chars = t.name() + "-AZaz09._-";
  Segment::create(ok_chars, {.size = 64 * 1024});
  CHECK(Segment::remove(ok_chars));

  const std::vector<std::string> bad = {
      "", ".hidden", "..", ".", "a/b", "/abs", "a b", "a:b", "a\nb", std::string("a\0b", 3), "na\xc3\xafve",
      max_name + "x", "a*", "a?", "tab\t",
  };
  for (const auto& name : bad) {
    CAPTURE(name);
    CHECK_ERROR(Segment::create(name), ErrorCode::InvalidArgument);
    CHECK_ERROR(Segment::open(name), ErrorCode::InvalidArgument);
    CHECK_ERROR(Segment::open_or_create(name), ErrorCode::InvalidArgument);
    CHECK_ERROR(Segment::remove(name), ErrorCode::InvalidArgument);
    CHECK_ERROR(Segment::exists(name), ErrorCode::InvalidArgument);
  }
}

TEST_CASE("object names") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  std::string max_name(shmstate::kMaxObjectNameLength, 'o');
  seg.atomic<bool>(max_name, true);
  seg.atomic<bool>("ns:sub.name_x-1", true);
  CHECK(seg.find(max_name).has_value());
  CHECK(seg.open_atomic<bool>(max_name).get());
  CHECK(seg.find("ns:sub.name_x-1").has_value());

  const std::vector<std::string> bad = {
      "", max_name + "o", "a/b", "a b", "a\nb", std::string("a\0b", 3), "caf\xc3\xa9", "a*", "{}", "a,b",
  };
  for (const auto& name : bad) {
    CAPTURE(name);
    auto err = error_of([&] { seg.atomic<std::int64_t>(name, 0); });
    CHECK(err.code() == ErrorCode::InvalidArgument);
    CHECK(contains(err.what(), t.name()));
    CHECK_ERROR(seg.open_atomic<std::int64_t>(name), ErrorCode::InvalidArgument);
    CHECK_ERROR(seg.find(name), ErrorCode::InvalidArgument);
  }
  // A rejected name leaves no trace.
  CHECK(seg.objects().size() == 2);
  // A name that is a prefix of a 64-character one is not confused with it.
  CHECK_FALSE(seg.find(std::string(shmstate::kMaxObjectNameLength - 1, 'o')).has_value());
}

TEST_CASE("bad options: InvalidArgument, nothing created") {
  test::TempSegment t;
  const std::uint64_t min16 = heap_begin_for(16) + 4096;
  const std::vector<SegmentOptions> bad = {
      {.size = 64 * 1024, .mode = 0400},                         // owner cannot write
      {.size = 64 * 1024, .mode = 0200},                         // owner cannot read
      {.size = 64 * 1024, .mode = 0644 | 01000},                 // sticky bit
      {.size = 64 * 1024, .mode = 04600},                        // setuid
      {.size = 64 * 1024, .mode = 0600, .max_objects = 0},       //
      {.size = 64 * 1024 * 1024, .mode = 0600, .max_objects = 65537},
      {.size = 0},                                               //
      {.size = 1024},                                            // smaller than the header
      {.size = min16 - 1, .mode = 0600, .max_objects = 16},      // no 4 KiB heap
      {.size = (std::size_t{1} << 40) + 4096},                   // beyond 1 TiB
  };
  for (const auto& o : bad) {
    CAPTURE(o.size);
    CAPTURE(o.mode);
    CAPTURE(o.max_objects);
    auto err = error_of([&] { Segment::create(t.name(), o); });
    CHECK(err.code() == ErrorCode::InvalidArgument);
    CHECK(contains(err.what(), t.name()));
    CHECK_ERROR(Segment::open_or_create(t.name(), o), ErrorCode::InvalidArgument);
    CHECK_FALSE(Segment::exists(t.name()));
  }
  // The smallest valid size works, and so does the largest registry.
  Segment small = Segment::create(t.name(), {.size = min16, .mode = 0600, .max_objects = 16});
  CHECK(small.info().size == min16);
  CHECK(Segment::remove(t.name()));
  Segment big = Segment::create(t.name(), {.size = heap_begin_for(65536) + 4096, .mode = 0600, .max_objects = 65536});
  CHECK(big.info().max_objects == 65536);
}

// ---------------------------------------------------------------- registry

TEST_CASE("objects, find, kinds") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600, .max_objects = 8});
  CHECK(seg.objects().empty());
  CHECK_FALSE(seg.find("b").has_value());

  seg.atomic<bool>("b", true);
  seg.atomic<std::int64_t>("i", 1);
  seg.atomic<double>("d", 1.5);

  auto objs = seg.objects();
  REQUIRE(objs.size() == 3);
  CHECK(objs[0].name == "b");
  CHECK(objs[0].kind == Kind::Bool);
  CHECK(objs[1].name == "i");
  CHECK(objs[1].kind == Kind::Int64);
  CHECK(objs[2].name == "d");
  CHECK(objs[2].kind == Kind::Double);
  std::set<std::uint64_t> offsets;
  for (const auto& o : objs) {
    CHECK(o.size == kAtomicStateSize);
    CHECK(o.offset % 64 == 0);
    CHECK(o.offset >= heap_begin_for(8));
    CHECK(o.offset + o.size <= 64 * 1024);
    offsets.insert(o.offset);
  }
  CHECK(offsets.size() == 3);  // no two objects share bytes

  auto f = seg.find("i");
  REQUIRE(f.has_value());
  CHECK(f->name == "i");
  CHECK(f->kind == Kind::Int64);
  CHECK(f->offset == objs[1].offset);
  CHECK(f->size == objs[1].size);

  // Another handle of the same segment (and another process) sees them.
  CHECK(Segment::open(t.name()).objects().size() == 3);
  test::Child child([&] {
    auto s = Segment::open(t.name());
    auto list = s.objects();
    return list.size() == 3 && s.open_atomic<double>("d").get() == 1.5 ? 0 : 1;
  });
  CHECK(child.exit_code_within(10s) == 0);
}

TEST_CASE("kind names round-trip") {
  for (Kind k : {Kind::Bool, Kind::Int64, Kind::Double, Kind::Atom, Kind::Reference, Kind::FifoLock, Kind::Monitor,
                 Kind::Signal}) {
    auto n = shmstate::kind_name(k);
    CAPTURE(n);
    CHECK(n != "unknown");
    CHECK(shmstate::parse_kind(n) == k);
  }
  CHECK(shmstate::kind_name(Kind::Int64) == "int64");
  CHECK(shmstate::kind_name(Kind::FifoLock) == "fifo_lock");
  CHECK_FALSE(shmstate::parse_kind("int").has_value());
  CHECK_FALSE(shmstate::parse_kind("").has_value());
  CHECK(shmstate::process_state_name(shmstate::ProcessState::Dead) == "dead");
}

TEST_CASE("KindMismatch names the object and both kinds") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  seg.atomic<bool>("flag", true);
  auto err = error_of([&] { seg.atomic<std::int64_t>("flag", 3); });
  CHECK(err.code() == ErrorCode::KindMismatch);
  std::string m = err.what();
  CHECK(contains(m, t.name()));
  CHECK(contains(m, "flag"));
  CHECK(contains(m, "bool"));
  CHECK(contains(m, "int64"));
  auto err2 = error_of([&] { seg.open_atomic<double>("flag"); });
  CHECK(err2.code() == ErrorCode::KindMismatch);
  CHECK(contains(err2.what(), "bool"));
  CHECK(contains(err2.what(), "double"));
  // Nothing was created or changed.
  CHECK(seg.objects().size() == 1);
  CHECK(seg.open_atomic<bool>("flag").get());
}

// ---------------------------------------------------------------- SegmentFull

TEST_CASE("SegmentFull (heap): sizes in the message, the segment stays usable") {
  test::TempSegment t;
  const std::uint32_t max_objects = 100;
  const std::uint64_t heap = 64 * kAtomicStateSize + 32;  // room for 64 atomics, then 32 bytes
  const std::uint64_t size = heap_begin_for(max_objects) + heap;
  Segment seg = Segment::create(t.name(), {.size = size, .mode = 0600, .max_objects = max_objects});
  for (int i = 0; i < 64; ++i) seg.atomic<std::int64_t>("n" + std::to_string(i), i * 1000);
  auto used_before = seg.info().used;
  CHECK(used_before == size - 32);

  auto err = error_of([&] { seg.atomic<std::int64_t>("one-too-many", 1); });
  CHECK(err.code() == ErrorCode::SegmentFull);
  std::string m = err.what();
  CHECK(contains(m, t.name()));
  CHECK(contains(m, "one-too-many"));
  CHECK(contains(m, std::to_string(kAtomicStateSize)));  // requested bytes
  CHECK(contains(m, "32"));                    // free bytes
  CHECK(contains(m, std::to_string(size)));    // segment size

  // Nothing half-made: not listed, not found, no entry left reserving, heap unchanged.
  CHECK_FALSE(seg.find("one-too-many").has_value());
  CHECK(seg.objects().size() == 64);
  CHECK(seg.info().used == used_before);
  auto& impl = seg.impl();
  for (std::uint32_t i = 0; i < impl.capacity; ++i)
    CHECK(impl.entries[i].state.load() != shmstate::detail::kEntryReserving);

  // Existing objects intact and usable, also by name.
  for (int i = 0; i < 64; ++i) CHECK(seg.open_atomic<std::int64_t>("n" + std::to_string(i)).get() == i * 1000);
  CHECK(seg.atomic<std::int64_t>("n5", -1).add_and_get(1) == 5001);

  // A smaller block still fits in the 32 bytes left; then nothing does.
  std::uint64_t off = impl.allocate(32, 8, "small");
  CHECK(off == size - 32);
  CHECK_ERROR(impl.allocate(8, 8, "tiny"), ErrorCode::SegmentFull);
  CHECK(seg.info().used == size);
  CHECK_ERROR(seg.atomic<bool>("again", true), ErrorCode::SegmentFull);
}

TEST_CASE("SegmentFull (registry): max_objects reached, the segment stays usable") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600, .max_objects = 2});
  seg.atomic<std::int64_t>("a", 1);
  seg.atomic<double>("b", 2.5);
  auto used = seg.info().used;
  auto err = error_of([&] { seg.atomic<bool>("c", true); });
  CHECK(err.code() == ErrorCode::SegmentFull);
  CHECK(contains(err.what(), t.name()));
  CHECK(contains(err.what(), "c"));
  CHECK(contains(err.what(), "2"));  // the registry's capacity
  CHECK(seg.info().used == used);    // no heap taken
  CHECK(seg.objects().size() == 2);
  CHECK_FALSE(seg.find("c").has_value());
  CHECK(seg.open_atomic<std::int64_t>("a").add_and_get(1) == 2);
  CHECK(seg.atomic<double>("b", 0).get() == 2.5);
}

// ---------------------------------------------------------------- untrusted bytes

TEST_CASE("LayoutMismatch for a foreign file: refused, never overwritten or removed") {
  test::TempSegment t;
  std::string garbage = "this is somebody else's shared memory file, not ours at all";
  garbage.resize(8192, 'x');
  write_file(t.path(), garbage.data(), garbage.size());
  CHECK(Segment::exists(t.name()));

  auto err = error_of([&] { Segment::open(t.name()); });
  CHECK(err.code() == ErrorCode::LayoutMismatch);
  CHECK(contains(err.what(), t.name()));
  CHECK_ERROR(Segment::open_or_create(t.name()), ErrorCode::LayoutMismatch);
  CHECK_ERROR(Segment::create(t.name()), ErrorCode::AlreadyExists);
  CHECK_ERROR(Segment::remove(t.name()), ErrorCode::LayoutMismatch);
  CHECK(read_file(t.path()) == garbage);
  CHECK_FALSE(listed(Segment::list(), t.name()));

  SUBCASE("empty and short files too") {
    for (std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{11}}) {
      CAPTURE(n);
      write_file(t.path(), garbage.data(), n);
      CHECK_ERROR(Segment::open(t.name()), ErrorCode::LayoutMismatch);
      CHECK_ERROR(Segment::remove(t.name()), ErrorCode::LayoutMismatch);
      CHECK_FALSE(listed(Segment::list(), t.name()));
    }
  }
  SUBCASE("another magic, even with our layout version after it") {
    std::vector<std::uint8_t> bytes(8192, 0);
    std::uint64_t magic = shmstate::detail::kSegmentMagic ^ 1;
    std::uint32_t version = shmstate::kLayoutVersion;
    std::memcpy(bytes.data(), &magic, 8);
    std::memcpy(bytes.data() + 8, &version, 4);
    write_file(t.path(), bytes.data(), bytes.size());
    CHECK_ERROR(Segment::open(t.name()), ErrorCode::LayoutMismatch);
    CHECK_ERROR(Segment::remove(t.name()), ErrorCode::LayoutMismatch);
    CHECK_FALSE(listed(Segment::list(), t.name()));
  }
  SUBCASE("a directory under a segment name is not a segment") {
    ::unlink(t.path().c_str());
    REQUIRE(::mkdir(t.path().c_str(), 0700) == 0);
    CHECK_THROWS_AS(Segment::open(t.name()), shmstate::Error);
    CHECK_FALSE(listed(Segment::list(), t.name()));
    ::rmdir(t.path().c_str());
  }
}

TEST_CASE("LayoutMismatch for our magic with another layout version names the segment and both versions") {
  test::TempSegment t;
  create_elsewhere(t.name(), {.size = 64 * 1024}, true);
  const std::uint32_t other = 77;
  patch_value<std::uint32_t>(t.path(), 8, other);

  auto err = error_of([&] { Segment::open(t.name()); });
  CHECK(err.code() == ErrorCode::LayoutMismatch);
  std::string m = err.what();
  CHECK(contains(m, t.name()));
  CHECK(contains(m, std::to_string(other)));
  // Our own version must be named too (strip the name and the other version first).
  std::string rest = m;
  for (const std::string& s : {t.name(), std::to_string(other)})
    for (auto p = rest.find(s); p != std::string::npos; p = rest.find(s)) rest.erase(p, s.size());
  CHECK(contains(rest, std::to_string(shmstate::kLayoutVersion)));
  CHECK_ERROR(Segment::open_or_create(t.name()), ErrorCode::LayoutMismatch);

  // list() does not fail because of it; if it shows it, it says what is wrong.
  shmstate::SegmentInfo info;
  if (listed(Segment::list(), t.name(), &info)) {
    CHECK_FALSE(info.problem.empty());
    CHECK(info.layout_version == other);
  }
  // It is ours (our magic), so remove() takes it.
  CHECK(Segment::remove(t.name()));
}

TEST_CASE("Corrupt: our magic and version, garbage after it") {
  test::TempSegment t;

  SUBCASE("a hand-written file") {
    std::vector<std::uint8_t> bytes(8192);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 131 + 7);
    std::uint64_t magic = shmstate::detail::kSegmentMagic;
    std::uint32_t version = shmstate::kLayoutVersion;
    std::memcpy(bytes.data(), &magic, 8);
    std::memcpy(bytes.data() + 8, &version, 4);
    write_file(t.path(), bytes.data(), bytes.size());
  }
  SUBCASE("a header with garbage size") {
    create_elsewhere(t.name(), {.size = 64 * 1024});
    patch_value<std::uint64_t>(t.path(), 16, 999);
  }
  SUBCASE("a header with a huge registry capacity") {
    create_elsewhere(t.name(), {.size = 64 * 1024});
    patch_value<std::uint32_t>(t.path(), 64, 0xffffffffu);
  }
  SUBCASE("a registry capacity beyond the maximum, with a consistent heap_begin") {
    const std::uint32_t cap = shmstate::detail::kMaxRegistryCapacity + 1;
    const std::uint64_t hb = heap_begin_for(cap);
    create_elsewhere(t.name(), {.size = hb + 64 * 1024});
    patch_value<std::uint32_t>(t.path(), 64, cap);
    patch_value<std::uint64_t>(t.path(), 72, hb);
    patch_value<std::uint64_t>(t.path(), 128, hb);
  }
  SUBCASE("heap_top beyond the end") {
    create_elsewhere(t.name(), {.size = 64 * 1024});
    patch_value<std::uint64_t>(t.path(), 128, std::uint64_t{1} << 50);
  }
  SUBCASE("a truncated segment") {
    create_elsewhere(t.name(), {.size = 64 * 1024});
    REQUIRE(::truncate(t.path().c_str(), 500) == 0);
  }
  SUBCASE("a segment grown by someone else") {
    create_elsewhere(t.name(), {.size = 64 * 1024});
    REQUIRE(::truncate(t.path().c_str(), 128 * 1024) == 0);
  }

  auto err = error_of([&] { Segment::open(t.name()); });
  CHECK(err.code() == ErrorCode::Corrupt);
  CHECK(contains(err.what(), t.name()));
  CHECK_ERROR(Segment::open_or_create(t.name()), ErrorCode::Corrupt);
  shmstate::SegmentInfo info;
  REQUIRE(listed(Segment::list(), t.name(), &info));  // ours, damaged: listed with its problem
  CHECK_FALSE(info.problem.empty());
  CHECK(Segment::remove(t.name()));  // a damaged segment of ours can be removed
  CHECK_FALSE(Segment::exists(t.name()));
}

TEST_CASE("Corrupt registry entries: objects() and lookups throw Corrupt, never crash") {
  test::TempSegment t;
  const std::uint64_t size = 64 * 1024;
  Segment seg = Segment::create(t.name(), {.size = size, .mode = 0600, .max_objects = 8});
  seg.atomic<std::int64_t>("first", 1);
  seg.atomic<std::int64_t>("victim", 2);
  const std::uint64_t entry1 = kHeader + 1 * kEntry;  // "victim"
  namespace d = shmstate::detail;

  SUBCASE("offset outside the segment") { patch_value<std::uint64_t>(t.path(), entry1 + 8, size + 4096); }
  SUBCASE("offset far outside the segment") { patch_value<std::uint64_t>(t.path(), entry1 + 8, ~std::uint64_t{0} - 8); }
  SUBCASE("offset inside the registry") { patch_value<std::uint64_t>(t.path(), entry1 + 8, kHeader); }
  SUBCASE("size running past the end") { patch_value<std::uint64_t>(t.path(), entry1 + 16, size); }
  SUBCASE("size zero") { patch_value<std::uint64_t>(t.path(), entry1 + 16, 0); }
  SUBCASE("unknown kind") { patch_value<std::uint32_t>(t.path(), entry1 + 4, 999); }
  SUBCASE("name not terminated") {
    std::string junk(d::kObjectNameField, 'v');
    patch(t.path(), entry1 + offsetof(d::RegistryEntry, name), junk.data(), junk.size());
  }
  SUBCASE("invalid characters in the name") {
    patch(t.path(), entry1 + offsetof(d::RegistryEntry, name), "vic/tim", 8);
  }

  auto err = error_of([&] { seg.objects(); });
  CHECK(err.code() == ErrorCode::Corrupt);
  CHECK(contains(err.what(), t.name()));
  CHECK_ERROR(Segment::open(t.name()).objects(), ErrorCode::Corrupt);
  // The healthy entry is still reachable by name.
  CHECK(seg.open_atomic<std::int64_t>("first").get() == 1);
}

TEST_CASE("garbage after the NUL of a registry name: objects, find, open and create all say Corrupt") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600, .max_objects = 8});
  seg.atomic<std::int64_t>("first", 1);
  seg.atomic<std::int64_t>("victim", 2);
  const std::uint64_t entry1 = kHeader + 1 * kEntry;  // "victim"
  patch(t.path(), entry1 + offsetof(shmstate::detail::RegistryEntry, name) + 10, "zz", 2);
  auto err = error_of([&] { seg.objects(); });
  CHECK(err.code() == ErrorCode::Corrupt);
  CHECK(contains(err.what(), "after its NUL"));
  CHECK_ERROR(seg.find("victim"), ErrorCode::Corrupt);
  CHECK_ERROR(seg.open_atomic<std::int64_t>("victim"), ErrorCode::Corrupt);
  // Never a second object of the same name.
  CHECK_ERROR(seg.atomic<std::int64_t>("victim", 0), ErrorCode::Corrupt);
  CHECK(seg.open_atomic<std::int64_t>("first").get() == 1);
}

TEST_CASE("Corrupt object state behind a valid-looking entry: the handle refuses it") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600, .max_objects = 8});
  seg.atomic<std::int64_t>("a", 1);
  seg.atomic<std::int64_t>("b", 2);
  const std::uint64_t entry1 = kHeader + 1 * kEntry;
  const auto off_b = seg.find("b")->offset;

  SUBCASE("misaligned offset") {
    patch_value<std::uint64_t>(t.path(), entry1 + 8, off_b + 8);
    CHECK_ERROR(seg.open_atomic<std::int64_t>("b"), ErrorCode::Corrupt);
    CHECK_ERROR(seg.atomic<std::int64_t>("b", 0), ErrorCode::Corrupt);
  }
  SUBCASE("object header of another kind") {
    patch_value<std::uint32_t>(t.path(), off_b, static_cast<std::uint32_t>(Kind::Double));
    CHECK_ERROR(seg.open_atomic<std::int64_t>("b"), ErrorCode::Corrupt);
  }
  SUBCASE("size too small for the state") {
    patch_value<std::uint64_t>(t.path(), entry1 + 16, 16);
    CHECK_ERROR(seg.open_atomic<std::int64_t>("b"), ErrorCode::Corrupt);
  }
  SUBCASE("another layout version of the object") {
    patch_value<std::uint32_t>(t.path(), off_b + 4, 9);
    auto err = error_of([&] { seg.open_atomic<std::int64_t>("b"); });
    CHECK((err.code() == ErrorCode::LayoutMismatch || err.code() == ErrorCode::Corrupt));
    CHECK(contains(err.what(), "9"));
  }
  CHECK(seg.open_atomic<std::int64_t>("a").get() == 1);
}

// ---------------------------------------------------------------- list

TEST_CASE("list reports our segments sorted, skips foreign files and temp files") {
  test::TempSegment ours1("list");
  test::TempSegment ours2("list");
  test::TempSegment foreign("list");
  Segment a = Segment::create(ours1.name(), {.size = 64 * 1024, .mode = 0640, .max_objects = 4});
  a.atomic<std::int64_t>("x", 1);
  a.atomic<bool>("y", true);
  Segment::create(ours2.name(), {.size = 128 * 1024});
  write_file(foreign.path(), "GARBAGEGARBAGEGARBAGE", 21);
  std::string dot = "/dev/shm/.shmstate-test-hidden-" + std::to_string(::getpid());
  write_file(dot, "x", 1);

  auto list = Segment::list();
  ::unlink(dot.c_str());
  shmstate::SegmentInfo i1, i2;
  REQUIRE(listed(list, ours1.name(), &i1));
  REQUIRE(listed(list, ours2.name(), &i2));
  CHECK_FALSE(listed(list, foreign.name()));
  for (const auto& s : list) CHECK(s.name.front() != '.');
  CHECK(std::is_sorted(list.begin(), list.end(), [](const auto& x, const auto& y) { return x.name < y.name; }));

  CHECK(i1.problem.empty());
  CHECK(i1.size == 64 * 1024);
  CHECK(i1.max_objects == 4);
  CHECK(i1.object_count == 2);
  CHECK(i1.used == heap_begin_for(4) + 2 * kAtomicStateSize);
  CHECK(i1.mode == 0640);
  CHECK(i1.layout_version == shmstate::kLayoutVersion);
  CHECK(i1.creator_pid == ::getpid());
  CHECK(i1.creator_state == shmstate::ProcessState::Alive);
  CHECK(i2.size == 128 * 1024);
  CHECK(i2.object_count == 0);
}

TEST_CASE("list skips files this process may not read") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to switch to another user in a child");
    return;
  }
  test::TempSegment t("list");
  test::TempSegment open_one("list");
  Segment::create(t.name(), {.size = 64 * 1024, .mode = 0600});
  Segment::create(open_one.name(), {.size = 64 * 1024, .mode = 0644 | 0600});
  test::Child other([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    auto list = Segment::list();
    bool saw_private = false, saw_public = false;
    for (const auto& s : list) {
      saw_private = saw_private || s.name == t.name();
      saw_public = saw_public || s.name == open_one.name();
    }
    return !saw_private && saw_public ? 0 : 1;
  });
  CHECK(other.exit_code_within(10s) == 0);
}

// ---------------------------------------------------------------- racing creators

TEST_CASE("open_or_create racing from 4 processes: all end up in one segment") {
  test::TempSegment t("race");
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    Segment::remove(t.name());
    test::SharedMemory mem;
    auto* go = mem.as<std::atomic<int>>();
    auto* inodes = reinterpret_cast<std::atomic<std::uint64_t>*>(mem.as<char>() + 64);
    std::vector<std::unique_ptr<test::Child>> children;
    for (int i = 0; i < 4; ++i) {
      children.push_back(std::make_unique<test::Child>([&, i] {
        while (go->load() == 0) {
        }  // released together (bounded: the parent sets go, or kills us)
        auto seg = Segment::open_or_create(t.name(), {.size = 64 * 1024});
        seg.atomic<std::int64_t>("joined", 0).add_and_get(1);
        struct stat st {};
        if (::stat(("/dev/shm/" + t.name()).c_str(), &st) != 0) return 2;
        inodes[i].store(st.st_ino);
        return 0;
      }));
    }
    go->store(1);
    for (auto& c : children) CHECK(c->exit_code_within(20s) == 0);
    // Every child's add landed in the one segment that now has the name.
    Segment seg = Segment::open(t.name());
    CHECK(seg.open_atomic<std::int64_t>("joined").get() == 4);
    CHECK(seg.objects().size() == 1);
    for (int i = 1; i < 4; ++i) CHECK(inodes[i].load() == inodes[0].load());
    bool creator_was_a_child = false;
    for (auto& c : children) creator_was_a_child |= seg.info().creator_pid == c->pid();
    CHECK(creator_was_a_child);
  }
  // No loser's temp file is left behind.
  for (const auto& s : Segment::list()) CHECK(s.name.rfind(".shmstate-tmp-", 0) != 0);
}

TEST_CASE("creators of one name queued on the registry mutex all get the one object") {
  test::TempSegment t("race");
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto& mutex = seg.impl().header->registry_mutex;
  test::SharedMemory mem;
  auto* started = mem.as<std::atomic<int>>();
  // Hold the registry mutex so every creator finds the name missing, then
  // queues on the mutex: each must look again once it gets it.
  REQUIRE(mutex.lock("test") == shmstate::platform::LockResult::Acquired);
  std::vector<std::unique_ptr<test::Child>> children;
  for (int i = 0; i < 3; ++i)
    children.push_back(std::make_unique<test::Child>([&] {
      auto s = Segment::open(t.name());
      started->fetch_add(1);
      s.atomic<std::int64_t>("same", 0).add_and_get(1);
      return 0;
    }));
  auto sleeping = [&](pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    std::string st = read_file(path);
    auto p = st.rfind(')');
    return p != std::string::npos && p + 2 < st.size() && st[p + 2] == 'S';
  };
  bool all_blocked = test::eventually([&] {
    if (started->load() != 3) return false;
    for (auto& c : children)
      if (!sleeping(c->pid())) return false;
    return true;
  });
  CHECK(all_blocked);
  CHECK_FALSE(seg.find("same").has_value());
  mutex.unlock();
  for (auto& c : children) CHECK(c->exit_code_within(20s) == 0);
  CHECK(seg.open_atomic<std::int64_t>("same").get() == 3);
  CHECK(seg.objects().size() == 1);
}

TEST_CASE("objects are aligned even when the heap top is not") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name(), {.size = 64 * 1024});
  auto odd = seg.impl().allocate(8, 8, "pad");  // leaves heap_top 8 past a 64-byte boundary
  CHECK(odd % 64 == 0);
  auto n = seg.atomic<std::int64_t>("n", 3);
  auto info = seg.find("n");
  REQUIRE(info.has_value());
  CHECK(info->offset % 64 == 0);
  CHECK(info->offset >= odd + 8);
  CHECK(n.add_and_get(1) == 4);
}

// Regression: create() published the name, another thread of the same process
// opened and cached it first, and create() then unmapped its own region while
// returning a handle into it (the next use faulted).
TEST_CASE("two threads of one process open_or_create the same new segment: both handles work") {
  test::TempSegment seg("thr-ooc");
  for (int round = 0; round < 2000; ++round) {
    shmstate::Segment::remove(seg.name());
    std::int64_t seen[2] = {0, 0};
    std::atomic<int> ready{0};
    auto work = [&](int t) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }  // both start together: the race needs them in the same microseconds
      auto s = shmstate::Segment::open_or_create(seg.name());
      seen[t] = s.atomic<std::int64_t>("n", 0).add_and_get(1);
    };
    std::thread other(work, 1);
    work(0);
    other.join();
    CAPTURE(round);
    REQUIRE(seen[0] + seen[1] == 3);  // 1 and 2, in some order: one shared counter
  }
}

TEST_CASE("a free list that points at itself never hands out one block twice") {
  test::TempSegment t("freeloop");
  auto seg = shmstate::Segment::create(t.name());
  auto& impl = seg.impl();
  std::uint64_t cap = 0;
  constexpr std::uint64_t kOwner = 4096;  // any object offset
  std::uint64_t a = impl.allocate_block(100, &cap, kOwner, "x");
  CHECK(impl.free_block(a, cap, kOwner));
  // damage: a.next = a (the link lives in the block's header)
  reinterpret_cast<shmstate::detail::BlockHeader*>(impl.base + a - shmstate::detail::kBlockHeaderSize)->next.store(a);
  std::uint64_t first = impl.allocate_block(100, &cap, kOwner, "x");
  std::uint64_t second = impl.allocate_block(100, &cap, kOwner, "x");
  CHECK(first == a);
  CHECK(second != a);
}

TEST_CASE("block headers: a block is freed once, by its owner, at its size; the header says who has it") {
  test::TempSegment t("blockhdr");
  auto seg = shmstate::Segment::create(t.name());
  auto& impl = seg.impl();
  namespace d = shmstate::detail;
  std::uint64_t cap = 0;
  std::uint64_t a = impl.allocate_block(100, &cap, 4096, "x");
  CHECK(cap == 128);
  CHECK(a % 64 == 0);
  CHECK(impl.block_owned_by(a, 128, 4096));
  CHECK_FALSE(impl.block_owned_by(a, 128, 8192));  // another owner
  CHECK_FALSE(impl.block_owned_by(a, 256, 4096));  // another size
  CHECK_FALSE(impl.block_owned_by(a + 64, 64, 4096));  // inside the block: no header there
  CHECK(impl.block_problem(a, 128, 8192).find("belongs to the object at offset 4096, not to this one (at 8192)") != std::string::npos);
  CHECK_FALSE(impl.free_block(a, 128, 8192));  // a foreign owner's free is refused
  CHECK_FALSE(impl.free_block(a, 256, 4096));  // so is one at the wrong size
  CHECK(impl.block_owned_by(a, 128, 4096));
  CHECK(impl.free_block(a, 128, 4096));
  CHECK_FALSE(impl.free_block(a, 128, 4096));  // a double free is refused: the list holds it once
  CHECK(impl.block_problem(a, 128, 4096).find("the block is free") != std::string::npos);
  CHECK(impl.allocate_block(100, &cap, 4096, "x") == a);
  CHECK(impl.allocate_block(100, &cap, 4096, "x") != a);
  // Bump-allocated blocks leave room for their headers: no two overlap.
  std::uint64_t b = impl.allocate_block(64, &cap, 4096, "x");
  std::uint64_t c = impl.allocate_block(64, &cap, 4096, "x");
  CHECK(c >= b + 64 + d::kBlockHeaderSize);
}

TEST_CASE("racing creators of one object name: exactly one reports that it created") {
  test::TempSegment t("create-race");
  Segment seg = Segment::create(t.name(), {.size = 1 << 20});
  constexpr int kChildren = 6;
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    {  // find_or_create: ObjectSlot::created is true in exactly one
      const std::string name = "slot" + std::to_string(round);
      test::SharedMemory mem;
      auto* created = mem.as<std::atomic<int>>();
      auto codes = test::run_children(kChildren, [&](int) {
        auto s = Segment::open(t.name());
        auto slot = s.impl().find_or_create(name, Kind::Int64, kAtomicStateSize, 64, [](std::byte* p) {
          auto* st = new (p) shmstate::detail::AtomicState<std::int64_t>;
          st->header = {static_cast<std::uint32_t>(Kind::Int64), shmstate::detail::kAtomicLayoutVersion};
        });
        if (slot.created) created->fetch_add(1);
        return 0;
      });
      for (int c : codes) CHECK(c == 0);
      CHECK(created->load() == 1);
    }
    {  // CreateMode::Exclusive, mixed kinds: one succeeds, the others get AlreadyExists
      const std::string name = "excl" + std::to_string(round);
      test::SharedMemory mem;
      auto* created = mem.as<std::atomic<int>>();
      auto codes = test::run_children(kChildren, [&](int i) {
        auto s = Segment::open(t.name());
        try {
          if (i % 3 == 0)
            s.atomic<std::int64_t>(name, 7, shmstate::CreateMode::Exclusive);
          else if (i % 3 == 1)
            s.atom(name, boost::json::value(1), shmstate::CreateMode::Exclusive);
          else
            s.atomic<double>(name, 1.5, shmstate::CreateMode::Exclusive);
        } catch (const shmstate::Error& e) {
          return e.code() == ErrorCode::AlreadyExists && contains(e.what(), name) ? 10 : 20;
        }
        created->fetch_add(1);
        return 0;
      });
      CHECK(std::count(codes.begin(), codes.end(), 0) == 1);
      CHECK(std::count(codes.begin(), codes.end(), 10) == kChildren - 1);
      CHECK(created->load() == 1);
      CHECK(seg.find(name).has_value());
    }
  }
  CHECK(seg.objects().size() == 10);
}

TEST_CASE("CreateMode::Exclusive in one process: AlreadyExists names the existing kind; OpenOrCreate opens") {
  test::TempSegment t;
  Segment seg = Segment::create(t.name());
  seg.atomic<std::int64_t>("n", 5, shmstate::CreateMode::Exclusive);
  auto err = error_of([&] { seg.atom("n", boost::json::value(1), shmstate::CreateMode::Exclusive); });
  CHECK(err.code() == ErrorCode::AlreadyExists);
  CHECK(contains(err.what(), "'n'"));
  CHECK(contains(err.what(), "int64"));
  CHECK_ERROR(seg.atomic<std::int64_t>("n", 0, shmstate::CreateMode::Exclusive), ErrorCode::AlreadyExists);
  CHECK(seg.atomic<std::int64_t>("n", 0).get() == 5);
  auto slot = seg.impl().find_or_create("n", Kind::Int64, kAtomicStateSize, 64, [](std::byte*) {});
  CHECK_FALSE(slot.created);
}
