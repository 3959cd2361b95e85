// shmstate/inspect.hpp: every object as JSON, by name and kind.
//
// The library side of the `shmstate` CLI, usable by any program that wants to
// look at or poke a segment without knowing its objects' types at compile
// time. Values in and out are boost::json values: bool for bool, integer for
// int64, number for double. Each kind added to shmstate adds itself here.
//
// The JSON documents' keys are stable and listed in docs/cli.md.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include <shmstate/segment.hpp>

namespace shmstate::inspect {

// Parses JSON text; throws Error(InvalidArgument) naming `what` on bad input.
boost::json::value parse_json(std::string_view text, std::string_view what);

// One line of JSON text (no newline). Unlike boost::json::serialize, doubles
// are written in their shortest round-trip decimal form and always as
// doubles: 0.1 -> "0.1", 3.0 -> "3.0", 1e20 -> "1e+20" (Boost 1.81 writes
// "1E-1", "3E0"). Parsing the text gives back the same value, bit for bit.
std::string to_text(const boost::json::value& value);

// The kinds create() accepts, in Kind order: what `shmstate new` offers.
// Keep in step with create().
std::vector<Kind> creatable_kinds();

// Segment::remove() for the CLI: throws NotFound ("segment 'x': no such
// segment") instead of returning false; LayoutMismatch for a foreign file.
void remove(std::string_view segment);

// The current value of any object. Throws NotFound, Corrupt.
boost::json::value get(const Segment& segment, std::string_view object);

// Creates `object` of `kind` with `initial` (null: the kind's zero value).
// Throws AlreadyExists if the name is taken (whatever its kind; a creator
// racing this call with the same name and kind may go unnoticed),
// InvalidArgument if `initial` does not fit the kind, SegmentFull.
void create(Segment& segment, Kind kind, std::string_view object, const boost::json::value& initial);

// Sets the value. Throws NotFound, InvalidArgument (wrong JSON type for the
// kind: the message names object, kind and the JSON given), KindMismatch for
// kinds that have no plain value.
void set(const Segment& segment, std::string_view object, const boost::json::value& value);

// Replaces an atom's or reference's value with f(current), retrying with the
// newer value if another writer won meanwhile (f may run several times).
// Returns the new value. Throws NotFound, KindMismatch, whatever f throws.
boost::json::value swap(const Segment& segment, std::string_view object,
                        const std::function<boost::json::value(const boost::json::value&)>& f);

// Adds `delta` to an int64 or double; returns the new value.
boost::json::value add(const Segment& segment, std::string_view object, const boost::json::value& delta);

// The documents behind `shmstate list --json` and `shmstate dump --json`.
boost::json::value segment_json(const SegmentInfo& info);
boost::json::value list_json(const std::vector<SegmentInfo>& segments);
boost::json::value dump_json(const Segment& segment);

// The same for people: aligned columns, long values shortened.
std::string list_text(const std::vector<SegmentInfo>& segments);
std::string dump_text(const Segment& segment);

}  // namespace shmstate::inspect
