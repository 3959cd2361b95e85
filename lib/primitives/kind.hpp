// Internal: the one table of object kinds (ARCHITECTURE.md, "Kinds in one place").
//
// Each kind of object has one KindDescriptor, defined beside its primitive
// (lib/primitives/<kind>.cpp). inspect (get, new, set, add, swap, dump), the
// CLI (through inspect), kind_name()/parse_kind() and segment snapshots all
// iterate kinds(): nothing else in lib/ or tools/ switches over Kind.
//
// How to add a kind
//   1. Its Kind value in include/shmstate/segment.hpp (stored in segments:
//      never renumber).
//   2. In the primitive's file, a function returning its descriptor:
//        const KindDescriptor& fifo_lock_kind() {
//          static constexpr KindDescriptor d{.kind = Kind::FifoLock, .name = "fifo_lock",
//                                            .create = &create_fifo_lock, .state = &fifo_lock_state, ...};
//          return d;
//        }
//      Fill the operations the kind has; leave the others null. A null
//      operation is the kind lacking it: inspect reports KindMismatch for it,
//      once, in require_operation() ("... a fifo_lock has no value to set").
//   3. In lib/primitives/kinds.cpp, its declaration and one line in the table.
//   `shmstate new KIND` (and its --help), get, dump and snapshots then know it.
//
// Every operation receives the ObjectInfo of a registry entry that has this
// descriptor's kind (inspect looked it up and dispatched on it); it opens the
// object through its primitive's handle, which validates the state again.
// Messages name the segment and the object (platform::where) and use
// a_kind() for "a bool" / "an int64".
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

namespace shmstate::detail {

// What `create` gets: the initial value and this kind's options as given.
struct CreateRequest {
  const boost::json::value& initial;  // null: the kind's zero value or default state
  // (name without dashes, value), in the order given; inspect::create has
  // already refused names that are not in the descriptor's create_options.
  const inspect::CreateOptions& options;

  // The last value given for option `name`, or nullptr.
  const std::string* option(std::string_view name) const {
    const std::string* found = nullptr;
    for (const auto& [n, v] : options)
      if (n == name) found = &v;
    return found;
  }
};

using SwapFunction = std::function<boost::json::value(const boost::json::value&)>;

struct KindDescriptor {
  Kind kind;
  std::string_view name;  // kind_name(kind); also the KIND of `shmstate new`
  // Options `shmstate new SEG KIND NAME` takes for this kind (FifoLock's --modes).
  std::span<const inspect::CreateOption> create_options = {};

  // ---- Operations; null: the kind has none. ----

  // `new`: creates `object` from the request. Returns true if this call
  // created it, false if an object of that name and kind already existed (it
  // is left as it was). Validates the request before creating anything
  // (InvalidArgument: nothing is created). May throw KindMismatch when the
  // name holds another kind, SegmentFull.
  bool (*create)(Segment& segment, std::string_view object, const CreateRequest& request) = nullptr;

  // `get`: the plain value as JSON. A kind with state but no plain value
  // (a lock) leaves it null; `get` then prints state().
  boost::json::value (*value)(const Segment& segment, const ObjectInfo& object) = nullptr;

  // `dump --json`: the keys this object adds after name, kind, offset and
  // size ({"value": ...} when null and value is set; {"value", "version"} for
  // atoms; mode table, holders, waiters for locks). Must not wait on other
  // processes: dump works while a holder is stuck.
  boost::json::object (*state)(const Segment& segment, const ObjectInfo& object) = nullptr;

  // dump's text for people: the VALUE column's text, one line per line of
  // the result ('\n' between lines, none at the end; later lines are printed
  // indented under the object). Keep the first line within `width`
  // characters (use inspect::excerpt). Null: excerpt(to_text(get), width).
  std::string (*text)(const Segment& segment, const ObjectInfo& object, std::size_t width) = nullptr;

  // `set`: replaces the value. InvalidArgument if the JSON does not fit.
  void (*set)(const Segment& segment, const ObjectInfo& object, const boost::json::value& value) = nullptr;

  // `add`: adds delta, returns the new value.
  boost::json::value (*add)(const Segment& segment, const ObjectInfo& object,
                            const boost::json::value& delta) = nullptr;

  // `swap`: value = f(value), retried on conflict (f may run several times);
  // returns the new value.
  boost::json::value (*swap)(const Segment& segment, const ObjectInfo& object, const SwapFunction& f) = nullptr;

  // ---- Segment snapshots (Segment::snapshot / Segment::restore) ----
  //
  // snapshot: the object's persistent state as one JSON value, captured
  // atomically for this object (one load, one seqlock read, or a short hold of
  // the object's own mutex; never a wait on another process's progress). It
  // must be exact: restore(snapshot(x)) gives back every persisted bit (doubles
  // bit for bit, NaN and infinities included: JSON has no literal for them, so
  // a kind encodes them in its own state, e.g. as strings). The value must be
  // storable (encode_storable): no NaN doubles, depth <= kMaxJsonDepth.
  // What a kind persists and what it drops is part of its contract: locks keep
  // their mode table and token counter but not holders or waiters (those
  // processes are gone after a restore); counters that order events (atom
  // versions, fencing tokens) are restored equal to the snapshot's, so they
  // never go backwards relative to it.
  //
  // restore: creates `object` in `segment` from what snapshot returned. The
  // segment is being restored and is not yet published (no other process can
  // open it), but restore still creates through the ordinary creation path
  // (SegmentImpl::find_or_create, CreateMode::Exclusive). `saved` comes from a
  // file and is untrusted: check every field before creating anything, and
  // throw Error(Corrupt) naming the object (wrong_state() below) for a document
  // it cannot take. May throw SegmentFull. The caller prefixes messages with
  // the snapshot's path and removes the half-built segment on any error.
  //
  // A kind with a null snapshot makes Segment::snapshot of a segment holding
  // one fail (KindMismatch, naming it); a null restore makes a snapshot that
  // holds one a LayoutMismatch (another library wrote it).
  boost::json::value (*snapshot)(const Segment& segment, const ObjectInfo& object) = nullptr;
  void (*restore)(Segment& segment, std::string_view object, const boost::json::value& saved) = nullptr;
};

// Every known kind, in Kind order.
std::span<const KindDescriptor* const> kinds() noexcept;

// The descriptor of `kind`, or nullptr for a value no kind has.
const KindDescriptor* find_kind(Kind kind) noexcept;

// "a bool", "an int64", "an atom": the one place articles are chosen.
std::string a_kind(Kind kind);

// The descriptor of `object`'s kind if it has operation `op`; otherwise
// throws Error(KindMismatch): "<where>: a fifo_lock has <lacking> (<verb>
// works on bool, int64 and double)". `lacking` is e.g. "no value to set".
template <class Op>
const KindDescriptor& require_operation(const Segment& segment, const ObjectInfo& object,
                                        Op KindDescriptor::*op, std::string_view verb, std::string_view lacking);

// "bool, int64 and double": the kinds that have operation `op`.
template <class Op>
std::string kinds_with(Op KindDescriptor::*op);

// Error(Corrupt) for a restore: "<where>: saved state of an atom: <why>".
Error wrong_state(const Segment& segment, std::string_view object, Kind kind, std::string_view why);

// Error(InvalidArgument): "<where>: an int64 takes <expected>, not <value>",
// the value quoted as a short one-line prefix of its shortest-form text.
Error wrong_json(const Segment& segment, std::string_view object, Kind kind, const boost::json::value& value,
                 std::string_view expected);

// ---- implementation of the templates ----

std::string join_kind_names(const std::vector<std::string_view>& names);
[[noreturn]] void throw_lacking(const Segment& segment, const ObjectInfo& object, std::string_view verb,
                                std::string_view lacking, const std::string& kinds_having);

template <class Op>
std::string kinds_with(Op KindDescriptor::*op) {
  std::vector<std::string_view> names;
  for (const auto* d : kinds())
    if (d->*op != nullptr) names.push_back(d->name);
  return join_kind_names(names);
}

template <class Op>
const KindDescriptor& require_operation(const Segment& segment, const ObjectInfo& object,
                                        Op KindDescriptor::*op, std::string_view verb, std::string_view lacking) {
  const KindDescriptor* d = find_kind(object.kind);
  if (d == nullptr || d->*op == nullptr) throw_lacking(segment, object, verb, lacking, kinds_with(op));
  return *d;
}

}  // namespace shmstate::detail
