// Segment snapshots: taking one (every object through its kind's snapshot),
// writing it durably, and restoring a segment from one. The file format is
// snapshot_codec.hpp's; Segment::snapshot/restore (segment.hpp) are the
// public face, and `shmstate snapshot --every` uses take_snapshot to write
// only when something changed.
#pragma once

#include <string>
#include <string_view>

#include <shmstate/segment.hpp>

#include "store/snapshot_codec.hpp"

namespace shmstate::detail {

// "snapshot '<path>'": how messages about the file start.
std::string snapshot_what(const std::string& path);

// Every object of `segment`, each captured atomically by its kind's
// snapshot, plus the segment's size, max_objects and mode. Throws
// KindMismatch for a kind without snapshot, Corrupt for a damaged object.
SnapshotDocument take_snapshot(const Segment& segment);

// Replaces the file at `path` by `bytes` (encode_snapshot's) durably; a new
// file gets `mode` & 0666.
void write_snapshot(const std::string& path, std::string_view bytes, unsigned mode);

}  // namespace shmstate::detail
