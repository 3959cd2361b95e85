#include <shmstate/atomic.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <new>
#include <optional>

#include "platform/system_error.hpp"
#include "primitives/condition.hpp"
#include "primitives/kind.hpp"
#include "segment/segment_impl.hpp"

namespace shmstate {

namespace detail {
namespace {

// Finds or creates the Atomic<T> `name`; the slot says whether it created.
template <AtomicValue T>
ObjectSlot atomic_slot(SegmentImpl& impl, std::string_view name, T initial,
                       CreateMode mode = CreateMode::OpenOrCreate) {
  using State = AtomicState<T>;
  constexpr Kind kind = kind_of<T>();
  return impl.find_or_create(name, kind, sizeof(State), alignof(State), [&](std::byte* p) {
    auto* s = new (p) State;
    s->header = {static_cast<std::uint32_t>(kind), kAtomicLayoutVersion};
    s->value.store(to_stored(initial), std::memory_order_relaxed);
  }, mode);
}

}  // namespace
}  // namespace detail

template <class T>
bool Atomic<T>::wait_while_equal(T old, std::chrono::nanoseconds timeout) const {
  return s_->changes.wait_until([&] { return !detail::same_value(get(), old); },
                                detail::deadline_after(timeout));
}

template <class T>
bool Atomic<T>::wait_while_equal(T old, const Condition& till) const {
  return detail::wait_event(s_->changes, [&] { return !detail::same_value(get(), old); },
                            till.node().get(), detail::Clock::time_point::max()) == detail::WaitEnd::Done;
}

template <class T>
void Atomic<T>::notify_slow() noexcept {
  s_->changes.notify_all_slow();
}

template <class T>
void Atomic<T>::refuse_write(const char* op) const {
  throw Error(ErrorCode::PermissionDenied, platform::where(name_->segment, name_->object) + ": cannot " +
                                               std::string(op) + ": the segment is open read-only");
}

template <AtomicValue T>
Atomic<T> Segment::atomic(std::string_view name, std::type_identity_t<T> initial, CreateMode mode) {
  auto slot = detail::atomic_slot<T>(*impl_, name, initial, mode);
  return Atomic<T>(impl_->state_of<detail::AtomicState<T>>(slot, detail::kAtomicLayoutVersion),
                   std::make_shared<const detail::ObjectName>(detail::ObjectName{impl_->name, std::string(name)}),
                   impl_->read_only);
}

template <AtomicValue T>
Atomic<T> Segment::open_atomic(std::string_view name) const {
  using State = detail::AtomicState<T>;
  auto slot = impl_->find_existing(name, detail::kind_of<T>());
  return Atomic<T>(impl_->state_of<State>(slot, detail::kAtomicLayoutVersion),
                   std::make_shared<const detail::ObjectName>(detail::ObjectName{impl_->name, std::string(name)}),
                   impl_->read_only);
}

// Only the out-of-line member is instantiated here: instantiating the whole
// class (`template class Atomic<bool>;`) would also instantiate the members
// whose constraints bool does not satisfy, which GCC skips and clang 14
// rejects ("constraints not satisfied", design.md, fact 11).
template bool Atomic<bool>::wait_while_equal(bool, std::chrono::nanoseconds) const;
template bool Atomic<std::int64_t>::wait_while_equal(std::int64_t, std::chrono::nanoseconds) const;
template bool Atomic<double>::wait_while_equal(double, std::chrono::nanoseconds) const;
template bool Atomic<bool>::wait_while_equal(bool, const Condition&) const;
template bool Atomic<std::int64_t>::wait_while_equal(std::int64_t, const Condition&) const;
template bool Atomic<double>::wait_while_equal(double, const Condition&) const;
template void Atomic<bool>::notify_slow() noexcept;
template void Atomic<std::int64_t>::notify_slow() noexcept;
template void Atomic<double>::notify_slow() noexcept;
template void Atomic<bool>::refuse_write(const char*) const;
template void Atomic<std::int64_t>::refuse_write(const char*) const;
template void Atomic<double>::refuse_write(const char*) const;

template Atomic<bool> Segment::atomic<bool>(std::string_view, bool, CreateMode);
template Atomic<std::int64_t> Segment::atomic<std::int64_t>(std::string_view, std::int64_t, CreateMode);
template Atomic<double> Segment::atomic<double>(std::string_view, double, CreateMode);
template Atomic<bool> Segment::open_atomic<bool>(std::string_view) const;
template Atomic<std::int64_t> Segment::open_atomic<std::int64_t>(std::string_view) const;
template Atomic<double> Segment::open_atomic<double>(std::string_view) const;

// ---- the kind descriptors of bool, int64 and double (kind.hpp) ----

namespace detail {
namespace {

namespace json = boost::json;

// JSON -> T, or InvalidArgument naming the object.
template <AtomicValue T>
T from_json(const Segment& s, std::string_view object, const json::value& v) {
  constexpr Kind kind = kind_of<T>();
  if constexpr (std::is_same_v<T, bool>) {
    if (v.is_bool()) return v.get_bool();
    throw wrong_json(s, object, kind, v, "true or false");
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return static_cast<std::int64_t>(v.get_uint64());
    throw wrong_json(s, object, kind, v, "an integer in [-2^63, 2^63)");
  } else {
    if (v.is_double()) return v.get_double();
    if (v.is_int64()) return static_cast<double>(v.get_int64());
    if (v.is_uint64()) return static_cast<double>(v.get_uint64());
    throw wrong_json(s, object, kind, v, "a number");
  }
}

// T -> JSON. JSON has no NaN or infinity; show them as strings rather than lie.
template <AtomicValue T>
json::value to_json(T v) {
  if constexpr (std::is_same_v<T, double>) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  }
  return v;
}

template <AtomicValue T>
bool create(Segment& s, std::string_view object, const CreateRequest& r) {
  T initial = r.initial.is_null() ? T{} : from_json<T>(s, object, r.initial);
  return atomic_slot<T>(s.impl(), object, initial).created;
}

// The value as readers outside the library see it (dump, get, snapshot):
// the one load, and for a bool a byte other than 0 or 1 is Corrupt rather
// than quietly true.
template <AtomicValue T>
T checked_get(const Segment& s, std::string_view object) {
  if constexpr (std::is_same_v<T, bool>) {
    auto slot = s.impl().find_existing(object, Kind::Bool);
    std::uint8_t byte = s.impl().state_of<AtomicState<bool>>(slot, kAtomicLayoutVersion)->value.load();
    if (byte > 1)
      throw Error(ErrorCode::Corrupt, platform::where(s.name(), object) + ": corrupt bool: value byte " +
                                          std::to_string(byte) + " (not 0 or 1)");
    return byte == 1;
  } else {
    return s.open_atomic<T>(object).get();
  }
}

template <AtomicValue T>
json::value value(const Segment& s, const ObjectInfo& o) {
  return to_json(checked_get<T>(s, o.name));
}

template <AtomicValue T>
void set(const Segment& s, const ObjectInfo& o, const json::value& v) {
  s.open_atomic<T>(o.name).set(from_json<T>(s, o.name, v));
}

template <AtomicValue T>
json::value add(const Segment& s, const ObjectInfo& o, const json::value& delta) {
  return to_json(s.open_atomic<T>(o.name).add_and_get(from_json<T>(s, o.name, delta)));
}

// ---- snapshot and restore: the value, exactly ----

// A double's saved state: a JSON number when finite (written shortest-exact,
// read back by the exact parser, -0 included); "Infinity", "-Infinity"; "NaN"
// for the default quiet NaN and "NaN:0x<16 hex digits>" (the bits) for any
// other NaN, so sign and payload survive too.
constexpr std::uint64_t kDefaultNaNBits = 0x7ff8000000000000ULL;

json::value saved_double(double v) {
  if (std::isfinite(v)) return v;
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  std::uint64_t bits = std::bit_cast<std::uint64_t>(v);
  if (bits == kDefaultNaNBits) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof buf, "NaN:0x%016llx", static_cast<unsigned long long>(bits));
  return buf;
}

std::optional<double> double_from_saved(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());  // "5" from a hand-written file
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  if (!v.is_string()) return std::nullopt;
  std::string_view t = v.get_string();
  if (t == "Infinity") return std::numeric_limits<double>::infinity();
  if (t == "-Infinity") return -std::numeric_limits<double>::infinity();
  if (t == "NaN") return std::bit_cast<double>(kDefaultNaNBits);
  constexpr std::string_view prefix = "NaN:0x";
  if (t.size() != prefix.size() + 16 || t.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::uint64_t bits = 0;
  auto [end, ec] = std::from_chars(t.data() + prefix.size(), t.data() + t.size(), bits, 16);
  if (ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
  double d = std::bit_cast<double>(bits);
  if (!std::isnan(d)) return std::nullopt;  // the bits of a number belong in a number
  return d;
}

template <AtomicValue T>
json::value snapshot(const Segment& s, const ObjectInfo& o) {
  T v = checked_get<T>(s, o.name);  // one load: atomic by itself
  if constexpr (std::is_same_v<T, double>) return saved_double(v);
  else return v;
}

template <AtomicValue T>
void restore(Segment& s, std::string_view object, const json::value& saved) {
  constexpr Kind kind = kind_of<T>();
  T v{};
  if constexpr (std::is_same_v<T, bool>) {
    if (!saved.is_bool()) throw wrong_state(s, object, kind, "not true or false");
    v = saved.get_bool();
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    if (saved.is_int64()) v = saved.get_int64();
    else throw wrong_state(s, object, kind, "not an integer in [-2^63, 2^63)");
  } else {
    auto d = double_from_saved(saved);
    if (!d) throw wrong_state(s, object, kind, "not a number, \"Infinity\", \"-Infinity\", \"NaN\" or \"NaN:0x<16 hex digits>\"");
    v = *d;
  }
  atomic_slot<T>(s.impl(), object, v, CreateMode::Exclusive);
}

}  // namespace

const KindDescriptor& bool_kind() {
  static constexpr KindDescriptor d{.kind = Kind::Bool,
                                    .name = "bool",
                                    .create = &create<bool>,
                                    .value = &value<bool>,
                                    .set = &set<bool>,
                                    .snapshot = &snapshot<bool>,
                                    .restore = &restore<bool>};
  return d;
}

const KindDescriptor& int64_kind() {
  static constexpr KindDescriptor d{.kind = Kind::Int64,
                                    .name = "int64",
                                    .create = &create<std::int64_t>,
                                    .value = &value<std::int64_t>,
                                    .set = &set<std::int64_t>,
                                    .add = &add<std::int64_t>,
                                    .snapshot = &snapshot<std::int64_t>,
                                    .restore = &restore<std::int64_t>};
  return d;
}

const KindDescriptor& double_kind() {
  static constexpr KindDescriptor d{.kind = Kind::Double,
                                    .name = "double",
                                    .create = &create<double>,
                                    .value = &value<double>,
                                    .set = &set<double>,
                                    .add = &add<double>,
                                    .snapshot = &snapshot<double>,
                                    .restore = &restore<double>};
  return d;
}

}  // namespace detail
}  // namespace shmstate
