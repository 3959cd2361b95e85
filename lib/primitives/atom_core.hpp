// The process-local side of one atom: every handle to it in this process
// shares one AtomCore (value cache, watches, validator, delivery queue).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/json/value.hpp>

#include <shmstate/atom.hpp>

#include "primitives/atom_state.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate::detail {

class ConditionNode;

struct AtomSnapshot {
  std::uint64_t version;
  Atom::Value value;
};

class AtomCore : public std::enable_shared_from_this<AtomCore> {
 public:
  // The core for the object in `slot`, shared by all handles in this process.
  static std::shared_ptr<AtomCore> get(SegmentImpl& segment, const ObjectSlot& slot);

  AtomCore(SegmentImpl& segment, AtomState* state, std::string object);

  // pthread_atfork handlers: every core's mutexes are held across fork(), so
  // a child never inherits one locked by a thread it does not have.
  static void prepare_fork() noexcept;
  static void after_fork() noexcept;

  // Lock-free consistent read, parsed once per version per process.
  AtomSnapshot read() const;
  std::uint64_t version() const noexcept;

  // The Atom operations; see atom.hpp for contracts.
  // {old, new}, shared and immutable: the API edge decides what to copy.
  std::pair<Atom::Value, Atom::Value> swap(const Atom::Fn& f);
  std::pair<Atom::Value, Atom::Value> swap_locked(const Atom::Fn& f);
  std::pair<Atom::Value, Atom::Value> reset(boost::json::value value);
  bool compare_and_set(const boost::json::value& expected, boost::json::value desired);
  bool wait_for_change(std::uint64_t since, std::chrono::nanoseconds timeout) const;
  bool wait_for_change(std::uint64_t since, const ConditionNode* till) const;

  void add_watch(std::string key, Atom::WatchFn fn);
  void remove_watch(std::string_view key);
  void set_validator(Atom::Validator fn);

  // Dispatcher side: delivers other processes' changes up to the current
  // version, if no own change is pending in between. When nothing is new
  // (the version is one this process delivered already: the common case for
  // the other atoms of a moved bucket) it costs two loads, no lock, and
  // returns false; true when it went on to read the value.
  bool deliver_foreign();
  EventCount& changes() noexcept { return state_->changes; }
  SegmentImpl& segment() const noexcept { return segment_; }
  std::uint64_t state_offset() const noexcept { return owner_; }

  // "" or "<where>: corrupt inactive buffer descriptor: ..." when the
  // inactive buffer points at what is not this atom's block (dump reports
  // it; the next write would refuse it). Lock-free.
  std::string inactive_problem() const;

  const std::string& object() const noexcept { return object_; }
  const std::string& segment_name() const noexcept { return segment_.name; }

 private:
  struct Event {
    Atom::Value old_value, new_value;
    std::uint64_t old_version, new_version;
    bool own;
  };

  // "segment 'S', object 'O'", made once (every write locks with it).
  const std::string& where() const noexcept { return where_; }
  void validate(const boost::json::value& v) const;
  // Holding the writer lock: writes `bytes` into the inactive buffer and
  // publishes version+1. Returns the new version. Throws SegmentFull, and
  // Corrupt (nothing written) when the inactive buffer's descriptor does not
  // point at a block of this atom (check_inactive_locked).
  std::uint64_t publish_locked(const std::string& bytes);
  void check_inactive_locked(std::uint64_t word, std::uint64_t offset, std::uint64_t capacity) const;
  // "" if the inactive buffer (offset, capacity) of published word `word` is
  // this atom's own block, apart from the active one; else what it is.
  std::string inactive_block_problem(std::uint64_t word, std::uint64_t offset, std::uint64_t capacity) const;
  // Holding the writer lock: publishes `bytes` as version old_version + 1,
  // tells the watch machinery first, and caches `value` as the new version.
  void commit_locked(std::uint64_t old_version, const Atom::Value& value, const std::string& bytes);
  // After the lock is released: wakes waiters and runs this process's watches.
  void after_commit(const AtomSnapshot& old, const Atom::Value& value);
  // Delivers this process's change old_version -> old_version + 1.
  void deliver_own(const AtomSnapshot& old, const Atom::Value& new_value);
  void note_pending_own(std::uint64_t version);
  void forget_pending_own(std::uint64_t version);
  // Appends events and, unless another thread is delivering, runs them.
  void drain(std::unique_lock<std::mutex>& lock);
  bool watching_here() const noexcept;
  // Holding watch_mu_: in a fork()ed child, drops the parent's watch state
  // and makes this process the owner.
  void adopt_after_fork_locked();

  SegmentImpl& segment_;
  AtomState* state_;
  std::uint64_t owner_;  // the state's offset: what its blocks' headers name
  std::string object_;
  std::string where_;

  mutable std::mutex cache_mu_;
  // cache_value_ is version cache_word_'s value when cache_valid_. A flag, not
  // a marker word: every word, all ones too, can be read from a damaged segment.
  mutable bool cache_valid_ = false;
  mutable std::uint64_t cache_word_ = 0;
  mutable Atom::Value cache_value_;

  // Watch state; all guarded by watch_mu_.
  mutable std::mutex watch_mu_;
  // Replaced, never changed in place: a delivery takes the current map by
  // one shared_ptr copy and runs it without the lock.
  using WatchMap = std::map<std::string, std::shared_ptr<Atom::WatchFn>, std::less<>>;
  std::shared_ptr<const WatchMap> watches_ = std::make_shared<const WatchMap>();
  std::shared_ptr<Atom::Validator> validator_;
  std::atomic<bool> has_validator_{false};
  std::atomic<bool> has_watches_{false};
  pid_t owner_pid_;
  std::uint64_t delivered_version_ = 0;
  // delivered_version_, readable without the lock (deliver_foreign's skip);
  // stored after it, so at most behind it.
  std::atomic<std::uint64_t> delivered_hint_{0};
  Atom::Value delivered_value_;
  std::set<std::uint64_t> pending_own_;
  std::deque<Event> queue_;
  bool draining_ = false;
};

// The process's watch dispatcher thread (started with the first watch).
void dispatcher_watch(std::shared_ptr<AtomCore> core);
void dispatcher_unwatch(const AtomCore* core);
void dispatcher_poke() noexcept;

}  // namespace shmstate::detail
