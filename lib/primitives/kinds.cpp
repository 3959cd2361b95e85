// The one table of object kinds (see kind.hpp, "How to add a kind").
#include "primitives/kind.hpp"

#include "platform/system_error.hpp"

namespace shmstate {
namespace detail {

// Defined beside each primitive.
const KindDescriptor& bool_kind();
const KindDescriptor& int64_kind();
const KindDescriptor& double_kind();
const KindDescriptor& atom_kind();
const KindDescriptor& reference_kind();
const KindDescriptor& fifo_lock_kind();
const KindDescriptor& monitor_kind();
const KindDescriptor& signal_kind();

std::span<const KindDescriptor* const> kinds() noexcept {
  // In Kind order: one line per kind.
  static const KindDescriptor* const table[] = {
      &bool_kind(),
      &int64_kind(),
      &double_kind(),
      &atom_kind(),
      &reference_kind(),
      &fifo_lock_kind(),
      &monitor_kind(),
      &signal_kind(),
  };
  return table;
}

const KindDescriptor* find_kind(Kind kind) noexcept {
  for (const auto* d : kinds())
    if (d->kind == kind) return d;
  return nullptr;
}

std::string a_kind(Kind kind) {
  std::string_view name = kind_name(kind);
  bool vowel = !name.empty() && std::string_view("aeiou").find(name.front()) != std::string_view::npos;
  return (vowel ? "an " : "a ") + std::string(name);
}

std::string join_kind_names(const std::vector<std::string_view>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " and " : ", ";
    out += names[i];
  }
  return out;
}

void throw_lacking(const Segment& segment, const ObjectInfo& object, std::string_view verb,
                   std::string_view lacking, const std::string& kinds_having) {
  throw Error(ErrorCode::KindMismatch, platform::where(segment.name(), object.name) + ": " + a_kind(object.kind) +
                                           " has " + std::string(lacking) + " (" + std::string(verb) +
                                           " works on " + kinds_having + ")");
}

Error wrong_state(const Segment& segment, std::string_view object, Kind kind, std::string_view why) {
  return Error(ErrorCode::Corrupt, platform::where(segment.name(), object) + ": saved state of " + a_kind(kind) +
                                       ": " + std::string(why));
}

Error wrong_json(const Segment& segment, std::string_view object, Kind kind, const boost::json::value& value,
                 std::string_view expected) {
  return Error(ErrorCode::InvalidArgument, platform::where(segment.name(), object) + ": " + a_kind(kind) +
                                               " takes " + std::string(expected) + ", not " +
                                               inspect::excerpt(inspect::to_text(value)));
}

}  // namespace detail

std::string_view kind_name(Kind kind) noexcept {
  const auto* d = detail::find_kind(kind);
  return d != nullptr ? d->name : "unknown";
}

std::optional<Kind> parse_kind(std::string_view name) noexcept {
  for (const auto* d : detail::kinds())
    if (d->name == name) return d->kind;
  return std::nullopt;
}

}  // namespace shmstate
