#include "platform/system_error.hpp"

#include <cerrno>
#include <cstring>

namespace shmstate {

std::string_view error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::NotFound: return "not_found";
    case ErrorCode::AlreadyExists: return "already_exists";
    case ErrorCode::KindMismatch: return "kind_mismatch";
    case ErrorCode::SegmentFull: return "segment_full";
    case ErrorCode::LayoutMismatch: return "layout_mismatch";
    case ErrorCode::Corrupt: return "corrupt";
    case ErrorCode::PermissionDenied: return "permission_denied";
    case ErrorCode::InvalidArgument: return "invalid_argument";
    case ErrorCode::Io: return "io";
    case ErrorCode::OwnerDied: return "owner_died";
    case ErrorCode::Rejected: return "rejected";
  }
  return "unknown";
}

namespace platform {

ErrorCode code_for_errno(int err) noexcept {
  switch (err) {
    case ENOENT: return ErrorCode::NotFound;
    case EEXIST: return ErrorCode::AlreadyExists;
    case EACCES:
    case EPERM:
    case EROFS: return ErrorCode::PermissionDenied;
    case ENOSPC:
    case ENOMEM:
    case EFBIG: return ErrorCode::SegmentFull;
    case EINVAL:
    case ENAMETOOLONG: return ErrorCode::InvalidArgument;
    default: return ErrorCode::Io;
  }
}

void throw_errno(int err, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += std::strerror(err);
  throw Error(code_for_errno(err), message);
}

std::string where(std::string_view segment, std::string_view object) {
  std::string s = "segment '";
  s += segment;
  s += "'";
  if (!object.empty()) {
    s += ", object '";
    s += object;
    s += "'";
  }
  return s;
}

}  // namespace platform
}  // namespace shmstate
