// bench rows of Store: each candidate beside its baseline (harness.hpp).
//
// The files live in a fresh directory under $TMPDIR (default /tmp): a real
// file system, where fsync costs what it costs (on tmpfs it is free and the
// rows would only compare the CPU work around it). These rows sleep in fsync,
// so 1 proc rows are timed by the wall clock.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#include <shmstate/store.hpp>

#include "harness.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {

namespace json = boost::json;

// A directory for one row's files, removed when the row's Bodies are gone.
struct Dir {
  std::string path;
  Dir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr && *base ? base : "/tmp") + "/shmstate-bench-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) throw_errno(errno, "mkdtemp " + templ);
    path = templ;
    owner = ::getpid();
  }
  ~Dir() {
    if (::getpid() != owner) return;  // a forked child's copy
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  pid_t owner;
};

// About 1 KB of JSON: 40 members of short strings.
json::value document_1kb() {
  json::object o;
  for (int i = 0; i < 40; ++i) o["key" + std::to_string(i)] = "value-" + std::to_string(100000 + i);
  return o;
}

// What a careful program writes by hand: temp file beside the target, write,
// fsync, rename over it, fsync of the directory.
void raw_replace(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string temp = dir + "/." + name + ".raw." + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(errno, "open " + temp);
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) throw_errno(errno, "write");
  if (::fsync(fd) != 0) throw_errno(errno, "fsync");
  ::close(fd);
  if (::rename(temp.c_str(), (dir + "/" + name).c_str()) != 0) throw_errno(errno, "rename");
  int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d < 0 || ::fsync(d) != 0) throw_errno(errno, "fsync dir");
  ::close(d);
}

// Candidate: Store::commit of a 1 KB value (dump, lock, replace, unlock).
// Baseline: raw_replace of the same bytes.
Bodies commit_bodies() {
  auto dir = std::make_shared<Dir>();
  auto store = std::make_shared<shmstate::Store>(shmstate::Store::open(dir->path + "/s.json", document_1kb()));
  auto bytes = std::make_shared<std::string>(json::serialize(document_1kb()) + "\n");
  Body candidate = [dir, store](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) store->commit();
    return n;
  };
  Body baseline = [dir, bytes](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) raw_replace(dir->path, "raw.json", *bytes);
    return n;
  };
  return {std::move(candidate), std::move(baseline)};
}

// Per process: a Store (and a lock fd) must not be inherited through fork,
// because a flock belongs to the open file, which parent and child would share.
template <class T>
struct PerProcess {
  std::optional<T> value;
  pid_t pid = 0;
  template <class Make>
  T& get(Make&& make) {
    if (pid != ::getpid() || !value) {
      value.reset();
      value.emplace(make());
      pid = ::getpid();
    }
    return *value;
  }
};

// Candidate: Store::update incrementing a counter in a 1 KB document, from 2
// processes (lock, read + parse, modify, dump, replace, unlock). Baseline:
// the same raw_replace of preformatted 1 KB bytes under an flock.
Bodies update_bodies() {
  auto dir = std::make_shared<Dir>();
  const std::string path = dir->path + "/s.json";
  {
    auto v = document_1kb();
    v.as_object()["n"] = 0;
    shmstate::Store::open(path, v).commit();
  }
  auto bytes = std::make_shared<std::string>(json::serialize(document_1kb()) + "\n");
  auto store = std::make_shared<PerProcess<shmstate::Store>>();
  auto lock = std::make_shared<PerProcess<int>>();
  Body candidate = [dir, path, store](std::uint64_t n) {
    auto& s = store->get([&] { return shmstate::Store::open(path); });
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto& v = s.update([](json::value& v) {
        auto& c = v.as_object()["n"];
        c = c.as_int64() + 1;
      });
      acc += static_cast<std::uint64_t>(v.as_object().at("n").as_int64());
    }
    return acc;
  };
  Body baseline = [dir, bytes, lock](std::uint64_t n) {
    int fd = lock->get([&] {
      int f = ::open((dir->path + "/raw.json.lock").c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
      if (f < 0) throw_errno(errno, "open lock");
      return f;
    });
    for (std::uint64_t i = 0; i < n; ++i) {
      ::flock(fd, LOCK_EX);
      raw_replace(dir->path, "raw.json", *bytes);
      ::flock(fd, LOCK_UN);
    }
    return n;
  };
  return {std::move(candidate), std::move(baseline)};
}

// Candidate: Segment::snapshot of a segment of 1,000 objects of every kind a
// snapshot saves (each captured through its kind, the document serialised,
// the durable replace). Baseline: raw_replace of the very bytes it wrote.
// The difference is what capturing and serialising cost beyond the write.
Bodies snapshot_bodies() {
  auto dir = std::make_shared<Dir>();
  auto seg = std::make_shared<OwnSegment>(shmstate::SegmentOptions{.size = 8 << 20, .max_objects = 1024});
  shmstate::Segment& s = seg->get();
  for (int i = 0; i < 250; ++i) s.atomic<std::int64_t>("counter." + std::to_string(i), i * 1000003);
  for (int i = 0; i < 250; ++i) s.atomic<double>("ratio." + std::to_string(i), 1.0 / (i + 3));
  for (int i = 0; i < 250; ++i)
    s.atom("config." + std::to_string(i), json::object{{"id", i}, {"name", "object-" + std::to_string(i)},
                                                        {"tags", json::array{"a", "b", i % 7}}});
  for (int i = 0; i < 125; ++i) s.fifo_lock("lock." + std::to_string(i), shmstate::LockModes::read_write(), 4);
  for (int i = 0; i < 125; ++i) {
    auto sig = s.signal("done." + std::to_string(i));
    if (i % 2 == 0) sig.go();
  }
  const std::string path = dir->path + "/seg.json";
  s.snapshot(path);
  std::ifstream in(path, std::ios::binary);
  auto bytes = std::make_shared<std::string>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  Body candidate = [dir, seg, path](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) seg->get().snapshot(path);
    return n;
  };
  Body baseline = [dir, bytes](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) raw_replace(dir->path, "raw.json", *bytes);
    return n + bytes->size();
  };
  return {std::move(candidate), std::move(baseline)};
}

}  // namespace

void store_rows(std::vector<Case>& cases) {
  // Store issue, "Benchmark": 1 KB commit vs the raw durable replace, target <= 1.1.
  Case commit{"Store::commit 1KB 1 proc", "temp+write+fsync+rename+fsync dir 1KB 1 proc", 1, Target{1.1, std::nullopt},
              [](Fixture&) { return commit_bodies(); }};
  commit.wall_time = true;
  cases.push_back(std::move(commit));
  // update from 2 processes vs the same raw commit under flock, target <= 1.2.
  cases.push_back(Case{"Store::update 1KB 2 procs", "flock + temp+write+fsync+rename+fsync dir 1KB 2 procs", 2,
                       Target{1.2, std::nullopt}, [](Fixture&) { return update_bodies(); }});
  // Segment snapshots: 1,000 objects (the issue asks for the time, in ms).
  Case snapshot{"Segment::snapshot 1000 objects 1 proc", "temp+write+fsync+rename+fsync dir of its bytes 1 proc", 1,
                Target{}, [](Fixture&) { return snapshot_bodies(); }};
  snapshot.wall_time = true;
  cases.push_back(std::move(snapshot));
}

}  // namespace shmstate_bench
