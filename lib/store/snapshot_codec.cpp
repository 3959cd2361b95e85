#include "store/snapshot_codec.hpp"

#include <set>

#include <boost/json/serialize.hpp>

#include <shmstate/error.hpp>

#include "platform/system_error.hpp"
#include "primitives/json_storable.hpp"
#include "segment/segment_impl.hpp"
#include "store/json_text.hpp"

namespace shmstate::detail {

namespace json = boost::json;

std::string encode_snapshot(const SnapshotDocument& doc) {
  json::object seg;
  seg["name"] = doc.segment;
  seg["size"] = static_cast<std::uint64_t>(doc.options.size);
  seg["max_objects"] = doc.options.max_objects;
  seg["mode"] = doc.options.mode;
  json::array objects;
  for (const auto& o : doc.objects) {
    json::object e;
    e["name"] = o.name;
    e["kind"] = kind_name(o.kind);
    e["state"] = o.state;
    objects.push_back(std::move(e));
  }
  json::object top;
  top["format"] = kSnapshotFormat;
  top["version"] = kSnapshotVersion;
  top["segment"] = std::move(seg);
  top["objects"] = std::move(objects);
  json::value v = std::move(top);
  return encode_storable(v, [&] { return "snapshot of " + platform::where(doc.segment); }) + "\n";
}

namespace {

[[noreturn]] void corrupt(std::string_view what, const std::string& why) {
  throw Error(ErrorCode::Corrupt, std::string(what) + ": " + why);
}

const json::value& field(const json::object& o, std::string_view key, std::string_view what, const std::string& in) {
  auto it = o.find(key);
  if (it == o.end()) corrupt(what, in + " has no \"" + std::string(key) + "\"");
  return it->value();
}

std::uint64_t unsigned_field(const json::object& o, std::string_view key, std::string_view what, const std::string& in,
                             std::uint64_t max) {
  const json::value& v = field(o, key, what, in);
  std::uint64_t n = 0;
  if (v.is_int64() && v.get_int64() >= 0) n = static_cast<std::uint64_t>(v.get_int64());
  else if (v.is_uint64()) n = v.get_uint64();
  else corrupt(what, in + ": \"" + std::string(key) + "\" is not a non-negative integer");
  if (n > max) corrupt(what, in + ": \"" + std::string(key) + "\" is " + std::to_string(n) + ", at most " +
                                 std::to_string(max) + " allowed");
  return n;
}

std::string string_field(const json::object& o, std::string_view key, std::string_view what,
                               const std::string& in) {
  const json::value& v = field(o, key, what, in);
  if (!v.is_string()) corrupt(what, in + ": \"" + std::string(key) + "\" is not a string");
  return std::string(v.get_string());
}

}  // namespace

SnapshotDocument decode_snapshot(std::string_view bytes, std::string_view what) {
  json::value v = parse_json_document(bytes, what);
  if (!v.is_object()) corrupt(what, "not a snapshot: the document is not a JSON object");
  const json::object& top = v.get_object();
  auto fmt = top.find("format");
  if (fmt == top.end() || !fmt->value().is_string() || fmt->value().get_string() != kSnapshotFormat)
    throw Error(ErrorCode::LayoutMismatch,
                std::string(what) + ": not a shmstate snapshot (no \"format\": \"shmstate-snapshot\")");
  auto ver = top.find("version");
  if (ver == top.end() || !ver->value().is_int64())
    corrupt(what, "the snapshot has no integer \"version\"");
  if (ver->value().get_int64() != kSnapshotVersion)
    throw Error(ErrorCode::LayoutMismatch, std::string(what) + ": snapshot format version " +
                                               std::to_string(ver->value().get_int64()) +
                                               (ver->value().get_int64() > kSnapshotVersion ? " is newer than" : " is not") +
                                               " this library's (" + std::to_string(kSnapshotVersion) + ")");
  SnapshotDocument doc;
  const json::value& segv = field(top, "segment", what, "the snapshot");
  if (!segv.is_object()) corrupt(what, "\"segment\" is not an object");
  const json::object& seg = segv.get_object();
  doc.segment = string_field(seg, "name", what, "\"segment\"");
  doc.options.size = static_cast<std::size_t>(unsigned_field(seg, "size", what, "\"segment\"", std::uint64_t{1} << 40));
  doc.options.max_objects =
      static_cast<std::uint32_t>(unsigned_field(seg, "max_objects", what, "\"segment\"", kMaxRegistryCapacity));
  doc.options.mode = static_cast<unsigned>(unsigned_field(seg, "mode", what, "\"segment\"", 0777));

  const json::value& objv = field(top, "objects", what, "the snapshot");
  if (!objv.is_array()) corrupt(what, "\"objects\" is not an array");
  const json::array& objects = objv.get_array();
  if (objects.size() > doc.options.max_objects)
    corrupt(what, std::to_string(objects.size()) + " objects, more than max_objects " +
                      std::to_string(doc.options.max_objects));
  std::set<std::string> seen;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    std::string in = "object #" + std::to_string(i);
    if (!objects[i].is_object()) corrupt(what, in + " is not a JSON object");
    const json::object& o = objects[i].get_object();
    SavedObject s;
    s.name = string_field(o, "name", what, in);
    in += " ('" + s.name + "')";
    try {
      validate_object_name(doc.segment, s.name);
    } catch (const Error& e) {
      corrupt(what, in + ": " + e.what());
    }
    if (!seen.insert(s.name).second) corrupt(what, in + ": the name appears twice");
    std::string kind = string_field(o, "kind", what, in);
    auto k = parse_kind(kind);
    if (!k) corrupt(what, in + ": unknown kind '" + kind + "'");
    s.kind = *k;
    s.state = field(o, "state", what, in);
    doc.objects.push_back(std::move(s));
  }
  return doc;
}

}  // namespace shmstate::detail
