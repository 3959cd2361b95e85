// Segment::snapshot and Segment::restore: the kinds' own snapshot/restore
// (lib/primitives/kind.hpp) inside the codec's envelope, written by the
// durable replace and restored into a segment published whole.
#include "store/segment_snapshot.hpp"

#include <utility>

#include <shmstate/inspect.hpp>

#include "platform/durable_file.hpp"
#include "platform/system_error.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

namespace detail {

std::string snapshot_what(const std::string& path) { return "snapshot '" + path + "'"; }

SnapshotDocument take_snapshot(const Segment& segment) {
  SegmentInfo info = segment.info();
  SnapshotDocument doc;
  doc.segment = segment.name();
  doc.options.size = static_cast<std::size_t>(info.size);
  doc.options.max_objects = info.max_objects;
  // info.mode is 0 when the name is gone (removed while we hold it open).
  doc.options.mode = (info.mode & 0777) != 0 ? (info.mode & 0777) : 0600;
  for (const ObjectInfo& o : segment.objects()) {
    const KindDescriptor& d =
        require_operation(segment, o, &KindDescriptor::snapshot, "snapshot", "no state a snapshot can save");
    doc.objects.push_back({o.name, o.kind, d.snapshot(segment, o)});
  }
  return doc;
}

void write_snapshot(const std::string& path, std::string_view bytes, unsigned mode) {
  platform::ReplaceOptions ro;
  ro.new_file_mode = mode & 0666;
  platform::replace_file_durably(path, bytes, ro, snapshot_what(path));
}

namespace {

// What the kinds' restore throw for a document they cannot take is Corrupt
// already; InvalidArgument (a value that cannot be stored), KindMismatch and
// AlreadyExists can only come from a damaged document too. SegmentFull and
// system errors keep their codes. Every message is prefixed with the file.
[[noreturn]] void rethrow_for_file(const Error& e, const std::string& what) {
  ErrorCode code = e.code();
  if (code == ErrorCode::InvalidArgument || code == ErrorCode::KindMismatch || code == ErrorCode::AlreadyExists)
    code = ErrorCode::Corrupt;
  throw Error(code, what + ": " + e.what());
}

}  // namespace

std::optional<Segment> restore_segment(std::string_view name, const std::string& path, const RestoreOptions& options,
                                       bool missing_ok) {
  validate_segment_name(name);
  const std::string what = snapshot_what(path);
  auto bytes = platform::read_whole_file(path, what);
  if (!bytes) {
    if (missing_ok) return std::nullopt;
    throw Error(ErrorCode::NotFound, what + ": no such file (restoring " + platform::where(name) + ")");
  }
  SnapshotDocument doc = decode_snapshot(*bytes, what);
  // Every kind must be restorable before anything is built.
  for (const SavedObject& o : doc.objects) {
    const KindDescriptor* d = find_kind(o.kind);
    if (d == nullptr || d->restore == nullptr)
      throw Error(ErrorCode::LayoutMismatch, what + ": object '" + o.name + "' is " + a_kind(o.kind) +
                                                 ", which this library cannot restore");
  }
  SegmentOptions seg = doc.options;
  bool overridden = options.size || options.mode || options.max_objects;
  if (options.size) seg.size = *options.size;
  if (options.mode) seg.mode = *options.mode;
  if (options.max_objects) seg.max_objects = *options.max_objects;
  if (doc.objects.size() > seg.max_objects)
    throw Error(ErrorCode::SegmentFull, what + ": " + std::to_string(doc.objects.size()) +
                                            " objects do not fit max_objects " + std::to_string(seg.max_objects));
  auto fill = [&](Segment& segment) {
    for (const SavedObject& o : doc.objects) {
      try {
        find_kind(o.kind)->restore(segment, o.name, o.state);
      } catch (const Error& e) {
        rethrow_for_file(e, what);
      }
    }
  };
  try {
    return create_segment(name, seg, fill);
  } catch (const Error& e) {
    // Bad options are the file's fault unless the caller chose some of them.
    if (e.code() == ErrorCode::InvalidArgument && !overridden)
      throw Error(ErrorCode::Corrupt, what + ": the saved segment options are invalid: " + e.what());
    throw;
  }
}

}  // namespace detail

void Segment::snapshot(const std::string& path) const {
  detail::SnapshotDocument doc = detail::take_snapshot(*this);
  detail::write_snapshot(path, detail::encode_snapshot(doc), doc.options.mode);
}

bool inspect::snapshot_if_changed(const Segment& segment, const std::string& path, std::string& last) {
  detail::SnapshotDocument doc = detail::take_snapshot(segment);
  std::string bytes = detail::encode_snapshot(doc);
  if (!last.empty() && bytes == last) return false;
  detail::write_snapshot(path, bytes, doc.options.mode);
  last = std::move(bytes);
  return true;
}

Segment Segment::restore(std::string_view name, const std::string& path, const RestoreOptions& options) {
  return *detail::restore_segment(name, path, options, /*missing_ok=*/false);
}

}  // namespace shmstate
