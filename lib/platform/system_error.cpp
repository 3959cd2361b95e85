#include "platform/system_error.hpp"

#include <cstdio>

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

void throw_file_errno(int err, std::string_view context) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    throw Error(ErrorCode::Io, std::string(context) + ": " + std::strerror(err));
  throw_errno(err, context);
}

std::string where(std::string_view segment, std::string_view object) {
  std::string s = "segment '";
  s += excerpt(segment, kMaxQuotedName);
  s += "'";
  if (!object.empty()) {
    s += ", object '";
    s += excerpt(object, kMaxQuotedName);
    s += "'";
  }
  return s;
}

std::string excerpt(std::string_view text, std::size_t max) {
  std::string out(text.substr(0, text.size() > max ? max - 3 : max));
  if (text.size() > max) {
    // Back up to the start of a UTF-8 sequence (not a continuation byte).
    std::size_t end = out.size();
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    out.resize(end);
    out += "...";
  }
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = ' ';
  return out;
}

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace platform
}  // namespace shmstate
