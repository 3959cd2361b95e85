#include <shmstate/inspect.hpp>

#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>
#include <sstream>

#include <boost/json.hpp>

#include "platform/system_error.hpp"
#include "primitives/json_storable.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate::inspect {

namespace json = boost::json;

namespace {

std::string where(const Segment& s, std::string_view object) { return platform::where(s.name(), object); }

ObjectInfo require(const Segment& segment, std::string_view object) {
  auto info = segment.find(object);
  if (!info) throw Error(ErrorCode::NotFound, where(segment, object) + ": no such object");
  return *info;
}

std::string iso_utc(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string octal_mode(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode);
  return buf;
}

using detail::KindDescriptor;
using detail::require_operation;

// get: the plain value, else the state document.
json::value value_of(const Segment& segment, const ObjectInfo& info) {
  const KindDescriptor* d = detail::find_kind(info.kind);
  if (d != nullptr && d->value != nullptr) return d->value(segment, info);
  if (d != nullptr && d->state != nullptr) return d->state(segment, info);
  return nullptr;  // a kind with neither (a placeholder): nothing to show
}

// dump --json: the keys after name, kind, offset and size.
json::object state_of(const Segment& segment, const ObjectInfo& info) {
  const KindDescriptor* d = detail::find_kind(info.kind);
  if (d != nullptr && d->state != nullptr) return d->state(segment, info);
  json::object o;
  o["value"] = value_of(segment, info);
  return o;
}

// dump's text column.
std::string text_of(const Segment& segment, const ObjectInfo& info, std::size_t width) {
  const KindDescriptor* d = detail::find_kind(info.kind);
  if (d != nullptr && d->text != nullptr) return d->text(segment, info, width);
  return excerpt(to_text(value_of(segment, info)), width);
}

}  // namespace

json::value parse_json(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::value v = detail::parse_json_exact(text, ec);
  if (ec) throw Error(ErrorCode::InvalidArgument, std::string(what) + ": invalid JSON: " + ec.message());
  return v;
}

namespace {

void append_text(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: out += "null"; return;
    case json::kind::bool_: out += v.get_bool() ? "true" : "false"; return;
    case json::kind::int64: out += std::to_string(v.get_int64()); return;
    case json::kind::uint64: out += std::to_string(v.get_uint64()); return;
    case json::kind::string: out += json::serialize(v.get_string()); return;
    case json::kind::double_: {
      double d = v.get_double();
      if (!std::isfinite(d)) {  // not JSON; Boost writes these as out-of-range literals
        out += json::serialize(v);
        return;
      }
      char buf[32];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);  // shortest round-trip form
      std::string_view digits(buf, static_cast<std::size_t>(end - buf));
      out += digits;
      if (digits.find_first_of(".e") == std::string_view::npos) out += ".0";  // stays a double
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        append_text(out, e);
      }
      out += ']';
      return;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, e] : v.get_object()) {
        if (!first) out += ',';
        first = false;
        out += json::serialize(json::string_view(key));
        out += ':';
        append_text(out, e);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

std::string to_text(const json::value& value) {
  std::string out;
  append_text(out, value);
  return out;
}

std::string excerpt(std::string_view text, std::size_t max) { return platform::excerpt(text, max); }

std::vector<Kind> creatable_kinds() {
  std::vector<Kind> out;
  for (const auto* d : detail::kinds())
    if (d->create != nullptr) out.push_back(d->kind);
  return out;
}

std::span<const CreateOption> create_options(Kind kind) {
  const KindDescriptor* d = detail::find_kind(kind);
  return d != nullptr ? d->create_options : std::span<const CreateOption>{};
}

void remove(std::string_view segment) {
  if (!Segment::remove(segment))
    throw Error(ErrorCode::NotFound, platform::where(segment) + ": no such segment");
}

json::value get(const Segment& segment, std::string_view object) {
  return value_of(segment, require(segment, object));
}

void create(Segment& segment, Kind kind, std::string_view object, const json::value& initial,
            const CreateOptions& options) {
  const KindDescriptor* d = detail::find_kind(kind);
  if (d == nullptr || d->create == nullptr)
    throw Error(ErrorCode::InvalidArgument, where(segment, object) + ": " + detail::a_kind(kind) +
                                                " cannot be created here (new works on " +
                                                detail::kinds_with(&KindDescriptor::create) + ")");
  for (const auto& [name, value] : options) {
    bool known = false;
    for (const auto& o : d->create_options) known = known || o.name == name;
    if (!known)
      throw Error(ErrorCode::InvalidArgument,
                  where(segment, object) + ": " + detail::a_kind(kind) + " takes no option --" + name);
  }
  auto already = [&](Kind existing) {
    return Error(ErrorCode::AlreadyExists, where(segment, object) + ": already exists (" +
                                               detail::a_kind(existing) + ")");
  };
  // The early check gives the usual case its message without validating
  // `initial` first; the create call below decides, races included.
  if (auto existing = segment.find(object)) throw already(existing->kind);
  bool created = false;
  try {
    created = d->create(segment, object, detail::CreateRequest{initial, options});
  } catch (const Error& e) {
    // Another process created the name as another kind since the check.
    if (e.code() != ErrorCode::KindMismatch) throw;
    auto existing = segment.find(object);
    throw already(existing ? existing->kind : kind);
  }
  if (!created) throw already(kind);  // another process won the race with the same kind
}

void set(const Segment& segment, std::string_view object, const json::value& value) {
  ObjectInfo info = require(segment, object);
  require_operation(segment, info, &KindDescriptor::set, "set", "no value to set").set(segment, info, value);
}

json::value add(const Segment& segment, std::string_view object, const json::value& delta) {
  ObjectInfo info = require(segment, object);
  return require_operation(segment, info, &KindDescriptor::add, "add", "no number to add to")
      .add(segment, info, delta);
}

json::value swap(const Segment& segment, std::string_view object,
                 const std::function<json::value(const json::value&)>& f) {
  ObjectInfo info = require(segment, object);
  return require_operation(segment, info, &KindDescriptor::swap, "swap", "no value to swap")
      .swap(segment, info, f);
}

json::value segment_json(const SegmentInfo& info) {
  json::object o;
  o["name"] = info.name;
  o["layout_version"] = info.layout_version;
  o["size"] = info.size;
  o["used"] = info.used;
  o["free"] = info.size >= info.used ? info.size - info.used : 0;
  o["max_objects"] = info.max_objects;
  o["object_count"] = info.object_count;
  o["mode"] = octal_mode(info.mode);
  o["created"] = iso_utc(info.created);
  json::object creator;
  creator["pid"] = info.creator_pid;
  creator["start_time"] = info.creator_start_time;
  creator["state"] = process_state_name(info.creator_state);
  creator["same_pid_namespace"] = info.same_pid_namespace;
  o["creator"] = std::move(creator);
  o["problem"] = info.problem.empty() ? json::value(nullptr) : json::value(info.problem);
  return o;
}

json::value list_json(const std::vector<SegmentInfo>& segments) {
  json::array a;
  for (const auto& s : segments) a.push_back(segment_json(s));
  return a;
}

json::value dump_json(const Segment& segment) {
  const auto& impl = segment.impl();
  json::object doc;
  doc["segment"] = segment_json(segment.info());
  json::object alloc;
  alloc["heap_begin"] = impl.header->heap_begin;
  alloc["heap_top"] = impl.header->heap_top.load();
  alloc["heap_end"] = impl.size;
  doc["allocator"] = std::move(alloc);
  json::array objects;
  for (const auto& info : segment.objects()) {
    json::object o;
    o["name"] = info.name;
    o["kind"] = kind_name(info.kind);
    o["offset"] = info.offset;
    o["size"] = info.size;
    for (auto& [key, value] : state_of(segment, info)) o[key] = std::move(value);
    objects.push_back(std::move(o));
  }
  doc["objects"] = std::move(objects);
  return doc;
}

std::string list_text(const std::vector<SegmentInfo>& segments) {
  std::ostringstream out;
  int width = 7;  // "SEGMENT"
  for (const auto& s : segments) width = std::max(width, static_cast<int>(s.name.size()));
  char line[512];
  std::snprintf(line, sizeof line, "%-*s %12s %12s %8s %8s  %s\n", width, "SEGMENT", "SIZE", "USED", "OBJECTS", "PID",
                "CREATOR");
  out << line;
  for (const auto& s : segments) {
    if (!s.problem.empty()) {
      std::snprintf(line, sizeof line, "%-*s %12" PRIu64 " %12s %8s %8s  ", width, s.name.c_str(), s.size, "-", "-",
                    "-");
      out << line << "unreadable: " << s.problem << "\n";
    } else {
      std::snprintf(line, sizeof line, "%-*s %12" PRIu64 " %12" PRIu64 " %8u %8d  %s\n", width, s.name.c_str(), s.size,
                    s.used, s.object_count, s.creator_pid, std::string(process_state_name(s.creator_state)).c_str());
      out << line;
    }
  }
  return out.str();
}

std::string dump_text(const Segment& segment) {
  SegmentInfo info = segment.info();
  const auto& impl = segment.impl();
  std::ostringstream out;
  out << "segment " << info.name << "  (layout " << info.layout_version << ", mode " << octal_mode(info.mode)
      << ")\n";
  out << "  size " << info.size << " bytes, used " << info.used << ", free " << (info.size - info.used) << "\n";
  out << "  heap " << impl.header->heap_begin << ".." << impl.size << ", top " << impl.header->heap_top.load()
      << "\n";
  out << "  objects " << info.object_count << " of " << info.max_objects << "\n";
  out << "  created " << iso_utc(info.created) << " by pid " << info.creator_pid << " ("
      << process_state_name(info.creator_state) << ")\n";
  if (!info.problem.empty()) out << "  problem: " << info.problem << "\n";
  auto objects = segment.objects();
  if (!objects.empty()) {
    std::size_t width = 4;
    for (const auto& o : objects) width = std::max(width, o.name.size());
    char line[256];
    std::snprintf(line, sizeof line, "\n  %-*s  %-10s  %s\n", static_cast<int>(width), "NAME", "KIND", "VALUE");
    out << line;
    for (const auto& o : objects) {
      std::snprintf(line, sizeof line, "  %-*s  %-10s  ", static_cast<int>(width), o.name.c_str(),
                    std::string(kind_name(o.kind)).c_str());
      // Later lines of a kind's text go below, under the VALUE column.
      std::string text = text_of(segment, o, 80);
      std::string indent = "\n  " + std::string(width + 14, ' ');
      for (std::size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', nl + indent.size()))
        text.replace(nl, 1, indent);
      out << line << text << "\n";
    }
  }
  return out.str();
}

}  // namespace shmstate::inspect
