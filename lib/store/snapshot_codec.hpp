// The file format of segment snapshots: one versioned JSON document holding
// the segment's creation options and each object's saved state.
//
//   {"format": "shmstate-snapshot", "version": 1,
//    "segment": {"name": "jobs", "size": 1048576, "max_objects": 256, "mode": 384},
//    "objects": [{"name": "done", "kind": "int64", "state": 5}, ...]}
//
// "state" is whatever the kind's descriptor snapshot returned (lib/primitives/
// kind.hpp); this codec only checks the envelope. It is the reading side of
// untrusted bytes: every field is checked before anything is built from it.
//
// Not yet wired up: Segment::snapshot/restore (issue 10, step 3) will write
// and read files through these functions once the kind table's snapshot and
// restore slots are filled.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include <shmstate/segment.hpp>

namespace shmstate::detail {

inline constexpr std::string_view kSnapshotFormat = "shmstate-snapshot";
inline constexpr std::int64_t kSnapshotVersion = 1;

struct SavedObject {
  std::string name;
  Kind kind;
  boost::json::value state;
};

struct SnapshotDocument {
  std::string segment;     // the name it was taken from (restore may use another)
  SegmentOptions options;  // size, max_objects, mode of that segment
  std::vector<SavedObject> objects;
};

// The document's bytes: compact JSON and a final newline. Throws
// InvalidArgument if a state cannot be stored as JSON (NaN, depth, UTF-8).
std::string encode_snapshot(const SnapshotDocument& doc);

// Parses and checks a snapshot. `what` starts messages ("snapshot '/x.json'").
// Throws Error(LayoutMismatch) for another format or a newer version (naming
// both versions), Error(Corrupt) for anything else wrong: not JSON (with the
// byte, line and column), a missing or mistyped field, an unknown kind, a bad
// or repeated object name, more objects than max_objects.
SnapshotDocument decode_snapshot(std::string_view bytes, std::string_view what);

}  // namespace shmstate::detail
