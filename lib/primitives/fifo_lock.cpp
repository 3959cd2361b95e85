#include "primitives/fifo_lock.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <climits>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/error.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "platform/crash_point.hpp"
#include "platform/system_error.hpp"
#include "primitives/condition.hpp"
#include "primitives/json_exact.hpp"
#include "primitives/kind.hpp"
#include "platform/futex.hpp"
#include "platform/read_only.hpp"
#include "platform/spin.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

using detail::FifoLockHandle;
using detail::FifoLockSlot;
using detail::FifoLockState;
using std::chrono::steady_clock;
namespace json = boost::json;

namespace {

// dump peeks at these fields without the lock (fifo_lock_view), so their
// writers, which hold it, store them atomically too: a plain store beside
// an atomic load is a data race (ThreadSanitizer said so), even where x86-64
// makes it harmless.
template <class T>
void publish(T& field, T value) noexcept {
  std::atomic_ref<T>(field).store(value, std::memory_order_relaxed);
}
void publish(platform::ProcessIdentity& field, const platform::ProcessIdentity& value) noexcept {
  publish(field.pid, value.pid);
  publish(field.reserved, value.reserved);
  publish(field.start_time, value.start_time);
}

// dump reads without the lock (it must not wait on a stuck holder): each
// field is read once, atomically; fields may be from different instants.
template <class T>
T peek(const T& field) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_relaxed);
}

// Written by the fast path outside the mutex too, so always read-modify-write.
std::atomic_ref<std::uint64_t> next_token(detail::FifoLockState& s) noexcept {
  return std::atomic_ref<std::uint64_t>(s.next_token);
}
std::atomic_ref<std::uint32_t> died_modes(detail::FifoLockState& s) noexcept {
  return std::atomic_ref<std::uint32_t>(s.died_modes);
}

// The died_modes bits a grant of mode m reports and consumes: the modes it
// conflicts with, and its own when capacity-limited.
std::uint32_t told_of(const detail::FifoLockHandle& h, std::size_t m) noexcept {
  return h.conflicts[m] | (h.capacity[m] != 0 ? 1u << m : 0u);
}

}  // namespace

// ---------------------------------------------------------------- LockModes

namespace {

bool valid_mode_name(std::string_view n) {
  if (n.empty() || n.size() > LockModes::kMaxNameLength) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
  });
}

[[noreturn]] void bad_modes(const std::string& what) {
  throw Error(ErrorCode::InvalidArgument, "lock mode table: " + what);
}

}  // namespace

LockModes::LockModes(std::vector<LockMode> modes) : modes_(std::move(modes)) {
  if (modes_.empty() || modes_.size() > kMaxModes)
    bad_modes("needs 1.." + std::to_string(kMaxModes) + " modes, got " + std::to_string(modes_.size()));
  for (std::size_t i = 0; i < modes_.size(); ++i) {
    if (!valid_mode_name(modes_[i].name))
      bad_modes("mode name '" + modes_[i].name + "' is not 1..31 characters from [A-Za-z0-9_.-]");
    for (std::size_t j = 0; j < i; ++j)
      if (modes_[j].name == modes_[i].name) bad_modes("mode '" + modes_[i].name + "' appears twice");
  }
  // Conflicts: known names, symmetric; stored in table order without repeats
  // so that equal tables compare equal however they were written.
  std::vector<std::uint32_t> mask(modes_.size(), 0);
  for (std::size_t i = 0; i < modes_.size(); ++i)
    for (const auto& c : modes_[i].conflicts) {
      auto j = index_of(c);
      if (!j) bad_modes("mode '" + modes_[i].name + "' conflicts with unknown mode '" + c + "'");
      mask[i] |= 1u << *j;
    }
  for (std::size_t i = 0; i < modes_.size(); ++i)
    for (std::size_t j = 0; j < modes_.size(); ++j)
      if (((mask[i] >> j) & 1u) != ((mask[j] >> i) & 1u))
        bad_modes("conflicts must be symmetric: '" + modes_[i].name + "' and '" + modes_[j].name +
                  "' are listed as conflicting on one side only");
  for (std::size_t i = 0; i < modes_.size(); ++i) {
    modes_[i].conflicts.clear();
    for (std::size_t j = 0; j < modes_.size(); ++j)
      if ((mask[i] >> j) & 1u) modes_[i].conflicts.push_back(modes_[j].name);
  }
}

LockModes LockModes::exclusive() { return LockModes({{"exclusive", {"exclusive"}, 0}}); }

LockModes LockModes::read_write() {
  return LockModes({{"read", {"write"}, 0}, {"write", {"read", "write"}, 0}});
}

LockModes LockModes::semaphore(std::uint32_t n) {
  if (n == 0) bad_modes("a semaphore needs at least 1 permit");
  return LockModes({{"permit", {}, n}});
}

std::optional<std::size_t> LockModes::index_of(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < modes_.size(); ++i)
    if (modes_[i].name == name) return i;
  return std::nullopt;
}

std::string LockModes::to_string() const {
  std::string out;
  for (const auto& m : modes_) {
    if (!out.empty()) out += ", ";
    out += m.name + "(";
    std::string inner;
    if (!m.conflicts.empty()) {
      inner += "conflicts:";
      for (const auto& c : m.conflicts) inner += " " + c;
    }
    if (m.capacity != 0) inner += std::string(inner.empty() ? "" : "; ") + "capacity " + std::to_string(m.capacity);
    out += (inner.empty() ? "no conflicts" : inner) + ")";
  }
  return out;
}

boost::json::value LockModes::to_json() const {
  boost::json::array rows;
  for (const auto& m : modes_) {
    boost::json::array conflicts;
    for (const auto& c : m.conflicts) conflicts.emplace_back(c);
    rows.push_back(boost::json::object{{"name", m.name}, {"conflicts", conflicts}, {"capacity", m.capacity}});
  }
  return boost::json::object{{"modes", rows}};
}

LockModes LockModes::from_json(const boost::json::value& json) {
  const boost::json::array* rows = json.if_array();
  if (const auto* obj = json.if_object()) {
    const auto* m = obj->if_contains("modes");
    rows = m ? m->if_array() : nullptr;
  }
  if (rows == nullptr) bad_modes("expected {\"modes\": [...]} or an array of modes");
  std::vector<LockMode> modes;
  for (const auto& row : *rows) {
    const auto* o = row.if_object();
    if (o == nullptr) bad_modes("each mode must be an object {\"name\", \"conflicts\", \"capacity\"}");
    LockMode m;
    for (const auto& [key, value] : *o) {
      if (key == "name" && value.is_string()) {
        m.name = std::string(value.get_string());
      } else if (key == "conflicts" && value.is_array()) {
        for (const auto& c : value.get_array()) {
          if (!c.is_string()) bad_modes("conflicts must be mode names");
          m.conflicts.emplace_back(c.get_string());
        }
      } else if (key == "capacity" && (value.is_uint64() || value.is_int64())) {
        auto n = value.is_uint64() ? value.get_uint64() : static_cast<std::uint64_t>(value.get_int64());
        if (value.is_int64() && value.get_int64() < 0) bad_modes("capacity must be 0..2^32-1");
        if (n > UINT32_MAX) bad_modes("capacity must be 0..2^32-1");
        m.capacity = static_cast<std::uint32_t>(n);
      } else {
        bad_modes("unexpected field '" + std::string(key) + "' (or wrong type) in a mode");
      }
    }
    if (m.name.empty()) bad_modes("a mode has no name");
    modes.push_back(std::move(m));
  }
  return LockModes(std::move(modes));
}

// ---------------------------------------------------------------- helpers

namespace detail {

std::int32_t current_tid() noexcept {
  // gettid() is a syscall; a forked child's thread has a new tid, and its
  // process a new pid, hence the pid key (platform::current_pid: no syscall).
  thread_local pid_t pid = 0;
  thread_local std::int32_t tid = 0;
  if (pid_t p = platform::current_pid(); p != pid) {
    tid = static_cast<std::int32_t>(::gettid());
    pid = p;
  }
  return tid;
}

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady_clock::now().time_since_epoch()).count();
}


LockModes stored_modes(const FifoLockState& s, const std::string& where) {
  if (s.mode_count == 0 || s.mode_count > LockModes::kMaxModes)
    throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: mode count " + std::to_string(s.mode_count));
  std::vector<LockMode> modes;
  for (std::uint32_t i = 0; i < s.mode_count; ++i) {
    const auto& row = s.modes[i];
    const void* nul = std::memchr(row.name, '\0', sizeof row.name);
    if (nul == nullptr)
      throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: mode " + std::to_string(i) + " name has no NUL");
    LockMode m;
    m.name = std::string(row.name);
    m.capacity = row.capacity;
    if (row.conflicts >> s.mode_count)
      throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: mode " + std::to_string(i) +
                                          " conflicts with modes beyond the table");
    modes.push_back(std::move(m));
  }
  for (std::uint32_t i = 0; i < s.mode_count; ++i)
    for (std::uint32_t j = 0; j < s.mode_count; ++j)
      if ((s.modes[i].conflicts >> j) & 1u) modes[i].conflicts.push_back(modes[j].name);
  try {
    return LockModes(std::move(modes));
  } catch (const Error& e) {
    throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: stored " + e.what());
  }
}

}  // namespace detail

namespace {

using platform::same_process;

// The lock's critical sections. Everything here runs with the robust mutex
// held; `wake` collects the slots granted, woken after the mutex is released
// (a wake on a slot that was reused meanwhile is a harmless spurious wake-up).
class Locked {
 public:
  explicit Locked(FifoLockHandle& h)
      : h_(h), s_(*h.s), slots_(detail::fifo_slots(h.s)),
        lock_(s_.mutex, h.where(), [this]() noexcept { recompute(); }) {
    // Freezes the fast word for the whole critical section (fifo_lock.hpp).
    fast_ = s_.fast.word.fetch_or(detail::kFastSlow, std::memory_order_acq_rel) | detail::kFastSlow;
    if (fast_held() && detail::fast_mode(fast_) >= h_.modes.size())
      corrupt("the uncontended hold word 0x" + platform::hex(fast_) + " has mode " + std::to_string(detail::fast_mode(fast_)));
    if (fast_held() && detail::fast_owner(fast_).pid == 0)  // no process to outlive: it would hold forever
      corrupt("the uncontended hold word 0x" + platform::hex(fast_) + " names pid 0");
    if (fast_held()) stamp_fast();
    if (lock_.owner_died()) {
      // A process died inside a critical section: the derived counts were
      // recomputed; now drop whatever the dead left and move the queue on.
      reclaim(0);
      grant_head();
    }
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;
  // Still under the mutex (lock_ is destroyed after this body): an empty
  // table reopens the fast path, unless the section ended by an error (a
  // damaged slot, say): then every request keeps taking the mutex and
  // meets the damage, as before the fast path existed.
  ~Locked() {
    if (std::uncaught_exceptions() == exceptions_ && s_.waiting == 0 && slot_held_mask() == 0)
      s_.fast.word.fetch_and(~detail::kFastSlow, std::memory_order_release);
  }

  // The fast hold, as frozen by this critical section.
  bool fast_held() const noexcept { return (fast_ & detail::kFastHeld) != 0; }
  std::uint32_t fast_mode() const noexcept { return detail::fast_mode(fast_); }
  bool fast_is(std::uint64_t owner_word) const noexcept {
    return fast_held() && (fast_ & detail::kFastOwnerMask) == (owner_word & detail::kFastOwnerMask);
  }
  // The fast hold of `tid` of this process (reentrancy checks).
  bool fast_is_thread(const platform::ProcessIdentity& self, std::int32_t tid) const noexcept {
    return fast_is(detail::fast_word(self, 0)) && peek_tid() == tid;
  }
  std::uint64_t fast_word() const noexcept { return fast_; }
  // How long the fast hold has been known held (fifo_lock.hpp, the fast hold).
  std::int64_t fast_age_ns(std::int64_t now) const noexcept {
    return peek(s_.fast.seen_token) == peek(s_.fast.token) ? detail::age_ns(now, peek(s_.fast.since_ns)) : 0;
  }
  // Ends the fast hold (its holder's release, or its holder died).
  void drop_fast() noexcept {
    s_.fast.word.store(detail::kFastSlow, std::memory_order_relaxed);
    fast_ = detail::kFastSlow;
  }

  FifoLockState& s() noexcept { return s_; }
  FifoLockSlot& slot(std::uint32_t i) noexcept { return slots_[i]; }
  std::vector<std::uint32_t>& wake() noexcept { return wake_; }

  // Validates slot i's words (untrusted: any process may have written them).
  std::uint32_t state_of(std::uint32_t i) const {
    std::uint32_t st = slots_[i].state.load(std::memory_order_relaxed);
    if (st > detail::kSlotHeld) corrupt("slot " + std::to_string(i) + " has state " + std::to_string(st));
    if (st != detail::kSlotFree && slots_[i].mode >= h_.modes.size())
      corrupt("slot " + std::to_string(i) + " has mode " + std::to_string(slots_[i].mode));
    return st;
  }

  // Modes held, by slots and by the fast hold.
  std::uint32_t held_mask() const noexcept {
    return slot_held_mask() | (fast_held() ? 1u << fast_mode() : 0u);
  }
  std::uint32_t held_count(std::size_t m) const noexcept {
    return s_.held[m] + (fast_held() && fast_mode() == m ? 1u : 0u);
  }

  bool compatible(std::size_t m) const noexcept {
    if (h_.conflicts[m] & held_mask()) return false;
    return h_.capacity[m] == 0 || held_count(m) < h_.capacity[m];
  }

  std::optional<std::uint32_t> free_slot() const {
    for (std::uint32_t i = 0; i < s_.slot_count; ++i)
      if (state_of(i) == detail::kSlotFree) return i;
    return std::nullopt;
  }

  // Turns slot i (Waiting, or freshly filled) into a hold.
  void grant(std::uint32_t i, bool was_waiting) noexcept {
    auto& sl = slots_[i];
    std::uint32_t m = sl.mode;
    // A capacity-limited mode is told about a dead holder of its own mode too.
    // The slot keeps the bits it consumed: a grant given back unseen (a
    // stopped waiter) returns them, so the news reaches the next holder.
    std::uint32_t told = told_of(h_, m);
    sl.died = died_modes(s_).fetch_and(~told, std::memory_order_relaxed) & told;
    publish(sl.token, next_token(s_).fetch_add(1, std::memory_order_relaxed) + 1);
    publish(sl.since_ns, detail::steady_ns());
    sl.state.store(detail::kSlotHeld, std::memory_order_relaxed);
    ++s_.held[m];
    if (was_waiting) {
      --s_.waiting;
      // Release: the waiter reads token and died after seeing this word. A
      // waiter that has not announced its sleep (detail::kWordAsleep) is
      // still spinning or about to re-read the word: no FUTEX_WAKE for it
      // (the argument is at kWordAsleep, primitives/fifo_lock.hpp).
      std::uint32_t was = sl.word.exchange(detail::kWordGranted, std::memory_order_acq_rel);
      if (was & detail::kWordAsleep) wake_.push_back(i);
    }
  }

  // Grants from the head of the queue while the head is compatible.
  void grant_head() {
    while (s_.waiting != 0) {
      std::optional<std::uint32_t> head;
      for (std::uint32_t i = 0; i < s_.slot_count; ++i)
        if (state_of(i) == detail::kSlotWaiting && (!head || slots_[i].ticket < slots_[*head].ticket)) head = i;
      if (!head) {
        s_.waiting = 0;  // the count was stale (only after a repair of damage)
        return;
      }
      if (!compatible(slots_[*head].mode)) return;
      grant(*head, true);
    }
  }

  // Frees slot i, a hold or a queued request.
  void free(std::uint32_t i) noexcept {
    auto& sl = slots_[i];
    std::uint32_t st = sl.state.load(std::memory_order_relaxed);
    if (st == detail::kSlotHeld && s_.held[sl.mode] > 0) --s_.held[sl.mode];
    if (st == detail::kSlotWaiting && s_.waiting > 0) --s_.waiting;
    sl.state.store(detail::kSlotFree, std::memory_order_relaxed);
  }

  // Frees the slots of dead processes whose slot is older than min_age_ns
  // (0: all). A dead holder marks its mode in died_modes first, so a crash
  // between the two steps still tells the next holder. Returns true if any
  // slot was freed. Costs one /proc read per distinct other process.
  bool reclaim(std::int64_t min_age_ns) {
    auto self = platform::self_identity();
    std::int64_t now = detail::steady_ns();
    platform::DeathCache deaths;
    bool freed = false;
    if (fast_held() && !fast_is(detail::fast_word(self, 0)) &&
        (min_age_ns == 0 || fast_age_ns(now) >= min_age_ns) &&
        deaths.dead(detail::fast_owner(fast_), detail::kFastStartMask)) {
      died_modes(s_).fetch_or(1u << fast_mode(), std::memory_order_relaxed);
      drop_fast();
      freed = true;
      SHMSTATE_CRASH_POINT("fifo_lock.reclaim.after_drop_fast");
    }
    for (std::uint32_t i = 0; i < s_.slot_count; ++i) {
      std::uint32_t st = state_of(i);
      if (st == detail::kSlotFree) continue;
      auto& sl = slots_[i];
      if (same_process(sl.owner, self)) continue;
      if (min_age_ns != 0 && detail::age_ns(now, sl.since_ns) < min_age_ns) continue;
      if (!deaths.dead(sl.owner)) continue;
      if (st == detail::kSlotHeld) died_modes(s_).fetch_or(1u << sl.mode, std::memory_order_relaxed);
      free(i);
      freed = true;
      SHMSTATE_CRASH_POINT("fifo_lock.reclaim.after_free");
    }
    return freed;
  }

  [[noreturn]] void corrupt(const std::string& what) const {
    throw Error(ErrorCode::Corrupt, h_.where() + ": corrupt fifo lock: " + what);
  }

 private:
  std::uint32_t slot_held_mask() const noexcept {
    std::uint32_t mask = 0;
    for (std::size_t m = 0; m < h_.modes.size(); ++m)
      if (s_.held[m] != 0) mask |= 1u << m;
    return mask;
  }
  std::int32_t peek_tid() const noexcept { return peek(s_.fast.tid); }
  // The first critical section to find a fast hold starts its clock (the
  // fast path reads none): since_ns before seen_token, so a reader that finds
  // seen_token == token reads this stamp or a later one.
  void stamp_fast() noexcept {
    std::uint64_t token = peek(s_.fast.token);
    if (peek(s_.fast.seen_token) == token) return;
    publish(s_.fast.since_ns, detail::steady_ns());
    publish(s_.fast.seen_token, token);
  }

  // Repair after a death inside the mutex: recompute the derived counts from
  // the slots (each slot's state is one word, so it is never torn).
  void recompute() noexcept {
    std::uint32_t waiting = 0;
    std::uint32_t held[16] = {};
    for (std::uint32_t i = 0; i < s_.slot_count; ++i) {
      std::uint32_t st = slots_[i].state.load(std::memory_order_relaxed);
      if (slots_[i].mode >= h_.modes.size()) continue;  // reported as Corrupt by the next scan
      if (st == detail::kSlotWaiting) ++waiting;
      if (st == detail::kSlotHeld) ++held[slots_[i].mode];
    }
    s_.waiting = waiting;
    std::memcpy(s_.held, held, sizeof held);
  }

  FifoLockHandle& h_;
  FifoLockState& s_;
  FifoLockSlot* slots_;
  std::vector<std::uint32_t> wake_;
  std::uint64_t fast_ = detail::kFastSlow;
  int exceptions_ = std::uncaught_exceptions();
  platform::RobustLock lock_;
};

#if SHMSTATE_TEST_HOOKS
std::atomic<std::uint64_t> g_wakes{0};
#endif

void wake_all(const FifoLockHandle& h, const std::vector<std::uint32_t>& slots) noexcept {
#if SHMSTATE_TEST_HOOKS
  g_wakes.fetch_add(slots.size(), std::memory_order_relaxed);
#endif
  for (auto i : slots) platform::futex_wake(detail::fifo_slots(h.s)[i].word, 1);
}

// Spinning (platform/spin.hpp). A queued request that is the head of the
// queue first watches its own word for a few microseconds before it
// announces that it sleeps: with a short hold (the common case) the grant
// comes within that time, and the handover costs no FUTEX_WAIT, no
// FUTEX_WAKE (the granter sees no kWordAsleep) and no trip through the
// scheduler. Only the head spins (a request further back has at least a
// whole hold to wait for). The spinner reads its word and takes no lock:
// killed mid-spin, it is a queued request like one killed asleep (reclaimed
// by liveness).
constexpr std::chrono::nanoseconds kSpin{4'000};

// Spins until `word` leaves kWordWaiting, a stop is requested or kSpin
// passes; true if it left.
bool spin_for_grant(const std::atomic<std::uint32_t>& word, const std::stop_token* stop) noexcept {
  return platform::spin_until([&] { return word.load(std::memory_order_acquire) != detail::kWordWaiting; }, kSpin,
                              [&, first = true]() mutable {
                                if (first) SHMSTATE_CRASH_POINT("fifo_lock.wait.spinning");
                                first = false;
                                return stop == nullptr || !stop->stop_requested();
                              });
}

}  // namespace

// ---------------------------------------------------------------- FifoLock

FifoLock::Mode FifoLock::mode(std::string_view name) const {
  auto i = h_->modes.index_of(name);
  if (!i)
    throw Error(ErrorCode::InvalidArgument,
                h_->where() + ": the lock has no mode '" + std::string(name) + "' (modes: " + h_->modes.to_string() + ")");
  return Mode(*i);
}

const LockModes& FifoLock::modes() const noexcept { return h_->modes; }
std::uint32_t FifoLock::capacity() const noexcept { return h_->s->slot_count; }
const std::string& FifoLock::name() const noexcept { return h_->object; }
const std::string& FifoLock::segment_name() const noexcept { return h_->segment; }

std::size_t FifoLock::resolve(const ModeSelector& m) const {
  if (m.index_) {
    if (*m.index_ >= h_->modes.size())
      throw Error(ErrorCode::InvalidArgument, h_->where() + ": mode handle from another lock");
    return *m.index_;
  }
  return mode(m.name_).index();
}

namespace {
// Out of line and cold, so only_mode() stays a compare on the fast path.
[[noreturn, gnu::noinline, gnu::cold]] void throw_not_one_mode(const FifoLockHandle& h) {
  throw Error(ErrorCode::InvalidArgument, h.where() + ": the lock has " + std::to_string(h.modes.size()) +
                                              " modes; name one (" + h.modes.to_string() + ")");
}
}  // namespace

std::size_t FifoLock::only_mode() const {
  if (h_->modes.size() != 1) [[unlikely]]
    throw_not_one_mode(*h_);
  return 0;
}

FifoLock::Guard FifoLock::acquire(ModeSelector mode) {
  return std::move(*acquire_impl(resolve(mode), steady_clock::time_point::max(), nullptr, false));
}
std::optional<FifoLock::Guard> FifoLock::acquire(ModeSelector mode, std::stop_token stop) {
  return acquire_impl(resolve(mode), steady_clock::time_point::max(), &stop, false);
}
std::optional<FifoLock::Guard> FifoLock::acquire(ModeSelector mode, const Condition& till) {
  return acquire_impl(resolve(mode), steady_clock::time_point::max(), nullptr, false, &till);
}
std::optional<FifoLock::Guard> FifoLock::try_acquire(ModeSelector mode) {
  return acquire_impl(resolve(mode), steady_clock::time_point::min(), nullptr, true);
}
std::optional<FifoLock::Guard> FifoLock::acquire_for(ModeSelector mode, std::chrono::nanoseconds timeout,
                                                     std::stop_token stop) {
  return acquire_impl(resolve(mode), detail::deadline_after(timeout), &stop, false);
}
std::optional<FifoLock::Guard> FifoLock::acquire_until(ModeSelector mode, steady_clock::time_point deadline,
                                                       std::stop_token stop) {
  return acquire_impl(resolve(mode), deadline, &stop, false);
}
FifoLock::Guard FifoLock::acquire() {
  std::size_t m = only_mode();
  Guard g(nullptr, 0, 0, 0, false);  // one named result: returned in place
  if (!take_idle(m, g)) g = std::move(*acquire_impl(m, steady_clock::time_point::max(), nullptr, false));
  return g;
}
std::optional<FifoLock::Guard> FifoLock::acquire(std::stop_token stop) {
  return acquire(Mode(only_mode()), std::move(stop));
}
std::optional<FifoLock::Guard> FifoLock::try_acquire() { return try_acquire(Mode(only_mode())); }
std::optional<FifoLock::Guard> FifoLock::acquire_for(std::chrono::nanoseconds timeout, std::stop_token stop) {
  return acquire_for(Mode(only_mode()), timeout, std::move(stop));
}
std::optional<FifoLock::Guard> FifoLock::acquire_until(steady_clock::time_point deadline, std::stop_token stop) {
  return acquire_until(Mode(only_mode()), deadline, std::move(stop));
}

// An idle lock (fifo_lock.hpp, "The uncontended fast path") is taken with one
// swap. Idle means no holder at all, so this thread holds nothing either: no
// reentrancy check is needed.
bool FifoLock::take_idle(std::size_t m, Guard& out) const {
  auto& h = *h_;
  if (platform::is_read_only(h.s))
    platform::require_writable_at(h.s, h.where(), "acquire '" + h.modes.modes()[m].name + "'");
  auto& fast = h.s->fast;
  std::uint64_t mine = detail::fast_word(platform::self_identity(), static_cast<std::uint32_t>(m));
  std::uint64_t expected = 0;
  if (mine == 0 ||
      !fast.word.compare_exchange_strong(expected, mine, std::memory_order_acquire, std::memory_order_relaxed))
    return false;
  SHMSTATE_CRASH_POINT("fifo_lock.fast.after_claim");
  // A mode that conflicts with every mode leaves nobody to take a token
  // while it is held (a critical section grants nothing then), so a plain
  // increment is enough; otherwise compatible grants under the mutex may
  // take tokens meanwhile.
  std::uint64_t token;
  if (h.exclusive[m]) {
    token = next_token(*h.s).load(std::memory_order_relaxed) + 1;
    next_token(*h.s).store(token, std::memory_order_relaxed);
  } else {
    token = next_token(*h.s).fetch_add(1, std::memory_order_relaxed) + 1;
  }
  std::uint32_t told = told_of(h, m);
  std::uint32_t died = 0;
  if (died_modes(*h.s).load(std::memory_order_relaxed) & told)
    died = died_modes(*h.s).fetch_and(~told, std::memory_order_relaxed) & told;
  publish(fast.token, token);
  publish(fast.died, died);
  publish(fast.tid, detail::current_tid());
  // `out` is a fresh, empty guard: fill it in place (a move assignment
  // would first try to release it).
  out.handle_ = h_.get();
  out.slot_ = Guard::kFastSlot;
  out.mode_ = static_cast<std::uint32_t>(m);
  out.token_ = token;
  out.died_ = died != 0;
  return true;
}

std::optional<FifoLock::Guard> FifoLock::acquire_impl(std::size_t m, steady_clock::time_point deadline,
                                                      const std::stop_token* stop, bool try_only,
                                                      const Condition* till) {
  {
    Guard g(nullptr, 0, 0, 0, false);
    if (take_idle(m, g)) return g;
  }
  auto& h = *h_;
  auto self = platform::self_identity();
  std::int32_t tid = detail::current_tid();
  const std::string& mode_name = h.modes.modes()[m].name;
  std::uint32_t index = 0;
  bool head = false;  // queued with nobody ahead: may spin
  std::vector<std::uint32_t> wake;
  {
    Locked L(h);
    auto& s = L.s();
    auto finish = [&] { wake.swap(L.wake()); };

    // Reentrancy: this thread's own holds.
    std::uint32_t own = 0;  // mask of modes this thread holds
    if (L.held_mask() != 0)
      for (std::uint32_t i = 0; i < s.slot_count; ++i)
        if (L.state_of(i) == detail::kSlotHeld && L.slot(i).tid == tid && same_process(L.slot(i).owner, self))
          own |= 1u << L.slot(i).mode;
    const bool own_fast = L.fast_is_thread(self, tid);
    if (own_fast) own |= 1u << L.fast_mode();
    for (std::size_t j = 0; j < h.modes.size(); ++j)
      if (((own >> j) & 1u) && ((h.conflicts[m] >> j) & 1u))
        throw Error(ErrorCode::InvalidArgument, h.where() + ": this thread holds '" + h.modes.modes()[j].name +
                                                    "' and asks for conflicting '" + mode_name +
                                                    "': FifoLock is not reentrant (this would deadlock)");

    auto fill = [&](std::uint32_t i) {
      auto& sl = L.slot(i);
      sl.word.store(detail::kWordWaiting, std::memory_order_relaxed);
      publish(sl.mode, static_cast<std::uint32_t>(m));
      sl.tid = tid;
      publish(sl.owner, self);
      publish(sl.token, std::uint64_t{0});
      sl.died = 0;
      publish(sl.since_ns, detail::steady_ns());
    };
    auto take_slot = [&]() -> std::uint32_t {
      auto i = L.free_slot();
      if (!i && L.reclaim(0)) i = L.free_slot();  // the dead may be hogging slots
      if (!i)
        throw Error(ErrorCode::SegmentFull, h.where() + ": fifo lock has all " + std::to_string(s.slot_count) +
                                                " holder/waiter slots in use");
      return *i;
    };
    auto grant_now = [&]() -> std::optional<Guard> {
      std::uint32_t i = take_slot();
      fill(i);
      L.grant(i, false);
      SHMSTATE_CRASH_POINT("fifo_lock.acquire.after_grant");
      finish();
      return Guard(h_.get(), i, static_cast<std::uint32_t>(m), L.slot(i).token, L.slot(i).died != 0);
    };

    if (s.waiting == 0 && L.compatible(m)) {
      auto g = grant_now();
      wake_all(h, wake);
      return g;
    }
    {
      // About to queue (or to fail a try): holders that have held for over a
      // slice may be dead. try_acquire checks too, or a caller that only ever
      // tries would never see a dead holder's hold go away.
      if (L.reclaim(std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kWaitSlice).count())) {
        L.grant_head();
        if (s.waiting == 0 && L.compatible(m)) {
          auto g = grant_now();
          wake_all(h, wake);
          return g;
        }
      }
    }
    if (own != 0) {
      // A non-conflicting re-request that cannot be granted now would wait on
      // this thread's own hold if a request ahead conflicts with that hold, or
      // if the mode is at capacity with this thread's holds only.
      bool ahead_conflicts = false;
      for (std::uint32_t i = 0; i < s.slot_count; ++i)
        if (L.state_of(i) == detail::kSlotWaiting && (h.conflicts[L.slot(i).mode] & own)) ahead_conflicts = true;
      std::uint32_t own_of_m = own_fast && L.fast_mode() == m ? 1 : 0;
      for (std::uint32_t i = 0; i < s.slot_count; ++i)
        if (L.state_of(i) == detail::kSlotHeld && L.slot(i).mode == m && L.slot(i).tid == tid &&
            same_process(L.slot(i).owner, self))
          ++own_of_m;
      bool at_own_capacity =
          h.capacity[m] != 0 && L.held_count(m) >= h.capacity[m] && own_of_m == L.held_count(m);
      if (ahead_conflicts || at_own_capacity)
        throw Error(ErrorCode::InvalidArgument, h.where() + ": this thread holds the lock and its request for '" +
                                                    mode_name + "' would wait on its own hold (not reentrant)");
    }
    if (try_only) {
      finish();
      wake_all(h, wake);
      return std::nullopt;
    }
    index = take_slot();
    fill(index);
    head = s.waiting == 0;
    publish(s.next_ticket, s.next_ticket + 1);
    publish(L.slot(index).ticket, s.next_ticket);
    L.slot(index).state.store(detail::kSlotWaiting, std::memory_order_relaxed);
    ++s.waiting;
    SHMSTATE_CRASH_POINT("fifo_lock.acquire.after_enqueue");
    finish();
  }
  wake_all(h, wake);
  wake.clear();

  FifoLockSlot& sl = detail::fifo_slots(h.s)[index];
  auto granted = [&]() { return Guard(h_.get(), index, static_cast<std::uint32_t>(m), sl.token, sl.died != 0); };

  // The stop callback runs in the requesting thread; it only pokes this
  // slot's word so that the sleeping waiter re-checks. It is destroyed before
  // the slot can be given away.
  std::optional<std::stop_callback<std::function<void()>>> on_stop;
  if (stop != nullptr && stop->stop_possible())
    on_stop.emplace(*stop, std::function<void()>([&sl] {
                      // Waiting (announced asleep or not) -> Poked, keeping
                      // the announcement; a granted word stays granted.
                      std::uint32_t expected = sl.word.load(std::memory_order_relaxed);
                      while ((expected & ~detail::kWordAsleep) == detail::kWordWaiting &&
                             !sl.word.compare_exchange_weak(expected,
                                                            detail::kWordPoked | (expected & detail::kWordAsleep))) {
                      }
                      platform::futex_wake(sl.word, 1);
                    }));

  // Each pass sleeps at most one slice (detail::wait_any: the slot's word,
  // the stop token and every word of `till` at once); a slice without news
  // checks that the holders and the waiters ahead are alive.
  const detail::ConditionNode* till_node = till != nullptr ? till->node().get() : nullptr;
  if (head && platform::spinning_helps()) spin_for_grant(sl.word, stop);
  for (;;) {
    std::uint32_t w = sl.word.load(std::memory_order_acquire);
    bool stopped = stop != nullptr && stop->stop_requested();
    if (!stopped && w == detail::kWordGranted) return granted();
    if (!stopped && (w & detail::kWordAsleep) == 0) {
      // Announce the sleep before sleeping (kWordAsleep, primitives/
      // fifo_lock.hpp): from here on a grant wakes this word. A failed swap
      // means the word changed (granted or poked): look again.
      if (!sl.word.compare_exchange_strong(w, w | detail::kWordAsleep, std::memory_order_acq_rel,
                                           std::memory_order_acquire))
        continue;
      w |= detail::kWordAsleep;
      SHMSTATE_CRASH_POINT("fifo_lock.wait.after_announce");
    }
    auto now = steady_clock::now();
    // A damaged segment signal in `till` ends the wait like a stop: the
    // request leaves the queue (giving back a grant), then the error is thrown.
    std::exception_ptr error;
    if (!stopped && now < deadline) {
      auto slice_end = now + std::min<steady_clock::duration>(deadline - now, detail::kWaitSlice);
      detail::WaitEnd end = detail::WaitEnd::Till;
      try {
        end = detail::wait_any(
            [&] { return sl.word.load(std::memory_order_acquire) != w || (stop != nullptr && stop->stop_requested()); },
            [&](detail::WaitSet& ws) { ws.add(sl.word, w); }, till_node, slice_end);
      } catch (...) {
        error = std::current_exception();
      }
      if (!error && end == detail::WaitEnd::Done) continue;
      if (!error && end == detail::WaitEnd::Timeout) {
        if (sl.word.load(std::memory_order_acquire) != detail::kWordGranted) {
          {
            Locked L(h);
            if (L.reclaim(0)) L.grant_head();
            wake.swap(L.wake());
          }
          wake_all(h, wake);
          wake.clear();
        }
        continue;
      }
      // `till` is set (or broken): leave, like at a deadline.
    }
    on_stop.reset();
    bool give_back = stopped || error != nullptr;
    std::optional<Guard> result;
    {
      Locked L(h);
      std::uint32_t st = L.state_of(index);
      if (st == detail::kSlotFree || !same_process(sl.owner, self))
        L.corrupt("this process's queued request in slot " + std::to_string(index) + " was taken away");
      if (st == detail::kSlotHeld && !give_back) {
        result = granted();  // granted just as the deadline passed or `till` fired: keep it
      } else {
        // A stopped request never keeps a grant; a grant it gives back
        // unseen returns the dead-holder news it consumed.
        if (st == detail::kSlotHeld)
          died_modes(L.s()).fetch_or(sl.died & ((1u << h.modes.size()) - 1), std::memory_order_relaxed);
        L.free(index);
        L.grant_head();
      }
      wake.swap(L.wake());
    }
    wake_all(h, wake);
    if (error) std::rethrow_exception(error);
    return result;
  }
}

// ---------------------------------------------------------------- Guard

FifoLock::Guard::Guard(Guard&& o) noexcept
    : handle_(o.handle_), slot_(o.slot_), mode_(o.mode_), token_(o.token_), died_(o.died_) {
  o.handle_ = nullptr;
}

FifoLock::Guard& FifoLock::Guard::operator=(Guard&& o) noexcept {
  if (this != &o) {
    try {
      release();
    } catch (...) {
    }
    handle_ = o.handle_;
    o.handle_ = nullptr;
    slot_ = o.slot_;
    mode_ = o.mode_;
    token_ = o.token_;
    died_ = o.died_;
  }
  return *this;
}

FifoLock::Guard::~Guard() {
  try {
    release();
  } catch (...) {
    // Corrupt: the hold is not ours any more; nothing to give back.
  }
}

const std::string& FifoLock::Guard::mode() const {
  if (!handle_) throw Error(ErrorCode::InvalidArgument, "FifoLock::Guard::mode: released guard");
  return handle_->modes.modes()[mode_].name;
}

namespace {

// Guard::release's paths under the mutex, out of line: the uncontended
// release stays a few instructions.
[[gnu::noinline]] void release_fast_locked(FifoLockHandle& h, std::uint64_t mine, std::uint32_t mode,
                                           std::uint64_t token) {
  std::vector<std::uint32_t> wake;
  {
    Locked L(h);
    if (!L.fast_is(mine) || detail::fast_mode(L.fast_word()) != mode || peek(h.s->fast.token) != token)
      L.corrupt("the uncontended hold with token " + std::to_string(token) + " is no longer there");
    L.drop_fast();
    SHMSTATE_CRASH_POINT("fifo_lock.fast_release.after_drop");
    L.grant_head();
    SHMSTATE_CRASH_POINT("fifo_lock.fast_release.after_grant");
    wake.swap(L.wake());
  }
  wake_all(h, wake);
}

[[gnu::noinline]] void release_slot(FifoLockHandle& h, std::uint32_t slot, std::uint64_t token) {
  std::vector<std::uint32_t> wake;
  {
    Locked L(h);
    auto& sl = L.slot(slot);
    if (L.state_of(slot) != detail::kSlotHeld || sl.token != token ||
        !same_process(sl.owner, platform::self_identity()))
      L.corrupt("the hold with token " + std::to_string(token) + " in slot " + std::to_string(slot) +
                " is no longer there");
    L.free(slot);
    SHMSTATE_CRASH_POINT("fifo_lock.release.after_free");
    L.grant_head();
    SHMSTATE_CRASH_POINT("fifo_lock.release.after_grant");
    wake.swap(L.wake());
  }
  wake_all(h, wake);
}

}  // namespace

void FifoLock::Guard::release() {
  if (!handle_) return;
  auto* h = handle_;
  handle_ = nullptr;
  if (slot_ != kFastSlot) return release_slot(*h, slot_, token_);
  auto& fast = h->s->fast;
  std::uint64_t mine = detail::fast_word(platform::self_identity(), mode_);
  publish(fast.tid, std::int32_t{0});
  std::uint64_t expected = mine;
  if (fast.word.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed)) return;
  // A critical section froze the word (a request is queued, or one is
  // running): release under the mutex, which grants the queue.
  release_fast_locked(*h, mine, mode_, token_);
}

// ---------------------------------------------------------------- Segment

namespace detail {

namespace {

// The interned handles (fifo_lock_handle). Never destroyed, like the
// segment mappings; a handle differing in anything (the object was replaced
// by another lock at the same place) is a new entry.
std::mutex& intern_mutex() {
  static std::mutex* m = [] {
    auto* mu = new std::mutex();
    // Held across fork(): a child must not inherit it locked by a thread that
    // does not exist in the child.
    ::pthread_atfork([] { intern_mutex().lock(); }, [] { intern_mutex().unlock(); },
                     [] { intern_mutex().unlock(); });
    return mu;
  }();
  return *m;
}

std::shared_ptr<FifoLockHandle> intern(std::shared_ptr<FifoLockHandle> h) {
  static auto* table = new std::multimap<const FifoLockState*, std::shared_ptr<FifoLockHandle>>();
  auto same = [&](const FifoLockHandle& a) {
    return a.segment == h->segment && a.object == h->object && a.modes == h->modes &&
           std::memcmp(a.conflicts, h->conflicts, sizeof a.conflicts) == 0 &&
           std::memcmp(a.capacity, h->capacity, sizeof a.capacity) == 0;
  };
  std::lock_guard guard(intern_mutex());
  auto [first, last] = table->equal_range(h->s);
  for (auto it = first; it != last; ++it)
    if (same(*it->second)) return it->second;
  table->emplace(h->s, h);
  return h;
}

}  // namespace

void init_fifo_lock(std::byte* p, const LockModes& modes, std::uint32_t slots, std::uint64_t next_token) {
  auto* s = new (p) FifoLockState;
  s->header = {static_cast<std::uint32_t>(Kind::FifoLock), kFifoLockLayoutVersion};
  s->mode_count = static_cast<std::uint32_t>(modes.size());
  s->slot_count = slots;
  publish(s->next_token, next_token);
  s->mutex.init();
  for (std::size_t i = 0; i < modes.size(); ++i) {
    const auto& m = modes.modes()[i];
    std::memcpy(s->modes[i].name, m.name.data(), m.name.size());
    for (const auto& c : m.conflicts) s->modes[i].conflicts |= 1u << *modes.index_of(c);
    s->modes[i].capacity = m.capacity;
  }
  auto* sl = fifo_slots(s);
  for (std::uint32_t i = 0; i < slots; ++i) new (&sl[i]) FifoLockSlot{};
}

std::shared_ptr<FifoLockHandle> fifo_lock_handle(FifoLockState* s, std::uint64_t bytes, const std::string& segment,
                                                 std::string_view object) {
  std::string where = platform::where(segment, object);
  if (bytes < sizeof(FifoLockState) || s->header.kind != static_cast<std::uint32_t>(Kind::FifoLock) ||
      s->header.layout_version != kFifoLockLayoutVersion)
    throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: bad header (kind " +
                                        std::to_string(s->header.kind) + ", layout version " +
                                        std::to_string(s->header.layout_version) + ")");
  if (s->slot_count == 0 || s->slot_count > kFifoLockMaxSlots || bytes < fifo_lock_bytes(s->slot_count))
    throw Error(ErrorCode::Corrupt, where + ": corrupt fifo lock: slot count " + std::to_string(s->slot_count) +
                                        " does not fit its " + std::to_string(bytes) + " bytes");
  auto h = std::make_shared<FifoLockHandle>(
      FifoLockHandle{s, segment, std::string(object), stored_modes(*s, where), {}, {}, {}, where});
  const std::uint32_t all = s->mode_count >= 32 ? ~0u : (1u << s->mode_count) - 1;
  for (std::uint32_t i = 0; i < s->mode_count; ++i) {
    h->conflicts[i] = s->modes[i].conflicts;
    h->capacity[i] = s->modes[i].capacity;
    h->exclusive[i] = (h->conflicts[i] & all) == all;
  }
  return intern(std::move(h));
}

void check_fifo_lock_slots(std::uint32_t slots, const std::string& where) {
  if (slots == 0 || slots > kFifoLockMaxSlots)
    throw Error(ErrorCode::InvalidArgument, where + ": fifo lock slots must be 1.." +
                                                std::to_string(kFifoLockMaxSlots) + ", not " + std::to_string(slots));
}

FifoLock FifoLockAccess::create(SegmentImpl& impl, std::string_view name, const LockModes& modes,
                                std::uint32_t slots, CreateMode mode, bool* created, std::uint64_t next_token) {
  check_fifo_lock_slots(slots, impl.where(name));
  auto slot = impl.find_or_create(
      name, Kind::FifoLock, fifo_lock_bytes(slots), alignof(FifoLockState),
      [&](std::byte* p) { init_fifo_lock(p, modes, slots, next_token); }, mode);
  if (created != nullptr) *created = slot.created;
  auto h = open(impl, slot, name);
  if (!(h.modes() == modes))
    throw Error(ErrorCode::KindMismatch, impl.where(name) + ": fifo lock exists with modes [" +
                                             h.modes().to_string() + "], not the requested [" + modes.to_string() +
                                             "]");
  return h;
}

FifoLock FifoLockAccess::open(SegmentImpl& impl, const ObjectSlot& slot, std::string_view name) {
  auto* s = impl.state_of<FifoLockState>(slot, kFifoLockLayoutVersion);
  return FifoLock(fifo_lock_handle(s, slot.info.size, impl.name, name));
}

// ---- what dump shows (also of the lock inside a Monitor) ----

FifoLockView fifo_lock_view(const FifoLockHandle& h) {
  FifoLockView v;
  auto* st = h.s;
  v.next_token = peek(st->next_token) + 1;
  auto* sl = fifo_slots(st);
  std::int64_t now = steady_ns();
  if (std::uint64_t w = st->fast.word.load(std::memory_order_acquire); w & kFastHeld) {
    FifoSlotView x;
    x.owner = fast_owner(w);
    x.alive = platform::liveness(x.owner, kFastStartMask);
    std::uint32_t m = fast_mode(w);
    x.mode = m < h.modes.size() ? h.modes.modes()[m].name : "?" + std::to_string(m);
    x.token = peek(st->fast.token);
    x.ticket = 0;
    if (peek(st->fast.seen_token) == x.token) {  // else nobody has found it held: no time kept
      x.seconds = static_cast<double>(detail::age_ns(now, peek(st->fast.since_ns))) / 1e9;
      x.at_least = true;
    }
    v.holders.push_back(std::move(x));
  }
  for (std::uint32_t i = 0; i < st->slot_count; ++i) {
    std::uint32_t state = sl[i].state.load(std::memory_order_acquire);
    if (state != kSlotWaiting && state != kSlotHeld) continue;
    FifoSlotView x;
    x.owner.pid = peek(sl[i].owner.pid);
    x.owner.reserved = 0;
    x.owner.start_time = peek(sl[i].owner.start_time);
    x.alive = platform::liveness(x.owner);
    std::uint32_t m = peek(sl[i].mode);
    x.mode = m < h.modes.size() ? h.modes.modes()[m].name : "?" + std::to_string(m);
    x.token = peek(sl[i].token);
    x.ticket = peek(sl[i].ticket);
    x.seconds = static_cast<double>(detail::age_ns(now, peek(sl[i].since_ns))) / 1e9;
    (state == kSlotHeld ? v.holders : v.waiters).push_back(std::move(x));
  }
  std::sort(v.holders.begin(), v.holders.end(),
            [](const FifoSlotView& a, const FifoSlotView& b) { return a.token < b.token; });
  std::sort(v.waiters.begin(), v.waiters.end(),
            [](const FifoSlotView& a, const FifoSlotView& b) { return a.ticket < b.ticket; });
  return v;
}

const char* liveness_text(platform::Liveness l) noexcept {
  return l == platform::Liveness::Alive ? "alive" : l == platform::Liveness::Dead ? "dead" : "unknown";
}

boost::json::value liveness_json(platform::Liveness l) {
  if (l == platform::Liveness::Unknown) return nullptr;
  return l == platform::Liveness::Alive;
}

double rounded_seconds(double seconds) noexcept { return std::round(seconds * 1000.0) / 1000.0; }

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fs", s);
  return buf;
}

json::value held_for_json(const FifoSlotView& x) {
  if (!x.seconds) return nullptr;
  return rounded_seconds(*x.seconds);
}

std::string held_for_text(const FifoSlotView& x) {
  if (!x.seconds) return "(uncontended: not timed)";
  return std::string("for ") + (x.at_least ? ">= " : "") + seconds_text(*x.seconds);
}

// ---- the kind descriptor (kind.hpp) ----

namespace {

json::object fifo_lock_state(const Segment& seg, const ObjectInfo& o) {
  auto h = FifoLockAccess::handle(seg.open_fifo_lock(o.name));
  auto v = fifo_lock_view(*h);
  json::object out;
  out["modes"] = h->modes.to_json().as_object()["modes"];
  out["slots"] = h->s->slot_count;
  out["next_token"] = v.next_token;
  json::array holders, waiters;
  for (const auto& x : v.holders)
    holders.push_back(json::object{{"pid", x.owner.pid},
                                   {"alive", liveness_json(x.alive)},
                                   {"mode", x.mode},
                                   {"token", x.token},
                                   {"held_for", held_for_json(x)}});
  for (const auto& x : v.waiters)
    waiters.push_back(json::object{{"pid", x.owner.pid},
                                   {"alive", liveness_json(x.alive)},
                                   {"mode", x.mode},
                                   {"waiting_for", rounded_seconds(x.seconds.value_or(0))}});
  out["holders"] = std::move(holders);
  out["waiters"] = std::move(waiters);
  return out;
}

std::string fifo_lock_text(const Segment& seg, const ObjectInfo& o, std::size_t width) {
  auto h = FifoLockAccess::handle(seg.open_fifo_lock(o.name));
  auto v = fifo_lock_view(*h);
  std::string first = v.holders.empty() ? "free" : std::to_string(v.holders.size()) + " held";
  first += ", " + std::to_string(v.waiters.size()) + " waiting, next token " + std::to_string(v.next_token) +
           "; modes " + h->modes.to_string();
  std::string out = inspect::excerpt(first, width);
  for (const auto& x : v.holders)
    out += "\nholder pid " + std::to_string(x.owner.pid) + " (" + liveness_text(x.alive) + ") " + x.mode +
           " token " + std::to_string(x.token) + " held " + held_for_text(x);
  for (const auto& x : v.waiters)
    out += "\nwaiter pid " + std::to_string(x.owner.pid) + " (" + liveness_text(x.alive) + ") " + x.mode +
           " waiting for " + seconds_text(x.seconds.value_or(0));
  return out;
}

std::uint32_t slots_option(const CreateRequest& r, const std::string& where) {
  const std::string* text = r.option("slots");
  if (text == nullptr) return 64;
  std::uint32_t n = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
  if (ec != std::errc{} || end != text->data() + text->size())
    throw Error(ErrorCode::InvalidArgument, where + ": --slots takes a number, not '" + *text + "'");
  check_fifo_lock_slots(n, where);
  return n;
}

bool create_fifo_lock(Segment& seg, std::string_view object, const CreateRequest& r) {
  std::string where = seg.impl().where(object);
  if (!r.initial.is_null())
    throw Error(ErrorCode::InvalidArgument, where + ": a fifo_lock takes no initial value (give --modes)");
  const std::string* modes = r.option("modes");
  LockModes table = modes != nullptr ? parse_lock_modes(*modes, where) : LockModes::exclusive();
  bool created = false;
  FifoLockAccess::create(seg.impl(), object, table, slots_option(r, where), CreateMode::OpenOrCreate, &created, 0);
  return created;
}

// Persistent state: the mode table, the slot count and the token counter.
// Holds and queued requests belong to processes and are not persisted.
json::value fifo_lock_snapshot(const Segment& seg, const ObjectInfo& o) {
  auto h = FifoLockAccess::handle(seg.open_fifo_lock(o.name));
  json::object out;
  out["modes"] = h->modes.to_json().as_object()["modes"];
  out["slots"] = h->s->slot_count;
  // The last token issued: the restored lock's grants all come after it.
  out["last_token"] = peek(h->s->next_token);
  return out;
}

void fifo_lock_restore(Segment& seg, std::string_view object, const json::value& saved) {
  std::string where = seg.impl().where(object);
  auto bad = [&](const std::string& what) -> Error {
    return Error(ErrorCode::Corrupt, where + ": saved fifo lock: " + what);
  };
  const auto* o = saved.if_object();
  if (o == nullptr) throw bad("not a JSON object");
  const auto* modes = o->if_contains("modes");
  const auto* slots = o->if_contains("slots");
  const auto* last = o->if_contains("last_token");
  if (modes == nullptr || slots == nullptr || last == nullptr) throw bad("needs modes, slots and last_token");
  auto as_u64 = [&](const json::value& v, const char* name) -> std::uint64_t {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
    throw bad(std::string(name) + " is not a non-negative integer");
  };
  std::uint64_t n = as_u64(*slots, "slots");
  if (n == 0 || n > kFifoLockMaxSlots) throw bad("slots " + std::to_string(n) + " out of range");
  std::optional<LockModes> table;
  try {
    table = LockModes::from_json(*modes);
  } catch (const Error& e) {
    throw bad(e.what());
  }
  FifoLockAccess::create(seg.impl(), object, *table, static_cast<std::uint32_t>(n), CreateMode::Exclusive, nullptr,
                         as_u64(*last, "last_token"));
}

constexpr inspect::CreateOption kFifoLockOptions[] = {
    {"modes", "MODES", "fifo_lock modes: exclusive (default), rw, semaphore:N, or a JSON mode table"},
    {"slots", "N", "fifo_lock holder+waiter slots (default 64)"},
};

}  // namespace

LockModes parse_lock_modes(std::string_view text, const std::string& where) {
  try {
    if (text == "exclusive") return LockModes::exclusive();
    if (text == "rw" || text == "read_write") return LockModes::read_write();
    if (text.starts_with("semaphore:")) {
      auto digits = text.substr(10);
      std::uint32_t n = 0;
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
      if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty())
        throw Error(ErrorCode::InvalidArgument, "semaphore:N takes a number of permits, not '" +
                                                    std::string(digits) + "'");
      return LockModes::semaphore(n);
    }
    if (!text.empty() && (text.front() == '{' || text.front() == '['))
      {
      boost::system::error_code ec;
      auto v = parse_json_exact(text, ec);
      if (ec) throw Error(ErrorCode::InvalidArgument, "invalid JSON: " + ec.message());
      return LockModes::from_json(v);
    }
    throw Error(ErrorCode::InvalidArgument, "expected exclusive, rw, semaphore:N or a JSON mode table, not '" +
                                                inspect::excerpt(text) + "'");
  } catch (const Error& e) {
    throw Error(e.code(), where + ": --modes: " + e.what());
  }
}

const KindDescriptor& fifo_lock_kind() {
  static constexpr KindDescriptor d{.kind = Kind::FifoLock,
                                    .name = "fifo_lock",
                                    .create_options = kFifoLockOptions,
                                    .create = &create_fifo_lock,
                                    .state = &fifo_lock_state,
                                    .text = &fifo_lock_text,
                                    .snapshot = &fifo_lock_snapshot,
                                    .restore = &fifo_lock_restore};
  return d;
}

}  // namespace detail

#if SHMSTATE_TEST_HOOKS
std::uint64_t testing::fifo_lock_wake_count() noexcept { return g_wakes.load(std::memory_order_relaxed); }
#endif

FifoLock Segment::fifo_lock(std::string_view name, const LockModes& modes, std::uint32_t slots) {
  return detail::FifoLockAccess::create(*impl_, name, modes, slots, CreateMode::OpenOrCreate, nullptr, 0);
}

FifoLock Segment::open_fifo_lock(std::string_view name) const {
  return detail::FifoLockAccess::open(*impl_, impl_->find_existing(name, Kind::FifoLock), name);
}

}  // namespace shmstate
