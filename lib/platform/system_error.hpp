// errno -> shmstate::Error, in exactly one place (STYLE.md: LevelDB's PosixError).
#pragma once

#include <string>
#include <string_view>

#include <shmstate/error.hpp>

namespace shmstate::platform {

// ENOENT -> NotFound, EEXIST -> AlreadyExists, EACCES/EPERM -> PermissionDenied,
// ENOSPC/ENOMEM -> SegmentFull, EINVAL/ENAMETOOLONG -> InvalidArgument, else Io.
ErrorCode code_for_errno(int err) noexcept;

// Throws Error(code_for_errno(err), "<context>: <strerror(err)>").
[[noreturn]] void throw_errno(int err, std::string_view context);

// "segment 'name'" or "segment 'name', object 'obj'": the prefix of every message.
std::string where(std::string_view segment, std::string_view object = {});

}  // namespace shmstate::platform
