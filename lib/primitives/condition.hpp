// Internal: the process-local nodes behind shmstate::Condition, the one-shot
// word protocol, and the one wait that every blocking call with a `till` uses.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/signal.hpp>

namespace shmstate::detail {

using Clock = std::chrono::steady_clock;

// What one wait slice sleeps on: futex words with the values they had when
// armed, and the nearest deadline of any Till involved.
//
// One-shot words (signals) are added with add_one_shot, which arms them at
// once unless `defer` is set: then they are only declared, and wait_any arms
// them all (arm_declared) once it knows how many words the wait has. A wait
// of more than kWaitvMax words is "wide": each declared word of a segment
// (`summary` given: its segment's watch summary) is armed with
// one_shot::kWatch and the wait sleeps on the summaries of those segments
// instead of on the words (one word per segment; the protocol is in
// event_count.hpp at kWatchBit, "Wide waits"), so no helper thread is needed
// while the summaries and the other words fit one futex_waitv.
struct WaitSet {
  std::vector<const std::atomic<std::uint32_t>*> words;
  std::vector<std::uint32_t> expected;
  Clock::time_point deadline = Clock::time_point::max();
  bool defer = false;  // add_one_shot declares (wait_any) instead of arming

  struct OneShot {
    std::atomic<std::uint32_t>* word;
    EventCount* summary;  // its segment's watch summary, or nullptr (a local word)
  };
  std::vector<OneShot> declared;
  std::vector<const EventCount*> summaries;  // armed by this slice's arm_declared

  void add(const std::atomic<std::uint32_t>& word, std::uint32_t seen) {
    words.push_back(&word);
    expected.push_back(seen);
  }
  void add_one_shot(std::atomic<std::uint32_t>& word, EventCount* summary = nullptr);
  // Arms the declared one-shot words in order (see above): with kSleeper,
  // each a word to sleep on; or, when `wide`, a segment's words with kWatch
  // after its summary (kSleeperBit), which is then the word to sleep on.
  void arm_declared(bool wide);
  // Words this slice will have once the declared ones are armed one by one.
  std::size_t size() const noexcept { return words.size() + declared.size(); }
  void add_deadline(Clock::time_point d) { deadline = std::min(deadline, d); }
  void clear() {
    words.clear();
    expected.clear();
    declared.clear();
    summaries.clear();
    deadline = Clock::time_point::max();
  }
};

// The one-shot word (segment and local signals alike). Bits:
//   kFired    set once by go(), never cleared
//   kSleeper  someone may sleep on the word; set by waiters before each
//             sleep, never cleared (the word stops mattering once fired:
//             the one go() that sees it pays one FUTEX_WAKE, later go()s
//             find kFired and return after one load). A killed waiter thus
//             costs at most that one wake, once.
//   kWatch    (segment signals only) a wide wait sleeps on the segment's
//             watch summary for this word (WaitSet; event_count.hpp,
//             kWatchBit, "Wide waits"); set by such waiters, never cleared:
//             the go() that fires the word bumps the summary
//             (SegmentImpl::note_watched_change), once, like kSleeper's wake.
// A waiter arms (sets kSleeper), re-checks kFired, then sleeps while the word
// equals the armed value; go()'s fetch_or changes the word, so the sleep
// returns at once or is woken (no lost wake-up).
namespace one_shot {
inline constexpr std::uint32_t kFired = 1u << 0;
inline constexpr std::uint32_t kSleeper = 1u << 1;
inline constexpr std::uint32_t kWatch = 1u << 2;
inline constexpr std::uint32_t kValidBits = kFired | kSleeper | kWatch;

// Sets kFired; returns true for the call that set it (it woke the sleepers).
bool fire(std::atomic<std::uint32_t>& word) noexcept;
// The FUTEX_WAKE of the go() that set kFired over kSleeper (counted in
// testing::signal_wake_count()).
void wake(std::atomic<std::uint32_t>& word) noexcept;
// Sets `bit` (kSleeper or kWatch) if needed; returns the word's value (to
// sleep on, for kSleeper).
std::uint32_t arm(std::atomic<std::uint32_t>& word, std::uint32_t bit = kSleeper) noexcept;
}  // namespace one_shot

// Then-callbacks of one condition in this process: run once, by whoever
// calls run_all() first after the condition is set.
class CallbackList {
 public:
  // Registers `cb` (unless already delivered: then it runs at once, here).
  // Callers (every then()) check their condition after add() and call
  // run_all() when it is set: run_all_if_any() relies on that.
  Condition::CallbackId add(Condition::Callback cb);
  void remove(Condition::CallbackId id);
  // Takes every registered callback and runs it in this thread; a throwing
  // callback is reported on stderr and the others still run. Later add()s
  // run at once.
  void run_all();
  // For go(), after its seq_cst read-modify-write of the word: run_all()
  // if any add() ever registered a callback here, else nothing (no lock, no
  // store: a go() with no callbacks writes no process-local memory). An add()
  // racing with it stores `registered_` (seq_cst) before its caller re-reads
  // the word (seq_cst): either this sees the registration or that then()
  // sees the fired word and runs the callback itself.
  void run_all_if_any() {
    if (registered_.load(std::memory_order_seq_cst)) run_all();
  }
  bool empty() const;

 private:
  void adopt_after_fork_locked();
  mutable std::mutex mu_;
  std::map<Condition::CallbackId, Condition::Callback> callbacks_;
  std::atomic<bool> registered_{false};  // set by the first add() that stores, never cleared
  bool delivered_ = false;
  pid_t owner_ = 0;
};

// Runs one callback, reporting (not propagating) what it throws.
void run_callback(const Condition::Callback& cb) noexcept;
Condition::CallbackId next_callback_id() noexcept;

class ConditionNode : public std::enable_shared_from_this<ConditionNode> {
 public:
  virtual ~ConditionNode() = default;
  virtual bool is_set() const = 0;
  // Adds what a sleep must wake on for this node to become set (arming each
  // word first, or declaring its one-shot words for the WaitSet to arm; the
  // caller re-checks is_set() after arming, then sleeps).
  virtual void arm(WaitSet& ws) const = 0;
  virtual Condition::CallbackId then(Condition::Callback cb) = 0;
  virtual void remove_then(Condition::CallbackId id) = 0;
  // Signals only: fire; nullptr firer for those that cannot be fired.
  virtual void go() { }
  virtual bool can_go() const { return false; }
  virtual std::optional<Signal::Fired> fired() const { return std::nullopt; }
  virtual const std::string& name() const;
  virtual const std::string& segment_name() const;
  // For composition: its parts if it is an Or (kind 1) / And (kind 2).
  virtual int composition() const { return 0; }
  virtual const std::vector<std::shared_ptr<ConditionNode>>* parts() const { return nullptr; }
};

const std::shared_ptr<ConditionNode>& done_node();
const std::shared_ptr<ConditionNode>& never_node();

// How a wait ended.
enum class WaitEnd { Done, Till, Timeout };

// The one wait: returns Done as soon as done() holds, Till when `till`
// (may be null) is set first, Timeout at `deadline`. Each slice arms the
// caller's words (arm_own) and the till's, re-checks, and sleeps on all of
// them at once (futex_waitv) until the nearest deadline, at most kWaitSlice.
// A wait of more than kWaitvMax words sleeps on the watch summaries of its
// signals' segments instead (WaitSet, "wide").
WaitEnd wait_any(const std::function<bool()>& done, const std::function<void(WaitSet&)>& arm_own,
                 const ConditionNode* till, Clock::time_point deadline);

// wait_any for a predicate published under an event count (Atomic, Atom,
// Monitor): each slice arms `ec` (reads seq, sets kSleeperBit) and the
// till's words, re-checks done() and the till, and sleeps on all of them.
// The event count's protocol (event_count.hpp) is kept: arm, then re-check.
WaitEnd wait_event(EventCount& ec, const std::function<bool()>& done, const ConditionNode* till,
                   Clock::time_point deadline);

// The process's dispatcher thread (watch_dispatcher.cpp) also watches
// sources other than atoms: each pass it arms the source's word and calls
// deliver(), which returns true when the source needs no more watching.
struct DispatchSource {
  virtual ~DispatchSource() = default;
  virtual void arm(WaitSet& ws) = 0;
  virtual bool deliver() = 0;
};
void dispatcher_watch_source(std::shared_ptr<DispatchSource> source);

}  // namespace shmstate::detail
