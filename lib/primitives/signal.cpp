// Segment signals: the shared state, the handle's node, and the kind
// descriptor (kind.hpp).
#include <shmstate/signal.hpp>

#include <unistd.h>

#include <cstddef>
#include <ctime>
#include <new>

#include <boost/json.hpp>

#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "platform/system_error.hpp"
#include "primitives/condition.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {
namespace detail {

// Shared state of a Signal, layout version 2.
//   word        the one-shot word (condition.hpp, one_shot): bits kFired,
//               kSleeper, kWatch; any other bit set is Corrupt
//   fired_pid   who fired it (0: not yet recorded, or the firer died first)
//   fired_at_ns when, in system_clock nanoseconds since the epoch
// The word is the truth; pid and time are recorded by the go() that set
// kFired, after setting it (so a firer killed in between leaves "fired, by
// unknown", never "pending but recorded").
struct alignas(64) SignalState {
  ObjectHeader header;
  std::atomic<std::uint32_t> word;
  std::atomic<std::int32_t> fired_pid;
  std::atomic<std::int64_t> fired_at_ns;
};
// Version 2 added kWatch (issue 13): a library of version 1 would take the
// bit for damage and, worse, fire without telling the watch summary that a
// wide wait sleeps on, so it refuses these signals by version (LayoutMismatch).
inline constexpr std::uint32_t kSignalLayoutVersion = 2;
static_assert(sizeof(SignalState) == 64);
static_assert(offsetof(SignalState, word) == 8);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

namespace {

class SegmentSignalNode;

// Watched by the dispatcher while then-callbacks wait for another process's go().
class SignalSource final : public DispatchSource {
 public:
  explicit SignalSource(std::shared_ptr<SegmentSignalNode> n) : node_(std::move(n)) {}
  void arm(WaitSet& ws) override;
  bool deliver() override;

 private:
  std::shared_ptr<SegmentSignalNode> node_;
};

class SegmentSignalNode final : public ConditionNode {
 public:
  SegmentSignalNode(std::shared_ptr<SegmentImpl> seg, SignalState* s, std::string object)
      : seg_(std::move(seg)),
        s_(s),
        offset_(static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(s) - seg_->base)),
        object_(std::move(object)) {}

  std::uint32_t load() const {
    std::uint32_t v = s_->word.load(std::memory_order_seq_cst);
    if ((v & ~one_shot::kValidBits) != 0)
      throw Error(ErrorCode::Corrupt, seg_->where(object_) + ": signal word " + std::to_string(v) +
                                          " has bits no signal sets");
    return v;
  }
  bool is_set() const override { return (load() & one_shot::kFired) != 0; }
  void arm(WaitSet& ws) const override {
    load();
    ws.add_one_shot(s_->word, &seg_->header->watch.changes);
  }
  Condition::CallbackId then(Condition::Callback cb) override {
    auto id = callbacks_.add(std::move(cb));
    if (is_set()) {
      callbacks_.run_all();
    } else if (!watched_.exchange(true)) {
      dispatcher_watch_source(
          std::make_shared<SignalSource>(std::static_pointer_cast<SegmentSignalNode>(shared_from_this())));
    }
    return id;
  }
  void remove_then(Condition::CallbackId id) override { callbacks_.remove(id); }
  void go() override {
    seg_->require_writable(object_, "fire it (go)");
    load();
    // While this thread fires, the dispatcher leaves the callbacks to it
    // (SignalSource::deliver): a callback runs in the firing thread when this
    // process fires (the contract), not on the dispatcher, which may see the
    // word set before this thread reaches run_all_if_any.
    firing_.fetch_add(1, std::memory_order_seq_cst);
    struct Done {
      std::atomic<int>& n;
      ~Done() { n.fetch_sub(1, std::memory_order_seq_cst); }
    } done{firing_};
    std::uint32_t old = s_->word.fetch_or(one_shot::kFired, std::memory_order_seq_cst);
    if ((old & one_shot::kFired) == 0) {
      auto now = std::chrono::system_clock::now().time_since_epoch();
      s_->fired_at_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
      s_->fired_pid.store(platform::current_pid());
      if ((old & one_shot::kSleeper) != 0) one_shot::wake(s_->word);
      // A wide wait sleeps on the segment's watch summary for this word
      // (event_count.hpp, kWatchBit, "Wide waits"): the atoms' notifier.
      if ((old & one_shot::kWatch) != 0) [[unlikely]]
        seg_->note_watched_change(offset_);
    }
    SHMSTATE_CRASH_POINT("signal.go.before_callbacks");
    callbacks_.run_all_if_any();
  }
  bool can_go() const override { return true; }
  std::optional<Signal::Fired> fired() const override {
    if (!is_set()) return std::nullopt;
    return Signal::Fired{s_->fired_pid.load(), std::chrono::system_clock::time_point(
                                                   std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                       std::chrono::nanoseconds(s_->fired_at_ns.load())))};
  }
  const std::string& name() const override { return object_; }
  const std::string& segment_name() const override { return seg_->name; }
  CallbackList& callbacks() { return callbacks_; }
  bool firing_here() const noexcept { return firing_.load(std::memory_order_seq_cst) != 0; }
  SignalState* state() const { return s_; }

 private:
  std::shared_ptr<SegmentImpl> seg_;
  SignalState* s_;
  std::uint64_t offset_;  // of *s_ in the segment (its watch bucket)
  std::string object_;
  CallbackList callbacks_;
  std::atomic<bool> watched_{false};
  std::atomic<int> firing_{0};  // go() calls of this process in progress
};

void SignalSource::arm(WaitSet& ws) { node_->arm(ws); }
bool SignalSource::deliver() {
  if (!node_->is_set()) return false;
  // Fired by a go() of this process that is still running: it runs them.
  if (!node_->firing_here()) node_->callbacks().run_all();
  return true;
}

// The one node per signal per process (so then-callbacks registered through
// any handle run once, and go() through any handle runs them).
std::shared_ptr<SegmentSignalNode> node_for(const std::shared_ptr<SegmentImpl>& seg, SignalState* s,
                                            std::string_view object) {
  static std::mutex mu;
  static std::map<SignalState*, std::weak_ptr<SegmentSignalNode>>* nodes = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> g(mu);
  if (nodes == nullptr || owner != platform::current_pid()) {
    nodes = new std::map<SignalState*, std::weak_ptr<SegmentSignalNode>>;  // a fork()ed child starts afresh
    owner = platform::current_pid();
  }
  auto& w = (*nodes)[s];
  if (auto n = w.lock()) return n;
  auto n = std::make_shared<SegmentSignalNode>(seg, s, std::string(object));
  w = n;
  return n;
}

ObjectSlot signal_slot(SegmentImpl& impl, std::string_view name, bool fired, std::int32_t pid, std::int64_t at_ns) {
  return impl.find_or_create(name, Kind::Signal, sizeof(SignalState), alignof(SignalState), [&](std::byte* p) {
    auto* s = new (p) SignalState;
    s->header = {static_cast<std::uint32_t>(Kind::Signal), kSignalLayoutVersion};
    s->word.store(fired ? one_shot::kFired : 0, std::memory_order_relaxed);
    s->fired_pid.store(pid, std::memory_order_relaxed);
    s->fired_at_ns.store(at_ns, std::memory_order_relaxed);
  });
}

}  // namespace
}  // namespace detail

Signal Segment::signal(std::string_view name) {
  auto slot = detail::signal_slot(*impl_, name, false, 0, 0);
  auto* s = impl_->state_of<detail::SignalState>(slot, detail::kSignalLayoutVersion);
  return Signal(detail::node_for(impl_, s, name));
}

Signal Segment::open_signal(std::string_view name) const {
  auto slot = impl_->find_existing(name, Kind::Signal);
  auto* s = impl_->state_of<detail::SignalState>(slot, detail::kSignalLayoutVersion);
  return Signal(detail::node_for(impl_, s, name));
}

// ---- the kind descriptor ----

namespace detail {
namespace {

namespace json = boost::json;

json::value when_text(const Signal::Fired& f) {
  if (f.when.time_since_epoch().count() == 0) return nullptr;
  std::time_t t = std::chrono::system_clock::to_time_t(f.when);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(f.when.time_since_epoch()).count() % 1000;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return json::string(buf);
}

bool create(Segment& s, std::string_view object, const CreateRequest& r) {
  if (!r.initial.is_null() && !r.initial.is_bool()) throw wrong_json(s, object, Kind::Signal, r.initial, "true (fired) or false");
  bool fired = r.initial.is_bool() && r.initial.get_bool();
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  return signal_slot(s.impl(), object, fired, fired ? platform::current_pid() : 0, fired ? now.count() : 0).created;
}

json::object state(const Segment& s, const ObjectInfo& o) {
  auto f = s.open_signal(o.name).fired();
  json::object out;
  out["fired"] = f.has_value();
  out["pid"] = f ? json::value(f->pid) : json::value(nullptr);
  out["when"] = f ? when_text(*f) : json::value(nullptr);
  return out;
}

std::string text(const Segment& s, const ObjectInfo& o, std::size_t width) {
  auto f = s.open_signal(o.name).fired();
  if (!f) return "pending";
  std::string by = f->pid > 0 ? "pid " + std::to_string(f->pid) : "an unknown process";
  auto w = when_text(*f);
  return inspect::excerpt("fired by " + by + (w.is_string() ? " at " + std::string(w.get_string()) : ""), width);
}

json::value snapshot(const Segment& s, const ObjectInfo& o) {
  auto f = s.open_signal(o.name).fired();
  json::object out;
  out["fired"] = f.has_value();
  if (f) {
    out["pid"] = f->pid;
    out["when_ns"] = std::chrono::duration_cast<std::chrono::nanoseconds>(f->when.time_since_epoch()).count();
  }
  return out;
}

void restore(Segment& s, std::string_view object, const json::value& saved) {
  const auto* o = saved.if_object();
  const json::value* fired = o ? o->if_contains("fired") : nullptr;
  if (fired == nullptr || !fired->is_bool())
    throw Error(ErrorCode::Corrupt, platform::where(s.name(), object) + ": a saved signal needs \"fired\": true or false");
  std::int32_t pid = 0;
  std::int64_t at = 0;
  if (const auto* p = o->if_contains("pid"); p && p->is_int64()) pid = static_cast<std::int32_t>(p->get_int64());
  if (const auto* w = o->if_contains("when_ns"); w && w->is_int64()) at = w->get_int64();
  signal_slot(s.impl(), object, fired->get_bool(), pid, at);
}

}  // namespace

const KindDescriptor& signal_kind() {
  static constexpr KindDescriptor d{.kind = Kind::Signal,
                                    .name = "signal",
                                    .create = &create,
                                    .state = &state,
                                    .text = &text,
                                    .snapshot = &snapshot,
                                    .restore = &restore};
  return d;
}

}  // namespace detail
}  // namespace shmstate
