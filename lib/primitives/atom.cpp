#include <shmstate/atom.hpp>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/inspect.hpp>

#include "platform/process.hpp"
#include "platform/crash_point.hpp"
#include "platform/system_error.hpp"
#include "primitives/atom_core.hpp"
#include "primitives/condition.hpp"
#include "primitives/json_storable.hpp"
#include "primitives/kind.hpp"

namespace shmstate {

namespace json = boost::json;

namespace detail {

namespace {

// Writer locks this thread holds, to turn a self-deadlock (writing an atom
// from inside its own swap_locked) into an error.
thread_local std::vector<const AtomState*> t_held;

class WriterLock {
 public:
  WriterLock(AtomState* state, const std::string& where) {
    if (std::find(t_held.begin(), t_held.end(), state) != t_held.end())
      throw Error(ErrorCode::InvalidArgument, where + ": this thread already holds the atom's writer lock "
                                                      "(a write from inside swap_locked's function)");
    lock_.emplace(state->writer, where, []() noexcept {
      // Nothing to repair: a dead writer never published a partial value.
    });
    t_held.push_back(state);
    SHMSTATE_CRASH_POINT("atom.after_lock");
  }
  ~WriterLock() { t_held.pop_back(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  std::optional<platform::RobustLock> lock_;
};

using platform::hex;

// A value quoted in a message: a short one-line prefix.
std::string shortened(const json::value& v) { return inspect::excerpt(inspect::to_text(v)); }

// Process-wide map from (segment, offset) to the shared core.
struct CoreRegistry {
  std::mutex mu;
  std::map<std::pair<const SegmentImpl*, std::uint64_t>, std::weak_ptr<AtomCore>> cores;
  std::vector<std::shared_ptr<AtomCore>> forking;  // cores whose mutexes are held across fork()
};
CoreRegistry& core_registry() {
  static auto* r = [] {
    auto* reg = new CoreRegistry();  // never destroyed: cores may outlive statics
    // A child fork()ed while another thread (the watch dispatcher, say) held a
    // core's mutex would inherit it locked forever: hold them all across fork.
    ::pthread_atfork(&AtomCore::prepare_fork, &AtomCore::after_fork, &AtomCore::after_fork);
    return reg;
  }();
  return *r;
}

// A new atom holding `bytes` at `version` (0 for a created one; a restored
// one starts at its snapshot's version, so versions never go backwards).
void init_atom_state(SegmentImpl& segment, std::byte* p, Kind kind, const std::string& bytes,
                     std::string_view object, std::uint64_t version = 0) {
  auto* s = new (p) AtomState;
  s->header = {static_cast<std::uint32_t>(kind), kAtomLayoutVersion};
  s->writer.init();
  std::uint64_t capacity = 0;
  // The block's owner is the state's offset (states never move or go away).
  const auto owner = static_cast<std::uint64_t>(p - segment.base);
  std::uint64_t offset = segment.allocate_block(bytes.size(), &capacity, owner, object);
  std::memcpy(segment.base + offset, bytes.data(), bytes.size());
  s->buffers[0].offset.store(offset, std::memory_order_relaxed);
  s->buffers[0].capacity.store(capacity, std::memory_order_relaxed);
  s->buffers[0].length.store(bytes.size(), std::memory_order_relaxed);
  s->current.store(version << 1, std::memory_order_release);  // buffer 0 active
}

// Opens the atom or reference `name`; with `initial`, creates it if missing
// (and sets *created, if given, to whether this call created it).
std::shared_ptr<AtomCore> open_core(SegmentImpl& segment, std::string_view name, Kind kind,
                                    const json::value* initial, CreateMode mode = CreateMode::OpenOrCreate,
                                    bool* created = nullptr) {
  ObjectSlot slot;
  if (initial != nullptr) {
    std::string bytes = encode_storable(*initial, [&] { return segment.where(name); });
    slot = segment.find_or_create(name, kind, sizeof(AtomState), alignof(AtomState),
                                  [&](std::byte* p) { init_atom_state(segment, p, kind, bytes, name); }, mode);
    if (created != nullptr) *created = slot.created;
  } else {
    slot = segment.find_existing(name, kind);
  }
  segment.state_of<AtomState>(slot, kAtomLayoutVersion);  // validates kind, size, layout version
  return AtomCore::get(segment, slot);
}

}  // namespace

std::shared_ptr<AtomCore> AtomCore::get(SegmentImpl& segment, const ObjectSlot& slot) {
  auto& reg = core_registry();
  std::lock_guard<std::mutex> g(reg.mu);
  auto key = std::make_pair(static_cast<const SegmentImpl*>(&segment), slot.info.offset);
  if (auto core = reg.cores[key].lock()) return core;
  auto core = std::make_shared<AtomCore>(segment, reinterpret_cast<AtomState*>(slot.address), slot.info.name);
  reg.cores[key] = core;
  return core;
}

void AtomCore::prepare_fork() noexcept {
  auto& reg = core_registry();
  reg.mu.lock();
  for (auto& [key, weak] : reg.cores)
    if (auto core = weak.lock()) reg.forking.push_back(std::move(core));
  // No code path holds one of these while taking another, so any order works.
  for (auto& core : reg.forking) {
    core->watch_mu_.lock();
    core->cache_mu_.lock();
  }
}

void AtomCore::after_fork() noexcept {
  auto& reg = core_registry();
  for (auto& core : reg.forking) {
    core->cache_mu_.unlock();
    core->watch_mu_.unlock();
  }
  reg.forking.clear();
  reg.mu.unlock();
}

AtomCore::AtomCore(SegmentImpl& segment, AtomState* state, std::string object)
    : segment_(segment),
      state_(state),
      owner_(static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(state) - segment.base)),
      object_(std::move(object)),
      where_(segment.where(object_)),
      owner_pid_(platform::current_pid()) {}

std::uint64_t AtomCore::version() const noexcept {
  return atom_version(state_->current.load(std::memory_order_acquire));
}


AtomSnapshot AtomCore::read() const {
  for (unsigned attempt = 0;; ++attempt) {
    std::uint64_t word = state_->current.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> g(cache_mu_);
      if (cache_valid_ && word == cache_word_) return {atom_version(word), cache_value_};
    }
    const AtomBuffer& b = state_->buffers[atom_buffer(word)];
    std::uint64_t offset = b.offset.load(std::memory_order_relaxed);
    std::uint64_t capacity = b.capacity.load(std::memory_order_relaxed);
    std::uint64_t length = b.length.load(std::memory_order_relaxed);
    // Stale numbers from a racing writer are possible; out-of-mapping reads are not.
    bool sane = length > 0 && length <= capacity && segment_.in_heap(offset, capacity);
    // ... and the block must be this atom's (its header is stable while the
    // block is active: it is freed only after a later publish).
    bool owned = sane && segment_.block_owned_by(offset, capacity, owner_);
    std::string bytes;
    if (owned) seqlock_copy(bytes, segment_.base + offset, length);
    if (seqlock_recheck(state_->current) != word) {
      if (attempt > 64) std::this_thread::yield();
      continue;  // a writer published meanwhile: the copy may be torn
    }
    if (atom_version(word) > kMaxAtomVersion)
      throw Error(ErrorCode::Corrupt, where() + ": corrupt published word: version " +
                                          std::to_string(atom_version(word)) + " is beyond any reachable version (word 0x" + hex(word) + ")");
    if (!sane)
      throw Error(ErrorCode::Corrupt, where() + ": corrupt value buffer of version " +
                                          std::to_string(atom_version(word)) + ": offset " + std::to_string(offset) +
                                          ", capacity " + std::to_string(capacity) + ", length " +
                                          std::to_string(length) + " is not a block inside the heap");
    if (!owned) {
      std::string problem = segment_.block_problem(offset, capacity, owner_);
      throw Error(ErrorCode::Corrupt, where() + ": corrupt value buffer of version " +
                                          std::to_string(atom_version(word)) + ": " +
                                          (problem.empty() ? "its block header changed while it was read" : problem));
    }
    boost::system::error_code ec;
    json::value parsed = parse_json_exact(bytes, ec);
    if (ec)
      throw Error(ErrorCode::Corrupt, where() + ": version " + std::to_string(atom_version(word)) +
                                          " is corrupt: not valid JSON (" + ec.message() + ")");
    auto value = std::make_shared<const json::value>(std::move(parsed));
    std::lock_guard<std::mutex> g(cache_mu_);
    if (!cache_valid_ || atom_version(word) > atom_version(cache_word_)) {
      cache_valid_ = true;
      cache_word_ = word;
      cache_value_ = value;
    }
    return {atom_version(word), std::move(value)};
  }
}

void AtomCore::validate(const json::value& v) const {
  if (!has_validator_.load(std::memory_order_acquire)) return;  // no lock, no getpid() on the common path
  std::shared_ptr<Atom::Validator> validator;
  {
    std::lock_guard<std::mutex> g(watch_mu_);
    if (owner_pid_ == platform::current_pid()) validator = validator_;
  }
  if (validator && !(*validator)(v))
    throw Error(ErrorCode::Rejected, where() + ": the validator rejected " + shortened(v));
}

std::uint64_t AtomCore::publish_locked(const std::string& bytes) {
  std::uint64_t word = state_->current.load(std::memory_order_relaxed);  // only writers store it
  // Versions only count up, one per write: a bigger one is damage, and
  // version + 1 must never wrap to an older version.
  if (atom_version(word) >= kMaxAtomVersion)
    throw Error(ErrorCode::Corrupt, where() + ": corrupt published word: version " +
                                        std::to_string(atom_version(word)) + " is beyond any reachable version (word 0x" + hex(word) + ")");
  unsigned target = atom_buffer(word) ^ 1;
  AtomBuffer& b = state_->buffers[target];
  std::uint64_t length = bytes.size();
  std::uint64_t offset = b.offset.load(std::memory_order_relaxed);
  std::uint64_t capacity = b.capacity.load(std::memory_order_relaxed);
  // Capacity 0: no block yet, or a writer died while replacing it (below).
  bool has_block = capacity != 0;
  if (has_block) check_inactive_locked(word, offset, capacity);
  if (!has_block || capacity < length) {
    // Grow by doubling (amortised). SegmentFull is thrown before anything
    // changed.
    std::uint64_t want = has_block ? std::max(length, capacity * 2) : length;
    std::uint64_t new_capacity = 0;
    std::uint64_t new_offset = segment_.allocate_block(want, &new_capacity, owner_, object_);
    // Capacity 0 first: a writer killed between these stores leaves a
    // descriptor that says "no block" (the next writer allocates one and at
    // most these blocks leak), never one that overstates a block.
    b.capacity.store(0, std::memory_order_relaxed);
    b.offset.store(new_offset, std::memory_order_relaxed);
    b.capacity.store(new_capacity, std::memory_order_relaxed);
    SHMSTATE_CRASH_POINT("atom.after_allocate");
    if (has_block) segment_.free_block(offset, capacity, owner_);
    offset = new_offset;
  }
  std::memcpy(segment_.base + offset, bytes.data(), length);
  b.length.store(length, std::memory_order_relaxed);
  SHMSTATE_CRASH_POINT("atom.after_write");
  std::uint64_t next = ((atom_version(word) + 1) << 1) | target;
  // seq_cst, not just release: with the later seq_cst load of the event
  // count's waiter word it forms the Dekker pair the wake-up protocol needs.
  state_->current.store(next, std::memory_order_seq_cst);
  SHMSTATE_CRASH_POINT("atom.after_publish");
  return atom_version(next);
}

std::string AtomCore::inactive_block_problem(std::uint64_t word, std::uint64_t offset, std::uint64_t capacity) const {
  // The block is written (or freed) only if its header says it is this
  // atom's block of that capacity, and it is not the active buffer's block.
  std::string problem = segment_.block_problem(offset, capacity, owner_);
  if (problem.empty()) {
    const AtomBuffer& active = state_->buffers[atom_buffer(word)];
    std::uint64_t a_offset = active.offset.load(std::memory_order_relaxed);
    std::uint64_t a_capacity = active.capacity.load(std::memory_order_relaxed);
    if (offset < a_offset + a_capacity && a_offset < offset + capacity)
      problem = "offset " + std::to_string(offset) + ", capacity " + std::to_string(capacity) +
                " overlaps the active buffer's block (offset " + std::to_string(a_offset) + ")";
  }
  return problem;
}

void AtomCore::check_inactive_locked(std::uint64_t word, std::uint64_t offset, std::uint64_t capacity) const {
  const AtomBuffer& active = state_->buffers[atom_buffer(word)];
  std::uint64_t a_offset = active.offset.load(std::memory_order_relaxed);
  std::uint64_t a_capacity = active.capacity.load(std::memory_order_relaxed);
  if (segment_.block_owned_by(offset, capacity, owner_) && (offset >= a_offset + a_capacity || a_offset >= offset + capacity))
    return;  // the common case, without building strings
  if (std::string problem = inactive_block_problem(word, offset, capacity); !problem.empty())
    throw Error(ErrorCode::Corrupt, where() + ": corrupt inactive buffer descriptor: " + problem + "; nothing written");
}

std::string AtomCore::inactive_problem() const {
  // Lock-free (dump): a writer may be replacing the descriptor meanwhile, so
  // only a problem seen with the published word and the descriptor unchanged
  // around the check, several times, is damage.
  std::string problem;
  for (int look = 0; look < 4; ++look) {
    if (look > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::uint64_t word = state_->current.load(std::memory_order_acquire);
    const AtomBuffer& b = state_->buffers[atom_buffer(word) ^ 1];
    std::uint64_t offset = b.offset.load(std::memory_order_acquire);
    std::uint64_t capacity = b.capacity.load(std::memory_order_acquire);
    if (capacity == 0) return "";
    problem = inactive_block_problem(word, offset, capacity);
    if (problem.empty() || seqlock_recheck(state_->current) != word ||
        b.offset.load(std::memory_order_relaxed) != offset || b.capacity.load(std::memory_order_relaxed) != capacity)
      return "";
  }
  return where() + ": corrupt inactive buffer descriptor: " + problem;
}

bool AtomCore::watching_here() const noexcept {
  return has_watches_.load(std::memory_order_acquire) && owner_pid_ == platform::current_pid();
}

void AtomCore::note_pending_own(std::uint64_t version) {
  if (!watching_here()) return;
  std::lock_guard<std::mutex> g(watch_mu_);
  pending_own_.insert(version);
}

void AtomCore::forget_pending_own(std::uint64_t version) {
  std::lock_guard<std::mutex> g(watch_mu_);
  pending_own_.erase(version);
}

void AtomCore::commit_locked(std::uint64_t old_version, const Atom::Value& value, const std::string& bytes) {
  note_pending_own(old_version + 1);
  try {
    publish_locked(bytes);
  } catch (...) {
    forget_pending_own(old_version + 1);
    throw;
  }
  std::lock_guard<std::mutex> g(cache_mu_);
  cache_valid_ = true;
  cache_word_ = state_->current.load(std::memory_order_relaxed);
  cache_value_ = value;
}

void AtomCore::after_commit(const AtomSnapshot& old, const Atom::Value& value) {
  // A watch dispatcher (of any process) that watches this atom through the
  // segment's watch summary is told which bucket moved.
  if (state_->changes.notify_all() & EventCount::kWatchBit) [[unlikely]]
    segment_.note_watched_change(owner_);
  deliver_own(old, value);
}

std::pair<Atom::Value, Atom::Value> AtomCore::swap(const Atom::Fn& f) {
  segment_.require_writable(object_, "swap");  // before f runs: nothing is attempted
  for (;;) {
    AtomSnapshot snap = read();
    auto value = std::make_shared<const json::value>(f(*snap.value));
    validate(*value);
    std::string bytes = encode_storable(*value, [this] { return where(); });
    {
      WriterLock lock(state_, where());
      if (version() != snap.version) continue;  // another writer won: retry with its value
      commit_locked(snap.version, value, bytes);
    }
    after_commit(snap, value);
    return {std::move(snap.value), std::move(value)};
  }
}

std::pair<Atom::Value, Atom::Value> AtomCore::swap_locked(const Atom::Fn& f) {
  segment_.require_writable(object_, "swap");  // before f runs: nothing is attempted
  AtomSnapshot old;
  Atom::Value value;
  {
    WriterLock lock(state_, where());
    old = read();  // stable: we are the only writer
    value = std::make_shared<const json::value>(f(*old.value));
    validate(*value);
    std::string bytes = encode_storable(*value, [this] { return where(); });
    commit_locked(old.version, value, bytes);
  }
  after_commit(old, value);
  return {std::move(old.value), std::move(value)};
}

std::pair<Atom::Value, Atom::Value> AtomCore::reset(json::value new_value) {
  segment_.require_writable(object_, "reset");
  // reset is swap_locked with a constant function: validated and serialized
  // outside the lock, so the lock is held only to copy bytes.
  auto value = std::make_shared<const json::value>(std::move(new_value));
  validate(*value);
  std::string bytes = encode_storable(*value, [this] { return where(); });
  AtomSnapshot old;
  {
    WriterLock lock(state_, where());
    try {
      old = read();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Corrupt) throw;
      // The stored value is damaged: reset is the way to repair it.
      old = {version(), std::make_shared<const json::value>(nullptr)};
    }
    commit_locked(old.version, value, bytes);
  }
  after_commit(old, value);
  return {std::move(old.value), std::move(value)};
}

bool AtomCore::compare_and_set(const json::value& expected, json::value desired) {
  segment_.require_writable(object_, "compare_and_set");
  auto value = std::make_shared<const json::value>(std::move(desired));
  bool validated = false;
  std::string bytes;
  for (;;) {
    AtomSnapshot snap = read();
    if (*snap.value != expected) return false;
    if (!validated) {
      validate(*value);
      bytes = encode_storable(*value, [this] { return where(); });
      validated = true;
    }
    {
      WriterLock lock(state_, where());
      if (version() != snap.version) continue;  // changed since we compared: compare again
      commit_locked(snap.version, value, bytes);
    }
    after_commit(snap, value);
    return true;
  }
}

bool AtomCore::wait_for_change(std::uint64_t since, std::chrono::nanoseconds timeout) const {
  return state_->changes.wait_until([&] { return version() > since; }, deadline_after(timeout));
}

bool AtomCore::wait_for_change(std::uint64_t since, const ConditionNode* till) const {
  return wait_event(state_->changes, [&] { return version() > since; }, till, Clock::time_point::max()) ==
         WaitEnd::Done;
}

// Registration with the dispatcher happens under watch_mu_, so a concurrent
// add and remove of the last watch cannot leave a watched atom unregistered
// (lock order watch_mu_ -> dispatcher mutex; the dispatcher never holds its
// mutex while delivering, and read() only takes cache_mu_).
void AtomCore::add_watch(std::string key, Atom::WatchFn fn) {
  auto fnp = std::make_shared<Atom::WatchFn>(std::move(fn));
  std::lock_guard<std::mutex> g(watch_mu_);
  adopt_after_fork_locked();
  auto next = std::make_shared<WatchMap>(*watches_);
  (*next)[std::move(key)] = std::move(fnp);
  if (has_watches_.load(std::memory_order_relaxed)) {
    watches_ = std::move(next);
    return;
  }
  AtomSnapshot snap = read();  // events start after the value the watch is added at
  delivered_version_ = snap.version;
  delivered_hint_.store(snap.version, std::memory_order_release);
  delivered_value_ = std::move(snap.value);
  auto before = std::exchange(watches_, std::move(next));
  has_watches_.store(true, std::memory_order_release);
  try {
    dispatcher_watch(shared_from_this());
  } catch (...) {
    watches_ = std::move(before);
    has_watches_.store(false, std::memory_order_release);
    throw;
  }
}

void AtomCore::remove_watch(std::string_view key) {
  std::lock_guard<std::mutex> g(watch_mu_);
  if (owner_pid_ != platform::current_pid()) return;
  if (watches_->find(key) == watches_->end()) return;
  auto next = std::make_shared<WatchMap>(*watches_);
  next->erase(next->find(key));
  bool empty = next->empty();
  watches_ = std::move(next);
  if (!empty) return;
  has_watches_.store(false, std::memory_order_release);
  dispatcher_unwatch(this);
}

void AtomCore::set_validator(Atom::Validator fn) {
  if (fn) {
    AtomSnapshot snap = read();
    if (!fn(*snap.value))
      throw Error(ErrorCode::Rejected, where() + ": the validator rejects the current value " + shortened(*snap.value));
  }
  std::lock_guard<std::mutex> g(watch_mu_);
  adopt_after_fork_locked();  // a child must not inherit the parent's watches by setting a validator
  validator_ = fn ? std::make_shared<Atom::Validator>(std::move(fn)) : nullptr;
  has_validator_.store(validator_ != nullptr, std::memory_order_release);
}

void AtomCore::adopt_after_fork_locked() {
  if (owner_pid_ == platform::current_pid()) return;
  // A fork()ed child: nothing of the parent's watch state applies here.
  watches_ = std::make_shared<const WatchMap>();
  validator_.reset();
  has_validator_.store(false);
  pending_own_.clear();
  queue_.clear();
  draining_ = false;
  has_watches_.store(false);
  owner_pid_ = platform::current_pid();
}

void AtomCore::deliver_own(const AtomSnapshot& old, const Atom::Value& nv) {
  if (!watching_here()) return;
  std::unique_lock<std::mutex> lock(watch_mu_);
  pending_own_.erase(old.version + 1);
  if (delivered_version_ <= old.version) {
    if (delivered_version_ < old.version) {
      // Changes came first that nobody has delivered yet: other processes',
      // or other threads' of this process still on their way here. Own only
      // if every one of them is ours.
      auto first = pending_own_.upper_bound(delivered_version_);
      auto last = pending_own_.upper_bound(old.version);
      bool all_own = static_cast<std::uint64_t>(std::distance(first, last)) == old.version - delivered_version_;
      queue_.push_back(Event{delivered_value_, old.value, delivered_version_, old.version, all_own});
    }
    queue_.push_back(Event{old.value, nv, old.version, old.version + 1, true});
    delivered_version_ = old.version + 1;
    delivered_hint_.store(delivered_version_, std::memory_order_release);
    delivered_value_ = nv;
  }
  drain(lock);
  bool behind = version() > delivered_version_;
  lock.unlock();
  if (behind) dispatcher_poke();  // the dispatcher may have skipped them for us
}

bool AtomCore::deliver_foreign() {
  // Nothing new (the other watched atoms of a moved bucket): no lock, no read.
  // seq_cst: this is the check after the arm of event_count.hpp's [3].
  if (atom_version(state_->current.load(std::memory_order_seq_cst)) <= delivered_hint_.load(std::memory_order_acquire))
    return false;
  if (!watching_here()) return false;
  AtomSnapshot cur = read();
  std::unique_lock<std::mutex> lock(watch_mu_);
  if (cur.version <= delivered_version_) return true;
  // An own change in the range is delivered by its writer first, who pokes us.
  auto it = pending_own_.upper_bound(delivered_version_);
  if (it != pending_own_.end() && *it <= cur.version) return true;
  queue_.push_back(Event{delivered_value_, cur.value, delivered_version_, cur.version, false});
  delivered_version_ = cur.version;
  delivered_hint_.store(cur.version, std::memory_order_release);
  delivered_value_ = cur.value;
  drain(lock);
  return true;
}

void AtomCore::drain(std::unique_lock<std::mutex>& lock) {
  if (draining_) return;  // that thread delivers ours next, in order
  draining_ = true;
  while (!queue_.empty()) {
    Event e = std::move(queue_.front());
    queue_.pop_front();
    std::shared_ptr<const WatchMap> watches = watches_;
    lock.unlock();
    Atom atom(shared_from_this());
    for (auto& [key, fn] : *watches) {
      try {
        (*fn)(WatchEvent{key, atom, *e.old_value, *e.new_value, e.old_version, e.new_version, e.own});
      } catch (...) {
        // A throwing watch must not stop the others or the writer.
      }
    }
    lock.lock();
  }
  draining_ = false;
}

}  // namespace detail

// ---- Atom ----

Atom::Value Atom::deref() const { return core_->read().value; }
std::uint64_t Atom::version() const noexcept { return core_->version(); }
Atom::Versioned Atom::deref_versioned() const {
  auto snap = core_->read();
  return {snap.version, std::move(snap.value)};
}
Atom::Value Atom::swap(const Fn& f) { return core_->swap(f).second; }
std::pair<Atom::Value, Atom::Value> Atom::swap_vals(const Fn& f) { return core_->swap(f); }
Atom::Value Atom::swap_locked(const Fn& f) { return core_->swap_locked(f).second; }
Atom::Value Atom::reset(json::value value) { return core_->reset(std::move(value)).second; }
std::pair<Atom::Value, Atom::Value> Atom::reset_vals(json::value value) {
  return core_->reset(std::move(value));
}
bool Atom::compare_and_set(const json::value& expected, json::value desired) {
  return core_->compare_and_set(expected, std::move(desired));
}
void Atom::add_watch(std::string key, WatchFn fn) { core_->add_watch(std::move(key), std::move(fn)); }
void Atom::add_watch(std::string key, ClojureWatchFn fn) {
  core_->add_watch(std::move(key), [fn = std::move(fn)](const WatchEvent& e) {
    fn(e.key, e.atom, e.old_value, e.new_value);
  });
}
void Atom::remove_watch(std::string_view key) { core_->remove_watch(key); }
void Atom::set_validator(Validator fn) { core_->set_validator(std::move(fn)); }
bool Atom::wait_for_change(std::uint64_t since_version, std::chrono::nanoseconds timeout) const {
  return core_->wait_for_change(since_version, timeout);
}
bool Atom::wait_for_change(std::uint64_t since_version, const Condition& till) const {
  return core_->wait_for_change(since_version, till.node().get());
}
const std::string& Atom::name() const noexcept { return core_->object(); }
const std::string& Atom::segment_name() const noexcept { return core_->segment_name(); }

// ---- AtomicReference ----

json::value AtomicReference::get() const { return *core_->read().value; }
void AtomicReference::set(json::value value) { core_->reset(std::move(value)); }
json::value AtomicReference::get_and_set(json::value value) { return *core_->reset(std::move(value)).first; }
bool AtomicReference::compare_and_set(const json::value& expected, json::value desired) {
  return core_->compare_and_set(expected, std::move(desired));
}
std::uint64_t AtomicReference::version() const noexcept { return core_->version(); }
std::pair<std::uint64_t, json::value> AtomicReference::get_versioned() const {
  auto snap = core_->read();
  return {snap.version, *snap.value};
}
const std::string& AtomicReference::name() const noexcept { return core_->object(); }
const std::string& AtomicReference::segment_name() const noexcept { return core_->segment_name(); }

// ---- Segment factories ----

Atom Segment::atom(std::string_view name, const json::value& initial, CreateMode mode) {
  return Atom(detail::open_core(*impl_, name, Kind::Atom, &initial, mode));
}
Atom Segment::open_atom(std::string_view name) const {
  return Atom(detail::open_core(*impl_, name, Kind::Atom, nullptr));
}
AtomicReference Segment::atomic_reference(std::string_view name, const json::value& initial, CreateMode mode) {
  return AtomicReference(detail::open_core(*impl_, name, Kind::Reference, &initial, mode));
}
AtomicReference Segment::open_atomic_reference(std::string_view name) const {
  return AtomicReference(detail::open_core(*impl_, name, Kind::Reference, nullptr));
}

// ---- the kind descriptors of atom and reference (kind.hpp) ----
//
// A reference is an atom underneath (same state, another face), so both
// kinds share these operations, each opening the object as its own kind.

namespace detail {
namespace {

template <Kind K>
std::shared_ptr<AtomCore> core_of(const Segment& s, std::string_view object) {
  return open_core(s.impl(), object, K, nullptr);
}

template <Kind K>
bool create_atom(Segment& s, std::string_view object, const CreateRequest& r) {
  bool created = false;
  open_core(s.impl(), object, K, &r.initial, CreateMode::OpenOrCreate, &created);
  return created;
}

template <Kind K>
json::value atom_value(const Segment& s, const ObjectInfo& o) {
  return *core_of<K>(s, o.name)->read().value;
}

// dump's check beyond the value: a damaged inactive buffer descriptor would
// otherwise show only when the next write refuses it.
void check_inactive(const AtomCore& core) {
  if (std::string p = core.inactive_problem(); !p.empty()) throw Error(ErrorCode::Corrupt, p);
}

json::object versioned(const AtomSnapshot& snap) {
  json::object out;
  out["value"] = *snap.value;
  out["version"] = snap.version;
  return out;
}

// {value, version}, read together (dump --json).
template <Kind K>
json::object atom_state(const Segment& s, const ObjectInfo& o) {
  auto core = core_of<K>(s, o.name);
  auto snap = core->read();
  check_inactive(*core);
  return versioned(snap);
}

template <Kind K>
std::string atom_text(const Segment& s, const ObjectInfo& o, std::size_t width) {
  auto core = core_of<K>(s, o.name);
  auto snap = core->read();
  check_inactive(*core);
  return "v" + std::to_string(snap.version) + " " + inspect::excerpt(inspect::to_text(*snap.value), width);
}

template <Kind K>
void atom_set(const Segment& s, const ObjectInfo& o, const json::value& v) {
  core_of<K>(s, o.name)->reset(v);
}

template <Kind K>
json::value atom_swap(const Segment& s, const ObjectInfo& o, const SwapFunction& f) {
  return *core_of<K>(s, o.name)->swap(f).second;
}

// {value, version}: the same pair as state, from one consistent read (the
// inactive buffer is not looked at: a snapshot is how a damaged segment's
// values are saved).
template <Kind K>
json::value atom_snapshot(const Segment& s, const ObjectInfo& o) {
  return versioned(core_of<K>(s, o.name)->read());
}

// The largest version a state word can carry (version << 1 | buffer).
constexpr std::uint64_t kMaxAtomVersion = ~std::uint64_t{0} >> 1;

template <Kind K>
void atom_restore(Segment& s, std::string_view object, const json::value& saved) {
  if (!saved.is_object()) throw wrong_state(s, object, K, "not a JSON object with \"value\" and \"version\"");
  const json::object& o = saved.get_object();
  const json::value* value = o.if_contains("value");
  const json::value* version = o.if_contains("version");
  if (value == nullptr) throw wrong_state(s, object, K, "no \"value\"");
  std::uint64_t v = 0;
  if (version != nullptr && version->is_int64() && version->get_int64() >= 0)
    v = static_cast<std::uint64_t>(version->get_int64());
  else if (version != nullptr && version->is_uint64())
    v = version->get_uint64();
  else
    throw wrong_state(s, object, K, "\"version\" is missing or not a non-negative integer");
  if (v > kMaxAtomVersion) throw wrong_state(s, object, K, "\"version\" " + std::to_string(v) + " is above 2^63 - 1");
  SegmentImpl& segment = s.impl();
  std::string bytes;
  try {
    bytes = encode_storable(*value, [&] { return segment.where(object); });
  } catch (const Error& e) {
    throw wrong_state(s, object, K, e.what());
  }
  segment.find_or_create(object, K, sizeof(AtomState), alignof(AtomState),
                         [&](std::byte* p) { init_atom_state(segment, p, K, bytes, object, v); },
                         CreateMode::Exclusive);
}

template <Kind K>
constexpr KindDescriptor atom_descriptor(std::string_view name) {
  return {.kind = K,
          .name = name,
          .create = &create_atom<K>,
          .value = &atom_value<K>,
          .state = &atom_state<K>,
          .text = &atom_text<K>,
          .set = &atom_set<K>,
          .swap = &atom_swap<K>,
          .snapshot = &atom_snapshot<K>,
          .restore = &atom_restore<K>};
}

}  // namespace

const KindDescriptor& atom_kind() {
  static constexpr KindDescriptor d = atom_descriptor<Kind::Atom>("atom");
  return d;
}

const KindDescriptor& reference_kind() {
  static constexpr KindDescriptor d = atom_descriptor<Kind::Reference>("reference");
  return d;
}

}  // namespace detail
}  // namespace shmstate
