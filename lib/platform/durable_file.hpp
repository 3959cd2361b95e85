// Durable atomic replace of a whole file (ARCHITECTURE.md, fact 8), and the
// reading side. Used by the store (lib/store/store.cpp) and by segment
// snapshots: one implementation for every file the library writes.
//
// Replace protocol: a temp file in the target's directory, created with
// O_CREAT|O_EXCL|O_CLOEXEC under a name that carries the writer's identity
// (PID namespace, pid, start time) and a random part; fchmod to the mode the
// file must end with (before any byte is written, so the data is never more
// exposed than the final file); write; fsync; rename over the target; fsync
// the directory. On any failure before the rename the temp file is unlinked
// and the target is untouched. A process killed at any step leaves the target
// equal to the old or the new contents, never a mix, plus at most its own temp
// file, which the next replace of the same file removes (only temps of dead
// writers in this PID namespace: a live writer's temp is never touched).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace shmstate::platform {

// "<pid namespace>-<pid>-<start time>-<16 random hex digits>": a file name part
// that says who made the file, so a later process can tell it was left by a
// writer that is dead.
std::string writer_tag();

// True if `tag` starts with a writer_tag() whose writer is in our PID
// namespace and is dead (a pid means nothing in another namespace). False for
// anything else, including text that is not a tag.
bool writer_is_dead(std::string_view tag) noexcept;

// The file a write to `path` must replace: follows symbolic links at the last
// component (relative links against the link's directory, up to 40 hops), so
// a replace updates the link's target and keeps the link. A link to a missing
// file resolves to that missing file (the replace creates it). Throws
// Error(InvalidArgument) for a link loop, Io for other lstat/readlink errors;
// `what` starts each message ("store '/etc/x.json'").
std::string resolve_symlinks(const std::string& path, std::string_view what);

struct ReplaceOptions {
  // Mode bits of a file that does not exist yet, applied exactly. nullopt:
  // 0644 minus the process umask. An existing file always keeps its mode (and,
  // where the process may, its owner and group).
  std::optional<unsigned> new_file_mode;
  // Remove dead writers' temp files of this target first (one readdir).
  bool sweep = true;
};

// Replaces the file at `path` (symlinks resolved, see above) by `bytes`, as
// the protocol above says. Throws Error: NotFound if the directory does not
// exist, PermissionDenied if it cannot be written (read-only, no access),
// InvalidArgument if `path` names a directory or has no file name, Io
// otherwise (a full disk, a quota or RLIMIT_FSIZE included: throw_file_errno,
// never SegmentFull); each message starts with `what` (which names the path)
// and names the step and the file. If the directory fsync after the
// rename fails, the new contents are in place but maybe not durable: Error(Io)
// saying so.
//
// Crash points (include/shmstate/testing.hpp): "file.replace.after_create",
// "file.replace.after_write", "file.replace.after_fsync",
// "file.replace.after_rename" (before the directory fsync).
void replace_file_durably(const std::string& path, std::string_view bytes, const ReplaceOptions& options,
                          std::string_view what);

// The whole contents of the file at `path`, or nullopt if it does not exist.
// Never writes. Throws Error (PermissionDenied, InvalidArgument for a
// directory, Io) with `what` and the path in the message.
std::optional<std::string> read_whole_file(const std::string& path, std::string_view what);

// The directory part of `path` ("." for a bare name) and the last component.
std::string directory_of(const std::string& path);
std::string file_name_of(const std::string& path);

}  // namespace shmstate::platform
