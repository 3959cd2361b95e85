// shmstate/atomic.hpp: Atomic<T>, a bool, int64 or double shared by processes.
//
// The java.util.concurrent.atomic / atomos API over one lock-free std::atomic
// in the segment: get, set, get_and_set, compare_and_set, and for numbers
// add_and_get, get_and_add, subtract_and_get, get_and_subtract. Every
// operation is a single atomic instruction (a CAS loop for double arithmetic),
// sequentially consistent, and cannot be torn or blocked by any process dying
// at any instant: there is no lock to leave behind.
//
// Semantics worth knowing:
//  - int64 arithmetic wraps on overflow (two's complement), as in Java.
//  - double compare_and_set compares bit patterns, as Guava's AtomicDouble
//    does: 0.0 and -0.0 differ, a NaN equals the same NaN. wait_while_equal
//    compares the same way.
//  - Values are exact: int64 is 64-bit and double is IEEE binary64 (the
//    atomos multiprocessing seed silently used C int and float).
//
// Waiting: wait_while_equal(old, timeout) sleeps on a futex event count until
// any process changes the value; writers pay for a wake-up syscall only while
// someone is waiting.
//
// Memory ordering (issue 12, item 5). Every operation on the value is
// seq_cst, and that is what the wake-up protocol needs, not a style choice:
// a writer changes the value, then loads the event count's waiter word; a
// waiter sets that word, then loads the value. With both sides seq_cst one
// of them sees the other (a Dekker pair); with a release store or a relaxed
// RMW the writer could see no waiter while the waiter sees the old value, and
// the wait would end one ~100 ms slice late. The plain get/set ordering users
// see is the same: seq_cst, like std::atomic's defaults. Tested on x86-64
// only; the multiprocess suite was not run on aarch64 (no machine for it).
//
// Handles are cheap to copy and usable from any thread; the object lives as
// long as the segment.
#pragma once

#include <shmstate/config.hpp>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/detail/object_header.hpp>
#include <shmstate/segment.hpp>

namespace shmstate {

class Condition;

namespace detail {

// Shared state of an Atomic<T>, layout version 1. The event count has a cache
// line of its own: every update reads its waiter word, and on a line that the
// updates do not write it stays shared in every core's cache. On the value's
// line the read missed whenever another process had just updated: measured
// 1.64x a raw fetch_add with 2 processes, against 1.00-1.04x apart.
// What the shared word holds for a T: T itself, except a bool, which is kept
// as a byte. Any process (or a hostile one) can write any byte there, and
// loading a std::atomic<bool> whose byte is neither 0 nor 1 is undefined
// behaviour (UBSan: "load of value 255, which is not a valid value for type
// 'bool'", found by fuzz_segment). A byte is always valid; the library reads
// nonzero as true, and dump, get and snapshot report such a byte as Corrupt.
// Valid bytes are the same as a bool's, so the layout did not change.
template <class T>
using AtomicStored = std::conditional_t<std::is_same_v<T, bool>, std::uint8_t, T>;

template <class T>
constexpr AtomicStored<T> to_stored(T v) noexcept {
  if constexpr (std::is_same_v<T, bool>) return v ? 1 : 0;
  else return v;
}
template <class T>
constexpr T from_stored(AtomicStored<T> v) noexcept {
  if constexpr (std::is_same_v<T, bool>) return v != 0;
  else return v;
}

template <class T>
struct alignas(64) AtomicState {
  ObjectHeader header;
  std::atomic<AtomicStored<T>> value;
  alignas(64) EventCount changes;
};
inline constexpr std::uint32_t kAtomicLayoutVersion = 1;
static_assert(sizeof(AtomicState<std::int64_t>) == 128);
static_assert(sizeof(AtomicState<double>) == 128);
static_assert(sizeof(AtomicState<bool>) == 128);
static_assert(offsetof(AtomicState<std::int64_t>, changes) == 64);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);
static_assert(std::atomic<double>::is_always_lock_free);
static_assert(std::atomic<std::uint8_t>::is_always_lock_free);
static_assert(sizeof(std::uint8_t) == sizeof(bool));

template <class T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, bool>) return Kind::Bool;
  else if constexpr (std::is_same_v<T, std::int64_t>) return Kind::Int64;
  else return Kind::Double;
}

// Equality as compare_exchange sees it: bitwise for double.
template <class T>
bool same_value(T a, T b) noexcept {
  if constexpr (std::is_same_v<T, double>)
    return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b);
  else
    return a == b;
}

// a + b and a - b as the atomic's fetch_add/fetch_sub compute them: two's
// complement wrap-around for int64 (plain signed overflow would be undefined).
template <class T>
T wrapping_add(T a, T b) noexcept {
  if constexpr (std::is_integral_v<T>)
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(a) + static_cast<std::make_unsigned_t<T>>(b));
  else
    return a + b;
}
template <class T>
T wrapping_sub(T a, T b) noexcept {
  if constexpr (std::is_integral_v<T>)
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(a) - static_cast<std::make_unsigned_t<T>>(b));
  else
    return a - b;
}

struct ObjectName {
  std::string segment;
  std::string object;
};

}  // namespace detail

template <class T>
class SHMSTATE_API Atomic {
  static_assert(AtomicValue<T>, "Atomic<T> holds bool, std::int64_t or double");

 public:
  // A bool's byte other than 0 or 1 (damage) reads as true.
  T get() const noexcept { return detail::from_stored<T>(s_->value.load()); }

  // Every writer below throws Error(PermissionDenied) naming the object,
  // before it writes, when the handle comes from a segment opened read-only
  // (Segment::Access::ReadOnly); otherwise they cannot fail.
  void set(T value) {
    writable("set");
    s_->value.store(detail::to_stored(value));
    notify();
  }

  T get_and_set(T value) {
    writable("get_and_set");
    T old = detail::from_stored<T>(s_->value.exchange(detail::to_stored(value)));
    notify();
    return old;
  }

  // Sets `desired` if the value is `expected` (bitwise for double; for a
  // bool, a damaged byte counts as true and is replaced).
  bool compare_and_set(T expected, T desired) {
    writable("compare_and_set");
    if constexpr (std::is_same_v<T, bool>) {
      std::uint8_t seen = s_->value.load();
      do {
        if ((seen != 0) != expected) return false;
      } while (!s_->value.compare_exchange_weak(seen, detail::to_stored(desired)));
    } else {
      if (!s_->value.compare_exchange_strong(expected, desired)) return false;
    }
    notify();
    return true;
  }

  T add_and_get(T delta) requires(!std::is_same_v<T, bool>) {
    return detail::wrapping_add(get_and_add(delta), delta);
  }
  T get_and_add(T delta) requires(!std::is_same_v<T, bool>) {
    writable("add");
    T old = s_->value.fetch_add(delta);
    notify();
    return old;
  }
  T subtract_and_get(T delta) requires(!std::is_same_v<T, bool>) {
    return detail::wrapping_sub(get_and_subtract(delta), delta);
  }
  T get_and_subtract(T delta) requires(!std::is_same_v<T, bool>) {
    writable("subtract");
    T old = s_->value.fetch_sub(delta);
    notify();
    return old;
  }

  // Blocks while the value equals `old`, at most `timeout`. Returns true if
  // the value differs from `old` on return, false on timeout. Wakes within
  // microseconds of a change by any process (no polling; a notifier that dies
  // between its write and its wake delays this by at most ~100 ms). On a
  // read-only segment it polls: a change is seen within ~100 ms.
  bool wait_while_equal(T old, std::chrono::nanoseconds timeout) const;

  // The same, ended by a signal or composition (<shmstate/signal.hpp>; e.g.
  // `please_stop | Till(5s)`) instead of a timeout: true once the value
  // differs from `old` (checked first), false once `till` is set. One sleep
  // on the event count's word and every word of `till` at once (futex_waitv;
  // beyond 128 words, on the till's segments' watch summaries: <shmstate/signal.hpp>). Throws Corrupt if a segment signal in `till` is damaged.
  // A waiter killed here leaves what a killed timed waiter leaves: one
  // sleeper bit, cleared (one wake) by the next change.
  bool wait_while_equal(T old, const Condition& till) const;

  const std::string& name() const noexcept { return name_->object; }
  const std::string& segment_name() const noexcept { return name_->segment; }

 private:
  friend class Segment;
  Atomic(detail::AtomicState<T>* state, std::shared_ptr<const detail::ObjectName> name, bool read_only)
      : s_(state), name_(std::move(name)), read_only_(read_only) {}

  // One predicted branch on the handle's own flag; the throw is out of line.
  void writable(const char* op) const {
    if (read_only_) [[unlikely]] refuse_write(op);
  }
  [[noreturn]] void refuse_write(const char* op) const;

  // Wakes waiters after a change. The test for waiters is inline (one load);
  // the wake is out of line in Atomic<T> itself, not in detail::EventCount,
  // so the library exports no detail:: symbol for this header's inline code.
  void notify() noexcept {
    if (s_->changes.has_waiters()) notify_slow();
  }
  void notify_slow() noexcept;

  detail::AtomicState<T>* s_;
  std::shared_ptr<const detail::ObjectName> name_;
  bool read_only_;  // mapped PROT_READ: every store would be SIGSEGV
};

// Defined in the library for these three T only (the static_assert above
// admits no other); the inline members are instantiated where they are used.
extern template bool Atomic<bool>::wait_while_equal(bool, std::chrono::nanoseconds) const;
extern template bool Atomic<std::int64_t>::wait_while_equal(std::int64_t, std::chrono::nanoseconds) const;
extern template bool Atomic<double>::wait_while_equal(double, std::chrono::nanoseconds) const;
extern template bool Atomic<bool>::wait_while_equal(bool, const Condition&) const;
extern template bool Atomic<std::int64_t>::wait_while_equal(std::int64_t, const Condition&) const;
extern template bool Atomic<double>::wait_while_equal(double, const Condition&) const;
extern template void Atomic<bool>::notify_slow() noexcept;
extern template void Atomic<std::int64_t>::notify_slow() noexcept;
extern template void Atomic<double>::notify_slow() noexcept;
extern template void Atomic<bool>::refuse_write(const char*) const;
extern template void Atomic<std::int64_t>::refuse_write(const char*) const;
extern template void Atomic<double>::refuse_write(const char*) const;

}  // namespace shmstate
