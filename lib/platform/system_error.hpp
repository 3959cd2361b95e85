// errno -> shmstate::Error, in exactly one place (STYLE.md: LevelDB's PosixError).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <shmstate/error.hpp>

namespace shmstate::platform {

// ENOENT -> NotFound, EEXIST -> AlreadyExists, EACCES/EPERM -> PermissionDenied,
// ENOSPC/ENOMEM -> SegmentFull, EINVAL/ENAMETOOLONG -> InvalidArgument, else Io.
ErrorCode code_for_errno(int err) noexcept;

// Throws Error(code_for_errno(err), "<context>: <strerror(err)>").
[[noreturn]] void throw_errno(int err, std::string_view context);

// throw_errno for a failed call on a regular file (the store, snapshots):
// a file that cannot grow (ENOSPC disk full, EDQUOT quota, EFBIG
// RLIMIT_FSIZE) is Io, not SegmentFull, which says a segment has no room.
[[noreturn]] void throw_file_errno(int err, std::string_view context);

// "segment 'name'" or "segment 'name', object 'obj'": the prefix of every message.
// Each name is quoted as excerpt(name, kMaxQuotedName): valid names (at most
// 200 characters) whole, anything else bounded and on one line.
std::string where(std::string_view segment, std::string_view object = {});

// 16 hex digits, for words read from shared memory in Corrupt messages.
std::string hex(std::uint64_t v);

// At most `max` bytes of `text` on one line, for quoting values in messages
// (inspect::excerpt is the public face of this): control characters
// (newlines included) become spaces, and a longer text is cut (never inside a
// UTF-8 sequence) and ends in "...". REQUIRES: max >= 3.
std::string excerpt(std::string_view text, std::size_t max = 60);

// Names (segments, objects, files) are quoted up to this length.
inline constexpr std::size_t kMaxQuotedName = 256;

}  // namespace shmstate::platform
