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

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>

#include "platform/system_error.hpp"
#include "primitives/json_storable.hpp"
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

Error wrong_type(const Segment& s, std::string_view object, Kind kind, const json::value& v,
                 std::string_view expected) {
  return Error(ErrorCode::InvalidArgument, where(s, object) + ": a " + std::string(kind_name(kind)) +
                                               " takes " + std::string(expected) + ", not " + json::serialize(v));
}

bool to_bool(const Segment& s, std::string_view o, Kind k, const json::value& v) {
  if (!v.is_bool()) throw wrong_type(s, o, k, v, "true or false");
  return v.get_bool();
}

std::int64_t to_int64(const Segment& s, std::string_view o, Kind k, const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return static_cast<std::int64_t>(v.get_uint64());
  throw wrong_type(s, o, k, v, "an integer in [-2^63, 2^63)");
}

double to_double(const Segment& s, std::string_view o, Kind k, const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  throw wrong_type(s, o, k, v, "a number");
}

// JSON has no NaN or infinity; show them as strings rather than lie.
json::value double_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return d;
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

json::value value_of(const Segment& segment, const ObjectInfo& info) {
  switch (info.kind) {
    case Kind::Bool: return segment.open_atomic<bool>(info.name).get();
    case Kind::Int64: return segment.open_atomic<std::int64_t>(info.name).get();
    case Kind::Double: return double_json(segment.open_atomic<double>(info.name).get());
    case Kind::Atom: return *segment.open_atom(info.name).deref();
    case Kind::Reference: return segment.open_atomic_reference(info.name).get();
    default: return nullptr;  // kinds without a plain value yet
  }
}

// {version, value} of an atom or reference, read together; nullopt for other kinds.
std::optional<std::pair<std::uint64_t, json::value>> versioned(const Segment& segment, const ObjectInfo& info) {
  if (info.kind != Kind::Atom && info.kind != Kind::Reference) return std::nullopt;
  // A reference is an atom underneath (same state, another face); opening it
  // as an Atom would be a KindMismatch, so read through the matching handle.
  if (info.kind == Kind::Atom) {
    auto v = segment.open_atom(info.name).deref_versioned();
    return std::make_pair(v.version, *v.value);
  }
  auto ref = segment.open_atomic_reference(info.name);
  return ref.get_versioned();
}

std::string shorten(std::string s, std::size_t max) {
  if (s.size() > max) {
    s.resize(max - 3);
    s += "...";
  }
  return s;
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

std::vector<Kind> creatable_kinds() {
  return {Kind::Bool, Kind::Int64, Kind::Double, Kind::Atom, Kind::Reference};
}

void remove(std::string_view segment) {
  if (!Segment::remove(segment))
    throw Error(ErrorCode::NotFound, platform::where(segment) + ": no such segment");
}

json::value get(const Segment& segment, std::string_view object) {
  return value_of(segment, require(segment, object));
}

void create(Segment& segment, Kind kind, std::string_view object, const json::value& initial) {
  if (auto existing = segment.find(object))
    throw Error(ErrorCode::AlreadyExists, where(segment, object) + ": already exists (a " +
                                              std::string(kind_name(existing->kind)) + ")");
  Segment& s = segment;
  bool zero = initial.is_null();
  switch (kind) {
    case Kind::Bool: s.atomic<bool>(object, zero ? false : to_bool(s, object, kind, initial)); return;
    case Kind::Int64: s.atomic<std::int64_t>(object, zero ? 0 : to_int64(s, object, kind, initial)); return;
    case Kind::Double: s.atomic<double>(object, zero ? 0.0 : to_double(s, object, kind, initial)); return;
    case Kind::Atom: s.atom(object, initial); return;
    case Kind::Reference: s.atomic_reference(object, initial); return;
    default:
      throw Error(ErrorCode::InvalidArgument,
                  where(segment, object) + ": kind '" + std::string(kind_name(kind)) + "' cannot be created here yet");
  }
}

void set(const Segment& segment, std::string_view object, const json::value& value) {
  ObjectInfo info = require(segment, object);
  switch (info.kind) {
    case Kind::Bool: segment.open_atomic<bool>(object).set(to_bool(segment, object, info.kind, value)); return;
    case Kind::Int64:
      segment.open_atomic<std::int64_t>(object).set(to_int64(segment, object, info.kind, value));
      return;
    case Kind::Double:
      segment.open_atomic<double>(object).set(to_double(segment, object, info.kind, value));
      return;
    case Kind::Atom: segment.open_atom(object).reset(value); return;
    case Kind::Reference: segment.open_atomic_reference(object).set(value); return;
    default:
      throw Error(ErrorCode::KindMismatch,
                  where(segment, object) + " is a " + std::string(kind_name(info.kind)) + ", which has no settable value");
  }
}

json::value add(const Segment& segment, std::string_view object, const json::value& delta) {
  ObjectInfo info = require(segment, object);
  switch (info.kind) {
    case Kind::Int64:
      return segment.open_atomic<std::int64_t>(object).add_and_get(to_int64(segment, object, info.kind, delta));
    case Kind::Double:
      return double_json(segment.open_atomic<double>(object).add_and_get(to_double(segment, object, info.kind, delta)));
    default:
      throw Error(ErrorCode::KindMismatch,
                  where(segment, object) + " is a " + std::string(kind_name(info.kind)) + ", not an int64 or double");
  }
}

json::value swap(const Segment& segment, std::string_view object,
                 const std::function<json::value(const json::value&)>& f) {
  ObjectInfo info = require(segment, object);
  switch (info.kind) {
    case Kind::Atom: return *segment.open_atom(object).swap(f);
    case Kind::Reference: {
      // The same retry-on-conflict contract over the reference's CAS.
      auto ref = segment.open_atomic_reference(object);
      for (;;) {
        json::value current = ref.get();
        json::value next = f(current);
        if (ref.compare_and_set(current, next)) return next;
      }
    }
    default:
      throw Error(ErrorCode::KindMismatch,
                  where(segment, object) + " is a " + std::string(kind_name(info.kind)) + ", not an atom or reference");
  }
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
    if (auto v = versioned(segment, info)) {
      o["value"] = std::move(v->second);
      o["version"] = v->first;
    } else {
      o["value"] = value_of(segment, info);
    }
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
      if (auto v = versioned(segment, o))
        out << line << "v" << v->first << " " << shorten(to_text(v->second), 80) << "\n";
      else
        out << line << shorten(to_text(value_of(segment, o)), 80) << "\n";
    }
  }
  return out.str();
}

}  // namespace shmstate::inspect
