// shmstate/error.hpp: the one exception type of shmstate.
//
// Every failure a caller can act on is a shmstate::Error with a code() from
// ErrorCode, and a message that names the segment and, where there is one, the
// object ("segment 'jobs', object 'done': ..."). Timeouts are never errors:
// calls that wait return a bool or a result enum instead.
//
// Thread safety: Error is an ordinary value type.
#pragma once

#include <shmstate/config.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

namespace shmstate {

enum class ErrorCode {
  NotFound,          // no such segment, or no such object in it
  AlreadyExists,     // exclusive create of a name that is taken
  KindMismatch,      // the object exists but is of another kind (message names both)
  SegmentFull,       // the segment has no room (message gives requested and free bytes)
  LayoutMismatch,    // not a shmstate segment, or another layout version (names both)
  Corrupt,           // our magic and version, but contents that fail validation
  PermissionDenied,  // EACCES/EPERM from the system
  InvalidArgument,   // bad name, bad option, value of the wrong type, ...
  Io,                // any other system error
  OwnerDied,         // reserved for calls that must report a dead holder as an error
  Rejected,          // a validator rejected the new value; nothing changed
};

// Stable lower-case name of a code ("not_found", "segment_full", ...), used in
// messages and in the CLI's JSON output.
SHMSTATE_API std::string_view error_code_name(ErrorCode code) noexcept;

class SHMSTATE_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace shmstate
