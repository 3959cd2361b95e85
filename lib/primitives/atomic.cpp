#include <shmstate/atomic.hpp>

#include <new>

#include "segment/segment_impl.hpp"

namespace shmstate {

template <class T>
bool Atomic<T>::wait_while_equal(T old, std::chrono::nanoseconds timeout) const {
  return s_->changes.wait_until([&] { return !detail::same_value(s_->value.load(), old); },
                                detail::deadline_after(timeout));
}

template <AtomicValue T>
Atomic<T> Segment::atomic(std::string_view name, std::type_identity_t<T> initial, CreateMode mode) {
  using State = detail::AtomicState<T>;
  constexpr Kind kind = detail::kind_of<T>();
  auto slot = impl_->find_or_create(name, kind, sizeof(State), alignof(State), [&](std::byte* p) {
    auto* s = new (p) State;
    s->header = {static_cast<std::uint32_t>(kind), detail::kAtomicLayoutVersion};
    s->value.store(initial, std::memory_order_relaxed);
  }, mode);
  return Atomic<T>(impl_->state_of<State>(slot, detail::kAtomicLayoutVersion),
                   std::make_shared<const detail::ObjectName>(detail::ObjectName{impl_->name, std::string(name)}));
}

template <AtomicValue T>
Atomic<T> Segment::open_atomic(std::string_view name) const {
  using State = detail::AtomicState<T>;
  auto slot = impl_->find_existing(name, detail::kind_of<T>());
  return Atomic<T>(impl_->state_of<State>(slot, detail::kAtomicLayoutVersion),
                   std::make_shared<const detail::ObjectName>(detail::ObjectName{impl_->name, std::string(name)}));
}

// Only the out-of-line member is instantiated here: instantiating the whole
// class (`template class Atomic<bool>;`) would also instantiate the members
// whose constraints bool does not satisfy, which GCC skips and clang 14
// rejects ("constraints not satisfied", design.md, fact 11).
template bool Atomic<bool>::wait_while_equal(bool, std::chrono::nanoseconds) const;
template bool Atomic<std::int64_t>::wait_while_equal(std::int64_t, std::chrono::nanoseconds) const;
template bool Atomic<double>::wait_while_equal(double, std::chrono::nanoseconds) const;

template Atomic<bool> Segment::atomic<bool>(std::string_view, bool, CreateMode);
template Atomic<std::int64_t> Segment::atomic<std::int64_t>(std::string_view, std::int64_t, CreateMode);
template Atomic<double> Segment::atomic<double>(std::string_view, double, CreateMode);
template Atomic<bool> Segment::open_atomic<bool>(std::string_view) const;
template Atomic<std::int64_t> Segment::open_atomic<std::int64_t>(std::string_view) const;
template Atomic<double> Segment::open_atomic<double>(std::string_view) const;

}  // namespace shmstate
