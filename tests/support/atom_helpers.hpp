// Test support for Atom / AtomicReference suites.
//
// stored() reads an atom's published value straight from the segment, not
// through the process-local parsed-value cache: a process that wrote a value
// (or a child fork()ed from it) would otherwise be shown its own cached copy,
// and a test would prove nothing about the bytes in shared memory.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/segment.hpp>

#include "primitives/atom_state.hpp"
#include "primitives/json_storable.hpp"
#include "segment/segment_impl.hpp"
#include "support/proc.hpp"

namespace atomtest {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

// The shared state of the atom/reference `name` (internal layout).
inline shmstate::detail::AtomState& atom_state(const shmstate::Segment& seg, std::string_view name) {
  auto info = seg.find(name);
  if (!info) throw std::runtime_error("no object " + std::string(name));
  return *reinterpret_cast<shmstate::detail::AtomState*>(seg.impl().base + info->offset);
}

struct Stored {
  std::uint64_t version = 0;
  std::string bytes;
  bool in_heap = false;  // the published descriptor lies inside the heap
  bool valid = false;    // bytes parse as JSON
  json::value value;     // null unless valid
};

// The published (version, value), read from shared memory with the seqlock
// discipline of a reader (retries while a writer publishes meanwhile).
inline Stored stored(const shmstate::Segment& seg, std::string_view name) {
  auto& s = atom_state(seg, name);
  auto& impl = seg.impl();
  for (;;) {
    std::uint64_t word = s.current.load(std::memory_order_acquire);
    const auto& b = s.buffers[shmstate::detail::atom_buffer(word)];
    std::uint64_t offset = b.offset.load(std::memory_order_relaxed);
    std::uint64_t capacity = b.capacity.load(std::memory_order_relaxed);
    std::uint64_t length = b.length.load(std::memory_order_relaxed);
    Stored r;
    r.version = shmstate::detail::atom_version(word);
    r.in_heap = length > 0 && length <= capacity && impl.in_heap(offset, capacity);
    if (r.in_heap) shmstate::detail::seqlock_copy(r.bytes, impl.base + offset, length);
    if (shmstate::detail::seqlock_recheck(s.current) != word) continue;
    boost::system::error_code ec;
    if (r.in_heap) {
      r.value = shmstate::detail::parse_json_exact(r.bytes, ec);  // as readers do
      r.valid = !ec;
      if (ec) r.value = nullptr;
    }
    return r;
  }
}

struct Block {
  std::uint64_t offset;
  std::uint64_t capacity;
  std::uint64_t owner;  // the owning atom's state offset
};

// The value blocks the atoms `names` own (both buffers, where allocated).
inline std::vector<Block> value_blocks(const shmstate::Segment& seg, const std::vector<std::string>& names) {
  std::vector<Block> blocks;
  for (const auto& n : names) {
    auto& s = atom_state(seg, n);
    std::uint64_t owner = seg.find(n)->offset;
    for (const auto& b : s.buffers) {
      std::uint64_t off = b.offset.load(std::memory_order_relaxed);
      std::uint64_t cap = b.capacity.load(std::memory_order_relaxed);
      if (off != 0 && cap != 0) blocks.push_back({off, cap, owner});
    }
  }
  return blocks;
}

// "" if every block lies in the heap, its header says it is its atom's block
// of that size, and no two blocks (headers included) overlap; else what is
// wrong. Two atoms (or two buffers) sharing memory would mean a block was
// handed out twice: the allocator's free lists are damaged.
inline std::string blocks_problem(const shmstate::Segment& seg, std::vector<Block> blocks) {
  auto& impl = seg.impl();
  constexpr std::uint64_t kHeader = shmstate::detail::kBlockHeaderSize;
  for (const auto& b : blocks) {
    if (!impl.in_heap(b.offset - kHeader, b.capacity + kHeader))
      return "block at " + std::to_string(b.offset) + " (+" + std::to_string(b.capacity) + ") is outside the heap";
    if (!impl.block_owned_by(b.offset, b.capacity, b.owner))
      return "block at " + std::to_string(b.offset) + ": " + impl.block_problem(b.offset, b.capacity, b.owner);
  }
  std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.offset < b.offset; });
  for (std::size_t i = 1; i < blocks.size(); ++i)
    if (blocks[i - 1].offset + blocks[i - 1].capacity > blocks[i].offset - kHeader)
      return "blocks at " + std::to_string(blocks[i - 1].offset) + " (+" + std::to_string(blocks[i - 1].capacity) +
             ") and " + std::to_string(blocks[i].offset) + " (its header included) overlap";
  return "";
}

// fn running on its own thread; the caller waits with a bound (wait_for), so
// a call that would hang fails the test instead of hanging it. get() joins
// the thread, so a test can fork() afterwards without a helper thread still
// tearing down (a fork() while another thread allocates can hang the child
// in a sanitizer's allocator). A thread still running when the handle goes
// away is detached: capture by value, it may outlive the test case.
template <class T>
class Async {
 public:
  template <class F>
  explicit Async(F fn) {
    std::packaged_task<T()> task(std::move(fn));
    fut_ = task.get_future();
    thread_ = std::thread(std::move(task));
  }
  Async(Async&&) noexcept = default;
  Async& operator=(Async&&) = delete;
  ~Async() {
    if (!thread_.joinable()) return;
    if (fut_.valid() && fut_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) thread_.detach();
    else thread_.join();
  }
  template <class Rep, class Period>
  std::future_status wait_for(std::chrono::duration<Rep, Period> limit) const {
    return fut_.wait_for(limit);
  }
  // REQUIRES: wait_for returned ready.
  T get() {
    T v = fut_.get();
    thread_.join();
    return v;
  }

 private:
  std::future<T> fut_;
  std::thread thread_;
};

template <class F>
Async<std::invoke_result_t<F>> on_thread(F fn) {
  return Async<std::invoke_result_t<F>>(std::move(fn));
}

// A string of `n` bytes that varies with `seed` (so equal lengths differ).
inline std::string filler(std::size_t n, unsigned seed = 0) {
  std::string s(n, 'a');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

// A pipe for parent/child hand-offs, with bounded reads.
class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe");
  }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  bool send(char c = 'x') { return ::write(fds_[1], &c, 1) == 1; }
  // True if a byte arrived within `limit`.
  bool receive(std::chrono::milliseconds limit) {
    pollfd p{fds_[0], POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(limit.count()));
    if (rc != 1) return false;
    char c;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

// {"n": v.n + 1, ...rest}: the increment every counting test uses.
inline json::value increment(const json::value& v) {
  json::object o = v.as_object();
  o["n"] = o["n"].to_number<std::int64_t>() + 1;
  return o;
}

inline std::int64_t n_of(const json::value& v) { return v.at("n").to_number<std::int64_t>(); }

// A watch for one test: removed on scope exit, and by then every call of it
// has returned. remove_watch alone lets a call in progress finish later on
// the dispatcher thread, touching the test's locals after the test returned
// and keeping the dispatcher busy into the next test (issue 12). A function
// that blocks must poll stopping() and return once it is true; calls that
// begin after the destructor started do not run it at all.
class ScopedWatch {
 public:
  ScopedWatch(shmstate::Atom atom, std::string key, std::function<void(const shmstate::WatchEvent&)> fn)
      : atom_(std::move(atom)), key_(std::move(key)), state_(std::make_shared<State>()) {
    atom_.add_watch(key_, [state = state_, fn = std::move(fn)](const shmstate::WatchEvent& e) {
      state->running.fetch_add(1);
      // seq_cst with the destructor's stopping store / running load: either
      // it sees this call counted, or this call sees stopping and skips fn.
      if (!state->stopping.load()) fn(e);
      state->running.fetch_sub(1);
    });
  }
  ~ScopedWatch() {
    state_->stopping.store(true);
    atom_.remove_watch(key_);
    auto end = Clock::now() + std::chrono::seconds(30);
    while (state_->running.load() != 0) {
      if (Clock::now() > end) {
        std::fprintf(stderr, "watch '%s' still running 30 s after its test ended\n", key_.c_str());
        std::abort();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ScopedWatch(const ScopedWatch&) = delete;
  ScopedWatch& operator=(const ScopedWatch&) = delete;
  bool stopping() const { return state_->stopping.load(); }

 private:
  struct State {
    std::atomic<int> running{0};
    std::atomic<bool> stopping{false};
  };
  shmstate::Atom atom_;
  std::string key_;
  std::shared_ptr<State> state_;
};

}  // namespace atomtest
