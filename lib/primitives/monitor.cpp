// Monitor: a one-mode FifoLock plus a queue of waiters, each with its own
// futex word (lib/primitives/monitor.hpp has the layout and the slot states;
// include/shmstate/monitor.hpp the contract).
#include "primitives/monitor.hpp"

#include <algorithm>
#include <exception>
#include <charconv>
#include <new>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/error.hpp>

#include "platform/crash_point.hpp"
#include "platform/futex.hpp"
#include "platform/read_only.hpp"
#include "platform/system_error.hpp"
#include "primitives/condition.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

using detail::MonitorHandle;
using detail::MonitorState;
using detail::MonitorWaiter;
using std::chrono::steady_clock;
namespace json = boost::json;

namespace {

using platform::same_process;

std::int64_t slice_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kWaitSlice).count();
}

// The waiter queue's critical sections, under the queue's robust mutex.
// `wake` collects the slots woken; their futex words are woken after the
// mutex is released (a wake on a slot reused meanwhile is a harmless spurious
// wake-up: its new waiter re-checks its word).
class Queue {
 public:
  explicit Queue(MonitorHandle& h)
      : h_(h), s_(*h.s), w_(h.waiters), lock_(s_.mutex, h.where(), [this]() noexcept { recompute(); }) {}
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  MonitorState& s() noexcept { return s_; }
  MonitorWaiter& slot(std::uint32_t i) noexcept { return w_[i]; }
  std::vector<std::uint32_t>& wakes() noexcept { return wake_; }

  // Validates slot i's state word (untrusted: any process may have written it).
  std::uint32_t state_of(std::uint32_t i) const {
    std::uint32_t st = w_[i].state.load(std::memory_order_relaxed);
    if (st > detail::kWaiterWoken) corrupt("waiter slot " + std::to_string(i) + " has state " + std::to_string(st));
    return st;
  }

  std::optional<std::uint32_t> oldest_waiting() const {
    if (s_.waiting.load(std::memory_order_relaxed) == 0) return std::nullopt;
    std::optional<std::uint32_t> head;
    for (std::uint32_t i = 0; i < s_.waiter_count; ++i)
      if (state_of(i) == detail::kWaiterWaiting && (!head || w_[i].ticket < w_[*head].ticket)) head = i;
    return head;
  }

  std::optional<std::uint32_t> free_slot() const {
    for (std::uint32_t i = 0; i < s_.waiter_count; ++i)
      if (state_of(i) == detail::kWaiterFree) return i;
    return std::nullopt;
  }

  // Waiting -> Woken. The word is stored last, with release: the waiter
  // that reads it with acquire finds its slot already Woken.
  void wake(std::uint32_t i, bool pass_on) noexcept {
    auto& w = w_[i];
    w.pass_on = pass_on ? 1 : 0;
    w.since_ns = detail::steady_ns();
    w.state.store(detail::kWaiterWoken, std::memory_order_relaxed);
    dec(s_.waiting);
    s_.woken.fetch_add(1, std::memory_order_relaxed);
    w.word.store(detail::kWaiterWakeUp, std::memory_order_release);
    wake_.push_back(i);
  }

  void wake_oldest() {
    if (auto i = oldest_waiting()) wake(*i, true);
  }

  void free(std::uint32_t i) noexcept {
    std::uint32_t st = w_[i].state.load(std::memory_order_relaxed);
    if (st == detail::kWaiterWaiting) dec(s_.waiting);
    if (st == detail::kWaiterWoken) dec(s_.woken);
    w_[i].state.store(detail::kWaiterFree, std::memory_order_relaxed);
  }

  // Frees the slots of dead processes: Woken ones older than min_age_ns, and
  // with `sleeping` also Waiting ones (of any age). A dead Woken slot's single
  // wake goes to the oldest Waiting slot first, so a crash between the two
  // steps leaves the dead slot to be reclaimed again (a spare wake, never a
  // lost one). Returns true if any slot was freed. One /proc read per distinct
  // other process it looks at.
  bool reclaim(std::int64_t min_age_ns, bool sleeping) {
    auto self = platform::self_identity();
    platform::DeathCache deaths;
    bool freed = false;
    for (bool again = true; again;) {
      again = false;
      std::int64_t now = detail::steady_ns();
      for (std::uint32_t i = 0; i < s_.waiter_count; ++i) {
        std::uint32_t st = state_of(i);
        if (st == detail::kWaiterFree || (st == detail::kWaiterWaiting && !sleeping)) continue;
        auto& w = w_[i];
        if (same_process(w.owner, self)) continue;
        if (st == detail::kWaiterWoken && detail::age_ns(now, w.since_ns) < min_age_ns) continue;
        if (!deaths.dead(w.owner)) continue;
        if (st == detail::kWaiterWoken && w.pass_on != 0) {
          if (auto j = oldest_waiting()) {
            wake(*j, true);
            again = true;  // it may be dead too
          }
          SHMSTATE_CRASH_POINT("monitor.reclaim.after_pass_on");
        }
        free(i);
        freed = true;
      }
      if (min_age_ns != 0) again = false;  // a wake just passed on is not old yet
    }
    return freed;
  }

  [[noreturn]] void corrupt(const std::string& what) const {
    throw Error(ErrorCode::Corrupt, h_.where() + ": corrupt monitor: " + what);
  }

 private:
  static void dec(std::atomic<std::uint32_t>& n) noexcept {
    std::uint32_t v = n.load(std::memory_order_relaxed);
    if (v > 0) n.store(v - 1, std::memory_order_relaxed);  // only written under the mutex
  }

  // Repair after a death inside the mutex: recompute the counts from the
  // slots (each slot's state is one word, never torn).
  void recompute() noexcept {
    std::uint32_t waiting = 0, woken = 0;
    for (std::uint32_t i = 0; i < s_.waiter_count; ++i) {
      std::uint32_t st = w_[i].state.load(std::memory_order_relaxed);
      waiting += st == detail::kWaiterWaiting;
      woken += st == detail::kWaiterWoken;
    }
    s_.waiting.store(waiting, std::memory_order_relaxed);
    s_.woken.store(woken, std::memory_order_relaxed);
  }

  MonitorHandle& h_;
  MonitorState& s_;
  MonitorWaiter* w_;
  std::vector<std::uint32_t> wake_;
  platform::RobustLock lock_;
};

void wake_all(const MonitorHandle& h, const std::vector<std::uint32_t>& slots) noexcept {
  for (auto i : slots) platform::futex_wake(h.waiters[i].word, 1);
}

// Runs `f` under the queue's mutex, then wakes the waiters it woke.
template <class F>
auto with_queue(MonitorHandle& h, F&& f) {
  std::vector<std::uint32_t> wakes;
  struct Waker {
    const MonitorHandle& h;
    std::vector<std::uint32_t>& wakes;
    ~Waker() { wake_all(h, wakes); }
  } waker{h, wakes};
  Queue q(h);
  struct Collect {
    Queue& q;
    std::vector<std::uint32_t>& wakes;
    ~Collect() { wakes.swap(q.wakes()); }
  } collect{q, wakes};
  return f(q);
}

// A FifoLock call made for the monitor: a reentrant request is the only
// InvalidArgument a one-mode acquire raises; say it in the monitor's words.
template <class F>
auto monitor_acquire(const MonitorHandle& h, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::InvalidArgument) throw;
    throw Error(ErrorCode::InvalidArgument,
                h.where() + ": this thread holds the monitor already: Monitor is not reentrant (this would deadlock)");
  }
}

}  // namespace

// ---------------------------------------------------------------- Monitor

std::optional<Monitor::Guard> Monitor::wrap(std::optional<FifoLock::Guard> g) const {
  if (!g) return std::nullopt;
  return Guard(h_, std::move(*g));
}

Monitor::Guard Monitor::lock() {
  return monitor_acquire(*h_, [&] { return wrap(h_->lock.acquire()); });
}
std::optional<Monitor::Guard> Monitor::try_lock() {
  return monitor_acquire(*h_, [&] { return wrap(h_->lock.try_acquire()); });
}
std::optional<Monitor::Guard> Monitor::lock_for(std::chrono::nanoseconds timeout) {
  return lock_until(detail::deadline_after(timeout));
}
std::optional<Monitor::Guard> Monitor::lock_until(steady_clock::time_point deadline) {
  return monitor_acquire(*h_, [&] { return wrap(h_->lock.acquire_until(deadline)); });
}

bool Monitor::wait(Guard& guard) { return wait_until(guard, steady_clock::time_point::max()); }
bool Monitor::wait(Guard& guard, std::chrono::nanoseconds timeout) {
  return wait_until(guard, detail::deadline_after(timeout));
}

bool Monitor::wait_until(Guard& guard, steady_clock::time_point deadline) {
  return wait_impl(guard, deadline, nullptr);
}
bool Monitor::wait(Guard& guard, const Condition& till) {
  return wait_impl(guard, steady_clock::time_point::max(), &till);
}

bool Monitor::wait_impl(Guard& guard, steady_clock::time_point deadline, const Condition* till) {
  auto& h = *h_;
  if (!guard.held() || guard.h_ == nullptr || guard.h_->s != h.s)
    throw Error(ErrorCode::InvalidArgument, h.where() + ": wait() needs a guard that holds this monitor");
  auto self = platform::self_identity();

  // 1-3: wake the oldest, queue at the tail, release; the queue changes
  // while the lock is held, so no later locker can miss this waiter. The
  // woken waiter's futex word is woken after the release, so that it does not
  // wake only to queue for the lock.
  std::uint32_t index = 0;
  std::vector<std::uint32_t> wakes;
  {
    Queue q(h);
    q.reclaim(slice_ns(), false);  // wakes that went to the dead move on
    auto i = q.free_slot();
    if (!i && q.reclaim(0, true)) i = q.free_slot();
    if (!i) {
      wake_all(h, q.wakes());
      throw Error(ErrorCode::SegmentFull, h.where() + ": monitor has all " + std::to_string(q.s().waiter_count) +
                                              " waiter slots in use");
    }
    index = *i;
    q.wake_oldest();
    auto& w = q.slot(index);
    w.word.store(detail::kWaiterAsleep, std::memory_order_relaxed);
    w.pass_on = 0;
    w.tid = detail::current_tid();
    w.owner = self;
    w.ticket = ++q.s().next_ticket;
    w.since_ns = detail::steady_ns();
    w.state.store(detail::kWaiterWaiting, std::memory_order_relaxed);
    q.s().waiting.fetch_add(1, std::memory_order_relaxed);
    SHMSTATE_CRASH_POINT("monitor.wait.after_enqueue");
    wakes.swap(q.wakes());
  }
  guard.lock_->release();
  guard.lock_.reset();
  SHMSTATE_CRASH_POINT("monitor.wait.after_release");
  wake_all(h, wakes);

  // 4: sleep on this slot's word in bounded slices.
  MonitorWaiter& w = h.waiters[index];
  auto ours = [&](Queue& q) {
    if (q.state_of(index) == detail::kWaiterFree || !same_process(w.owner, self))
      q.corrupt("this process's waiter slot " + std::to_string(index) + " was taken away");
  };
  // With `till`, each slice sleeps on the slot's word and every word of
  // `till` at once (detail::wait_any: futex_waitv, no helper thread).
  const detail::ConditionNode* till_node = till != nullptr ? till->node().get() : nullptr;
  bool woken = false;
  std::exception_ptr error;  // a damaged signal in `till`: leave, re-hold, throw
  for (;;) {
    if (w.word.load(std::memory_order_acquire) == detail::kWaiterWakeUp) {
      woken = true;
      break;
    }
    auto now = steady_clock::now();
    bool ended = now >= deadline;
    bool slept_out = false;
    if (!ended) {
      auto slice_end = now + std::min<steady_clock::duration>(deadline - now, detail::kWaitSlice);
      if (till_node == nullptr) {
        slept_out = platform::futex_wait(w.word, detail::kWaiterAsleep, slice_end - now) ==
                    platform::FutexResult::TimedOut;
      } else {
        try {
          auto end = detail::wait_any([&] { return w.word.load(std::memory_order_acquire) == detail::kWaiterWakeUp; },
                                      [&](detail::WaitSet& ws) { ws.add(w.word, detail::kWaiterAsleep); },
                                      till_node, slice_end);
          ended = end == detail::WaitEnd::Till;
          slept_out = end == detail::WaitEnd::Timeout;
        } catch (...) {
          error = std::current_exception();
          ended = true;
        }
      }
    }
    if (ended) {
      // Leave the queue, unless a wake picked this slot just now: then the
      // wake is this waiter's (it returns true) and no wake is lost.
      woken = with_queue(h, [&](Queue& q) {
        ours(q);
        if (q.state_of(index) == detail::kWaiterWoken) return true;
        q.free(index);
        return false;
      });
      break;
    }
    if (slept_out && w.word.load(std::memory_order_acquire) != detail::kWaiterWakeUp &&
        h.s->woken.load(std::memory_order_relaxed) != 0) {
      // A slice without news while some wake is out: if it went to a waiter
      // that died before using it, pass it on.
      with_queue(h, [&](Queue& q) { return q.reclaim(slice_ns(), false); });
    }
  }

  // 5: hold the lock again, whatever happens. A woken slot stays Woken until
  // then, so that if this process dies first its wake is passed on.
  auto release_slot = [&] {
    if (woken)
      with_queue(h, [&](Queue& q) {
        ours(q);
        q.free(index);
        return 0;
      });
  };
  try {
    for (;;) {
      try {
        guard.lock_.emplace(h.lock.acquire());
        break;
      } catch (const Error& e) {
        // All lock slots in use by other lockers: they come and go; wait
        // for one (wait() always returns holding the lock).
        if (e.code() != ErrorCode::SegmentFull) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  } catch (...) {
    release_slot();
    throw;
  }
  SHMSTATE_CRASH_POINT("monitor.wait.after_reacquire");
  release_slot();
  if (error) std::rethrow_exception(error);
  return woken;
}

void Monitor::notify_one() {
  platform::require_writable_at(h_->s, h_->where(), "notify");
  if (h_->s->waiting.load(std::memory_order_acquire) == 0) return;
  with_queue(*h_, [](Queue& q) {
    q.wake_oldest();
    SHMSTATE_CRASH_POINT("monitor.notify.after_wake");
    return 0;
  });
}

void Monitor::notify_all() {
  platform::require_writable_at(h_->s, h_->where(), "notify");
  if (h_->s->waiting.load(std::memory_order_acquire) == 0) return;
  with_queue(*h_, [](Queue& q) {
    // Everyone gets a wake: one that reaches a dead waiter is not passed on.
    while (auto i = q.oldest_waiting()) q.wake(*i, false);
    return 0;
  });
}

std::uint32_t Monitor::capacity() const noexcept { return h_->s->waiter_count; }
const std::string& Monitor::name() const noexcept { return h_->object; }
const std::string& Monitor::segment_name() const noexcept { return h_->segment; }

// ---------------------------------------------------------------- Guard

Monitor::Guard::Guard(Guard&& o) noexcept : h_(std::move(o.h_)), lock_(std::move(o.lock_)) { o.lock_.reset(); }

Monitor::Guard& Monitor::Guard::operator=(Guard&& o) noexcept {
  if (this != &o) {
    try {
      release();
    } catch (...) {
    }
    h_ = std::move(o.h_);
    lock_ = std::move(o.lock_);
    o.lock_.reset();
  }
  return *this;
}

Monitor::Guard::~Guard() {
  try {
    release();
  } catch (...) {
    // Corrupt: nothing more can be done from a destructor.
  }
}

void Monitor::Guard::release() {
  if (!lock_) return;
  FifoLock::Guard g = std::move(*lock_);
  lock_.reset();
  // Every exit wakes the oldest waiter. It is picked while the lock is still
  // held (so the wake belongs to this unlock); its futex word is woken after
  // the lock is given up, so it does not wake only to queue for the lock.
  std::vector<std::uint32_t> wakes;
  if (h_->s->waiting.load(std::memory_order_acquire) != 0) {
    Queue q(*h_);
    q.wake_oldest();
    SHMSTATE_CRASH_POINT("monitor.unlock.after_wake");
    wakes.swap(q.wakes());
  }
  g.release();
  wake_all(*h_, wakes);
}

// ---------------------------------------------------------------- Segment

namespace detail {

void check_monitor_waiters(std::uint32_t waiters, const std::string& where) {
  if (waiters == 0 || waiters > kMonitorMaxWaiters)
    throw Error(ErrorCode::InvalidArgument, where + ": monitor waiters must be 1.." +
                                                std::to_string(kMonitorMaxWaiters) + ", not " +
                                                std::to_string(waiters));
}

namespace {

void init_monitor(std::byte* p, std::uint32_t waiters) {
  auto* s = new (p) MonitorState{};
  s->header = {static_cast<std::uint32_t>(Kind::Monitor), kMonitorLayoutVersion};
  s->waiter_count = waiters;
  s->mutex.init();
  init_fifo_lock(reinterpret_cast<std::byte*>(monitor_lock(s)), LockModes::exclusive(), waiters + 1, 0);
  auto* w = monitor_waiters(s);
  for (std::uint32_t i = 0; i < waiters; ++i) new (&w[i]) MonitorWaiter{};
}

}  // namespace

Monitor MonitorAccess::create(SegmentImpl& impl, std::string_view name, std::uint32_t waiters, CreateMode mode,
                              bool* created) {
  check_monitor_waiters(waiters, impl.where(name));
  auto slot = impl.find_or_create(
      name, Kind::Monitor, monitor_bytes(waiters), alignof(MonitorState),
      [&](std::byte* p) { init_monitor(p, waiters); }, mode);
  if (created != nullptr) *created = slot.created;
  return open(impl, slot, name);
}

Monitor MonitorAccess::open(SegmentImpl& impl, const ObjectSlot& slot, std::string_view name) {
  auto* s = impl.state_of<MonitorState>(slot, kMonitorLayoutVersion);
  std::string where = impl.where(name);
  std::uint64_t bytes = slot.info.size;
  if (s->waiter_count == 0 || s->waiter_count > kMonitorMaxWaiters)
    throw Error(ErrorCode::Corrupt, where + ": corrupt monitor: waiter count " + std::to_string(s->waiter_count));
  auto lock = fifo_lock_handle(monitor_lock(s), bytes - sizeof(MonitorState), impl.name, name);
  if (lock->modes.size() != 1)
    throw Error(ErrorCode::Corrupt, where + ": corrupt monitor: its lock has " + std::to_string(lock->modes.size()) +
                                        " modes, not 1");
  std::uint64_t need = sizeof(MonitorState) + fifo_lock_bytes(lock->s->slot_count) +
                       std::uint64_t{s->waiter_count} * sizeof(MonitorWaiter);
  if (need > bytes)
    throw Error(ErrorCode::Corrupt, where + ": corrupt monitor: " + std::to_string(s->waiter_count) +
                                        " waiters and " + std::to_string(lock->s->slot_count) +
                                        " lock slots do not fit its " + std::to_string(bytes) + " bytes");
  return Monitor(std::make_shared<MonitorHandle>(
      MonitorHandle{s, monitor_waiters(s), FifoLockAccess::wrap(std::move(lock)), impl.name, std::string(name)}));
}

// ---- the kind descriptor (kind.hpp) ----

namespace {

struct MonitorView {
  std::uint32_t capacity = 0;
  std::vector<FifoSlotView> holders;  // 0 or 1
  std::size_t queued = 0;             // waiting to lock
  std::uint32_t waiting = 0;          // asleep in wait()
  std::uint32_t woken = 0;            // woken, not yet holding again
};

MonitorView view_of(const Segment& seg, const ObjectInfo& o) {
  auto h = MonitorAccess::handle(seg.open_monitor(o.name));
  auto lock = fifo_lock_view(*FifoLockAccess::handle(h->lock));
  MonitorView v;
  v.capacity = h->s->waiter_count;
  v.holders = std::move(lock.holders);
  v.queued = lock.waiters.size();
  // Counted from the slots (read once each), not from the derived counts.
  for (std::uint32_t i = 0; i < v.capacity; ++i) {
    std::uint32_t st = h->waiters[i].state.load(std::memory_order_relaxed);
    v.waiting += st == kWaiterWaiting;
    v.woken += st == kWaiterWoken;
  }
  return v;
}

json::object monitor_state(const Segment& seg, const ObjectInfo& o) {
  auto v = view_of(seg, o);
  json::object out;
  out["waiters_capacity"] = v.capacity;
  if (v.holders.empty()) {
    out["holder"] = nullptr;
  } else {
    const auto& x = v.holders.front();
    out["holder"] = json::object{
        {"pid", x.owner.pid}, {"alive", liveness_json(x.alive)}, {"held_for", detail::held_for_json(x)}};
  }
  out["waiters"] = v.waiting;
  out["woken"] = v.woken;
  out["queued"] = v.queued;
  return out;
}

std::string monitor_text(const Segment& seg, const ObjectInfo& o, std::size_t width) {
  auto v = view_of(seg, o);
  std::string first;
  if (v.holders.empty()) {
    first = "free";
  } else {
    const auto& x = v.holders.front();
    first = "held by pid " + std::to_string(x.owner.pid) + " (" + liveness_text(x.alive) + ") " + held_for_text(x);
  }
  first += ", " + std::to_string(v.waiting) + " waiting, " + std::to_string(v.woken) + " woken, " +
           std::to_string(v.queued) + " queued to lock; capacity " + std::to_string(v.capacity) + " waiters";
  return inspect::excerpt(first, width);
}

std::uint32_t waiters_option(const CreateRequest& r, const std::string& where) {
  const std::string* text = r.option("waiters");
  if (text == nullptr) return 64;
  std::uint32_t n = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
  if (ec != std::errc{} || end != text->data() + text->size() || text->empty())
    throw Error(ErrorCode::InvalidArgument, where + ": --waiters takes a number, not '" + *text + "'");
  check_monitor_waiters(n, where);
  return n;
}

bool create_monitor(Segment& seg, std::string_view object, const CreateRequest& r) {
  std::string where = seg.impl().where(object);
  if (!r.initial.is_null()) throw Error(ErrorCode::InvalidArgument, where + ": a monitor takes no initial value");
  bool created = false;
  MonitorAccess::create(seg.impl(), object, waiters_option(r, where), CreateMode::OpenOrCreate, &created);
  return created;
}

// Persistent state: the capacity. Holders and waiters belong to processes
// and are not persisted (nor is the lock's token counter: a monitor does not
// hand out tokens).
json::value monitor_snapshot(const Segment& seg, const ObjectInfo& o) {
  auto h = MonitorAccess::handle(seg.open_monitor(o.name));
  return json::object{{"waiters", h->s->waiter_count}};
}

void monitor_restore(Segment& seg, std::string_view object, const json::value& saved) {
  const auto* o = saved.if_object();
  const json::value* n = o != nullptr ? o->if_contains("waiters") : nullptr;
  if (n == nullptr || o->size() != 1) throw wrong_state(seg, object, Kind::Monitor, "expected {\"waiters\": N}");
  std::uint64_t count = n->is_uint64() ? n->get_uint64() : n->is_int64() && n->get_int64() > 0 ? static_cast<std::uint64_t>(n->get_int64()) : 0;
  if (count == 0 || count > kMonitorMaxWaiters)
    throw wrong_state(seg, object, Kind::Monitor,
                      "waiters must be an integer 1.." + std::to_string(kMonitorMaxWaiters));
  MonitorAccess::create(seg.impl(), object, static_cast<std::uint32_t>(count), CreateMode::Exclusive, nullptr);
}

constexpr inspect::CreateOption kMonitorOptions[] = {
    {"waiters", "N", "monitor waiter slots (default 64; its lock gets N + 1)"},
};

}  // namespace

const KindDescriptor& monitor_kind() {
  static constexpr KindDescriptor d{.kind = Kind::Monitor,
                                    .name = "monitor",
                                    .create_options = kMonitorOptions,
                                    .create = &create_monitor,
                                    .state = &monitor_state,
                                    .text = &monitor_text,
                                    .snapshot = &monitor_snapshot,
                                    .restore = &monitor_restore};
  return d;
}

}  // namespace detail

Monitor Segment::monitor(std::string_view name, std::uint32_t waiters) {
  return detail::MonitorAccess::create(*impl_, name, waiters, CreateMode::OpenOrCreate, nullptr);
}

Monitor Segment::open_monitor(std::string_view name) const {
  return detail::MonitorAccess::open(*impl_, impl_->find_existing(name, Kind::Monitor), name);
}

}  // namespace shmstate
