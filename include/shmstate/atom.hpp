// shmstate/atom.hpp: Clojure-style atoms holding JSON values, shared by processes.
//
// An Atom holds one boost::json::value in a segment. Any process may read it
// (deref) or change it (swap, reset, compare_and_set); every change makes a
// new version, numbered from 0 (the initial value) up by one per change.
//
// Crash safety. Readers never block and can never be blocked by a writer,
// alive or dead. Writers serialise on a robust mutex; a writer killed at any
// instant leaves the atom at exactly the old value or exactly the new one
// (never a mix, always valid JSON), and the next writer goes on. How: the value
// lives in two buffers and one atomic word says (version, active buffer); a
// writer serialises into the inactive buffer and publishes with one store.
// Nothing in the published state can be half-written.
//
// Memory ordering. A deref() that returns version v sees exactly the value
// published as v, and everything the publishing process wrote before its
// change. The protocol needs, and has (issue 12, item 5):
//  - The writer stores the buffer bytes and its descriptor (relaxed atomics:
//    racing readers may see stale numbers, never torn ones), then publishes
//    the (version, buffer) word with a store that is at least release, so a
//    reader that loads the word with acquire sees those bytes. A relaxed
//    publish looks right on x86-64 (stores stay in order there) and lets an
//    aarch64 reader parse a half-copied buffer as the new version.
//  - The publish is seq_cst, not only release: the writer then loads the
//    event count's waiter word (seq_cst), and a waiter sets that word and
//    then loads the version (seq_cst). Only a single total order over these
//    four forbids "the writer sees no waiter and the waiter sees the old
//    version" (a Dekker pair; a StoreLoad reordering, allowed on x86-64 too
//    for a plain release store, would lose the wake-up until the next slice).
//  - A reader copies the buffer, then an acquire fence, then re-loads the
//    word (relaxed) and retries if it moved (a seqlock's read side): the
//    fence keeps the copy before the re-check.
// Tested on x86-64 only: the multiprocess suite was not run on aarch64 (no
// such machine was available), so a missing ordering there is unproven.
//
// Thread safety. Handles are cheap to copy (one shared_ptr) and every member
// function may be called from any thread. All handles to one atom inside one
// process share a parsed-value cache, the watches and the validator.
//
// Size. A value needs two power-of-two blocks (the published buffer and the
// one the next write fills), so an atom of n bytes of JSON can take up to
// about 4n of the segment; growing values reuse freed blocks.
//
// Per-process parts. Watches and validators are functions, so they belong to
// the process that registered them: a validator checks the changes this
// process makes; watches see the changes every process makes. Neither is
// inherited by a fork()ed child.
#pragma once

#include <shmstate/config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <boost/json/value.hpp>

#include <shmstate/segment.hpp>

namespace shmstate {

class Condition;

namespace detail {
class AtomCore;
}

class Atom;

// What a watch is told about one change, or several coalesced ones.
struct WatchEvent {
  const std::string& key;
  Atom& atom;
  const boost::json::value& old_value;  // the value at old_version
  const boost::json::value& new_value;  // the value at new_version
  std::uint64_t old_version;
  std::uint64_t new_version;
  // True if this event stands for several changes (new_version - old_version > 1):
  // the watcher fell behind another process's writes and sees only the ends.
  bool coalesced() const noexcept { return new_version - old_version > 1; }
  // True if this process made the change (for a coalesced event: all of them).
  bool own;
};

class SHMSTATE_API Atom {
 public:
  using Value = std::shared_ptr<const boost::json::value>;
  using Fn = std::function<boost::json::value(const boost::json::value&)>;
  using WatchFn = std::function<void(const WatchEvent&)>;
  using ClojureWatchFn = std::function<void(const std::string& key, Atom& atom, const boost::json::value& old_value,
                                            const boost::json::value& new_value)>;
  using Validator = std::function<bool(const boost::json::value&)>;

  // The current value. An unchanged value costs one atomic load and a cache
  // hit (no parse, no copy of the JSON: the Value is shared and immutable).
  // Throws Corrupt (naming segment and object, never a crash or a null Value)
  // if the segment holds bytes that are not valid JSON, a published word
  // whose version no count of writes reaches (above 2^62: all ones, say), or
  // an active buffer descriptor whose offset, capacity or length leaves the
  // heap or its block, or that points at what is not this atom's block (the
  // block's header says another size, another owner, or free). Every reader (deref_versioned, AtomicReference::get,
  // the CLI's get and dump) reads through this one check.
  Value deref() const;

  // The current version: 0 for the initial value, +1 per change.
  std::uint64_t version() const noexcept;

  // The value and its version, read together (deref() and version() called
  // one after the other may straddle another process's change).
  struct Versioned {
    std::uint64_t version;
    Value value;
  };
  Versioned deref_versioned() const;

  // Clojure's swap!: reads the value, calls f outside any lock, and commits
  // f's result only if no other writer committed meanwhile; else retries with
  // the newer value. f may therefore run several times and must be pure.
  // Every write (and the initial value) must be JSON that any process can
  // read back: nesting at most 512 deep, finite numbers, valid UTF-8 in
  // strings and keys; anything else is Error(InvalidArgument), nothing changes.
  //
  // Returns the new value (shared and immutable, like deref(): no copy is
  // made for the caller). An exception from f (or the validator rejecting
  // f's result: Error(Rejected)) propagates and nothing changes. Throws
  // SegmentFull if the new value does not fit (the old value stays).
  Value swap(const Fn& f);
  std::pair<Value, Value> swap_vals(const Fn& f);  // {old, new}

  // Runs f exactly once while holding the atom's writer lock: for expensive or
  // side-effecting f. Other writers wait; readers don't. If this process dies
  // inside f, the value stays the old one and the next writer gets the lock.
  Value swap_locked(const Fn& f);

  // Sets the value unconditionally; returns it. reset_vals returns {old, new}.
  // reset also repairs an atom whose stored value is damaged (every other
  // operation reports Corrupt then): old is JSON null in that case. A
  // published version beyond 2^62 is not repaired (versions never go back):
  // every write, reset too, throws Corrupt then. Nor is an inactive buffer
  // descriptor that points at what is not this atom's own block (another
  // object's block or state, say): every write throws Corrupt and writes
  // nothing, so damaged allocator data is never followed into another
  // object; the value stays readable (a segment snapshot saves it).
  Value reset(boost::json::value value);
  std::pair<Value, Value> reset_vals(boost::json::value value);

  // Sets `desired` if the current value equals `expected` as JSON (objects
  // compare regardless of key order). Returns whether it did.
  bool compare_and_set(const boost::json::value& expected, boost::json::value desired);

  // Registers fn under key (replacing one with the same key). fn runs after
  // every successful change by any process, with no shared-memory lock held:
  // for this process's own changes in the writing thread, after the change is
  // published and the lock released, before the write returns; for other
  // processes' changes on this process's dispatcher thread. Events for one
  // atom are delivered one at a time and in version order; consecutive events
  // chain (each old_version is the previous new_version). To keep that order
  // without making writers wait, an own change made while another thread of
  // this process is running this atom's watches is delivered by that thread,
  // right after (WatchEvent::own still says whose change it was). A watch may
  // write atoms, this one included. An exception from a watch is swallowed;
  // the others still run.
  void add_watch(std::string key, WatchFn fn);
  void add_watch(std::string key, ClojureWatchFn fn);
  // Removing a missing key is fine. A watch being run may still finish.
  void remove_watch(std::string_view key);

  // Values this process writes must satisfy fn (nullptr removes it); a
  // rejected value is Error(Rejected) and nothing changes. Also checked
  // against the current value when set, as Clojure does.
  void set_validator(Validator fn);

  // Blocks until version() > since_version (true) or the timeout passes
  // (false). Wakes on a change by any process, without polling.
  bool wait_for_change(std::uint64_t since_version, std::chrono::nanoseconds timeout) const;
  // The same, ended by a signal or composition (<shmstate/signal.hpp>)
  // instead of a timeout: true once version() > since_version (checked
  // first), false once `till` is set. One sleep on the atom's event count and
  // every word of `till` at once (beyond 128 words, on the watch summaries of
  // the till's segments instead of its signals' words: <shmstate/signal.hpp>). Throws Corrupt if a
  // segment signal in `till` is damaged.
  bool wait_for_change(std::uint64_t since_version, const Condition& till) const;

  const std::string& name() const noexcept;
  const std::string& segment_name() const noexcept;

 private:
  friend class Segment;
  friend class detail::AtomCore;
  explicit Atom(std::shared_ptr<detail::AtomCore> core) : core_(std::move(core)) {}
  std::shared_ptr<detail::AtomCore> core_;
};

// The plain get/set/compare-and-set face of the same mechanism
// (java.util.concurrent.atomic.AtomicReference, atomos' AtomicReference),
// with JSON value equality. Kind "reference"; no watches or validators.
class SHMSTATE_API AtomicReference {
 public:
  boost::json::value get() const;
  void set(boost::json::value value);
  boost::json::value get_and_set(boost::json::value value);
  bool compare_and_set(const boost::json::value& expected, boost::json::value desired);
  std::uint64_t version() const noexcept;
  // {version, value}, read together.
  std::pair<std::uint64_t, boost::json::value> get_versioned() const;

  const std::string& name() const noexcept;
  const std::string& segment_name() const noexcept;

 private:
  friend class Segment;
  explicit AtomicReference(std::shared_ptr<detail::AtomCore> core) : core_(std::move(core)) {}
  std::shared_ptr<detail::AtomCore> core_;
};

}  // namespace shmstate
