// Internal: the first 8 bytes of every object's shared state. A handle checks
// both fields when it opens an object, so a registry entry that points at the
// wrong bytes is reported as Corrupt instead of being used.
#pragma once

#include <shmstate/config.hpp>

#include <cstdint>

namespace shmstate::detail {

struct ObjectHeader {
  std::uint32_t kind;            // shmstate::Kind
  std::uint32_t layout_version;  // of this kind's state struct
};
static_assert(sizeof(ObjectHeader) == 8);

}  // namespace shmstate::detail
