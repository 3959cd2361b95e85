// shmstate/inspect.hpp: every object as JSON, by name and kind.
//
// The library side of the `shmstate` CLI, usable by any program that wants to
// look at or poke a segment without knowing its objects' types at compile
// time. Values in and out are boost::json values: bool for bool, integer for
// int64, number for double. Each kind describes itself once, beside its
// primitive (lib/primitives/kind.hpp); the functions below dispatch on that
// table, so an operation a kind lacks is Error(KindMismatch) naming the
// object, its kind and the kinds that have the operation.
//
// The JSON documents' keys are stable and listed in docs/cli.md.
#pragma once

#include <shmstate/config.hpp>

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>

#include <shmstate/segment.hpp>

namespace shmstate::inspect {

// Parses JSON text exactly (each double is the one nearest its decimal text,
// bit for bit; integers stay int64/uint64), nesting at most 512 levels;
// throws Error(InvalidArgument) naming `what` on bad input.
SHMSTATE_API boost::json::value parse_json(std::string_view text, std::string_view what);

// One line of JSON text (no newline). Unlike boost::json::serialize, doubles
// are written in their shortest round-trip decimal form and always as
// doubles: 0.1 -> "0.1", 3.0 -> "3.0", 1e20 -> "1e+20" (Boost 1.81 writes
// "1E-1", "3E0"). Parsing the text gives back the same value, bit for bit.
SHMSTATE_API std::string to_text(const boost::json::value& value);

// At most `max` bytes of `text` on one line, for quoting values in
// messages: control characters (newlines included) become spaces, and a
// longer text is cut (never inside a UTF-8 sequence) and ends in "...".
// REQUIRES: max >= 3.
SHMSTATE_API std::string excerpt(std::string_view text, std::size_t max = 60);

// The kinds create() accepts, in Kind order: what `shmstate new` offers.
SHMSTATE_API std::vector<Kind> creatable_kinds();

// An option of `shmstate new SEG KIND NAME` that takes a value, for kinds
// that need more than an initial value (FifoLock's --modes). The views point
// at static storage: they stay valid for the life of the program.
struct CreateOption {
  std::string_view name;        // without dashes: "modes" is --modes
  std::string_view value_name;  // "MODES", for the usage text
  std::string_view help;        // one line
};
// (name, value) pairs as given, name without dashes.
using CreateOptions = std::vector<std::pair<std::string, std::string>>;

// The options create() takes for `kind` (empty for most kinds).
SHMSTATE_API std::span<const CreateOption> create_options(Kind kind);

// Segment::remove() for the CLI: throws NotFound ("segment 'x': no such
// segment") instead of returning false; LayoutMismatch for a foreign file.
SHMSTATE_API void remove(std::string_view segment);

// The current value of an object; for a kind with state but no plain value
// (a lock), its state as in dump_json. Throws NotFound, Corrupt.
SHMSTATE_API boost::json::value get(const Segment& segment, std::string_view object);

// Creates `object` of `kind` with `initial` (null: the kind's zero value)
// and the kind's `options`. Throws AlreadyExists exactly when this call did
// not create the object: the name was taken (whatever its kind), also by a
// creator in another process racing this call. InvalidArgument if `initial`
// or an option does not fit the kind (an option the kind does not take
// included), or the kind cannot be created this way; SegmentFull. Nothing
// is created when it throws.
SHMSTATE_API void create(Segment& segment, Kind kind, std::string_view object, const boost::json::value& initial,
            const CreateOptions& options = {});

// get, set, swap and add throw NotFound for a missing object and
// KindMismatch for a kind without that operation.

// Sets the value. Throws InvalidArgument (wrong JSON type for the kind: the
// message names object, kind and a short prefix of the JSON given).
SHMSTATE_API void set(const Segment& segment, std::string_view object, const boost::json::value& value);

// Replaces an atom's or reference's value with f(current), retrying with the
// newer value if another writer won meanwhile (f may run several times).
// Returns the new value. Throws whatever f throws.
SHMSTATE_API boost::json::value swap(const Segment& segment, std::string_view object,
                        const std::function<boost::json::value(const boost::json::value&)>& f);

// Adds `delta` to an int64 or double; returns the new value.
SHMSTATE_API boost::json::value add(const Segment& segment, std::string_view object, const boost::json::value& delta);

// The documents behind `shmstate list --json` and `shmstate dump --json`.
SHMSTATE_API boost::json::value segment_json(const SegmentInfo& info);
SHMSTATE_API boost::json::value list_json(const std::vector<SegmentInfo>& segments);
SHMSTATE_API boost::json::value dump_json(const Segment& segment);

// The same for people: aligned columns, long values shortened.
SHMSTATE_API std::string list_text(const std::vector<SegmentInfo>& segments);
SHMSTATE_API std::string dump_text(const Segment& segment);

// For `shmstate snapshot --every`: takes a snapshot of `segment` (as
// Segment::snapshot does) and writes it to `path` only if its document differs
// from `last`, the document this wrote before (empty: always write). The
// comparison is of the whole document, so it is exact: any object's value,
// version or token counter changing, or an object appearing, is a change.
// Returns true if it wrote; `last` is then the document written. Throws what
// Segment::snapshot throws (the file is then as it was).
SHMSTATE_API bool snapshot_if_changed(const Segment& segment, const std::string& path, std::string& last);

}  // namespace shmstate::inspect
