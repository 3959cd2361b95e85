// The read-only mappings of this process (segments opened with
// Access::ReadOnly, mapped PROT_READ): a store into one would be SIGSEGV, so
// the few shared-memory writers that do not know which segment they write
// (robust mutex lock calls, a waiter's arm of an event count or one-shot
// word) ask here first. Ranges are only added, never removed: a process keeps
// each mapping until it exits (segment.hpp).
#pragma once

#include <cstddef>
#include <string_view>

namespace shmstate::platform {

// Records [begin, begin + size) as mapped read-only. Throws Error(Io) when
// the process has more read-only mappings than the table holds (1024).
void note_read_only(const void* begin, std::size_t size);

// True if `p` lies in a range recorded by note_read_only. Lock-free; one
// relaxed-cheap load when the process has no read-only mapping.
bool is_read_only(const void* p) noexcept;

}  // namespace shmstate::platform

namespace shmstate::platform {

// Throws Error(PermissionDenied) "<where>: cannot <action>: the segment is
// open read-only" if `p` is in a read-only mapping.
void require_writable_at(const void* p, std::string_view where, std::string_view action);

}  // namespace shmstate::platform
