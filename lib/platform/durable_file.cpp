#include "platform/durable_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <shmstate/error.hpp>

#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "platform/system_error.hpp"

namespace shmstate::platform {

namespace {

// Temp names are ".<first kTempBaseChars of the file name>.<writer tag>.tmp":
// hidden, beside the target, and short enough for NAME_MAX whatever the name.
constexpr std::size_t kTempBaseChars = 100;
constexpr std::string_view kTempSuffix = ".tmp";

std::string temp_prefix(const std::string& file_name) {
  return "." + file_name.substr(0, kTempBaseChars) + ".";
}

std::uint64_t random64() noexcept {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof r)) return r;
  // No entropy yet (early boot): unique enough with the pid and start time
  // already in the tag, since O_EXCL retries on a clash.
  static std::atomic<std::uint64_t> counter{0};
  auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return now * 0x9E3779B97F4A7C15ULL + counter.fetch_add(1, std::memory_order_relaxed);
}

// Closes the fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void fail(int err, std::string_view what, const std::string& step) {
  throw_file_errno(err, std::string(what) + ": " + step);
}

// write(2) all of `bytes`; 0 or errno.
int write_all(int fd, std::string_view bytes) noexcept {
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

void sweep_dead_temps(const std::string& dir, const std::string& file_name) noexcept {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::string prefix = temp_prefix(file_name);
  while (dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n.size() <= prefix.size() + kTempSuffix.size() || n.substr(0, prefix.size()) != prefix ||
        n.substr(n.size() - kTempSuffix.size()) != kTempSuffix)
      continue;
    if (writer_is_dead(n.substr(prefix.size()))) ::unlinkat(::dirfd(d), e->d_name, 0);
  }
  ::closedir(d);
}

}  // namespace

std::string writer_tag() {
  ProcessIdentity id = self_identity();
  char buf[96];
  std::snprintf(buf, sizeof buf, "%" PRIu64 "-%d-%" PRIu64 "-%016" PRIx64, pid_namespace_id(), id.pid,
                id.start_time, random64());
  return buf;
}

bool writer_is_dead(std::string_view tag) noexcept {
  std::string t(tag.substr(0, 95));
  unsigned long long ns = 0, start = 0;
  int pid = 0, consumed = 0;
  if (std::sscanf(t.c_str(), "%llu-%d-%llu-%n", &ns, &pid, &start, &consumed) != 3 || consumed == 0) return false;
  if (ns == 0 || ns != pid_namespace_id()) return false;
  ProcessIdentity id{pid, 0, start};
  return liveness(id) == Liveness::Dead;
}

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string file_name_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string resolve_symlinks(const std::string& path, std::string_view what) {
  std::string current = path;
  for (int hops = 0; hops <= 40; ++hops) {
    struct stat st;
    if (::lstat(current.c_str(), &st) != 0) {
      if (errno == ENOENT) return current;  // the replace creates it
      fail(errno, what, "lstat '" + current + "'");
    }
    if (!S_ISLNK(st.st_mode)) return current;
    std::string target(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
    ssize_t n = ::readlink(current.c_str(), target.data(), target.size());
    if (n < 0) fail(errno, what, "readlink '" + current + "'");
    if (static_cast<std::size_t>(n) >= target.size()) {
      // The link changed under us: try again.
      continue;
    }
    target.resize(static_cast<std::size_t>(n));
    if (!target.empty() && target[0] != '/') target = directory_of(current) + "/" + target;
    current = std::move(target);
  }
  throw Error(ErrorCode::InvalidArgument,
              std::string(what) + ": too many levels of symbolic links resolving '" + path + "'");
}

void replace_file_durably(const std::string& path, std::string_view bytes, const ReplaceOptions& options,
                          std::string_view what) {
  const std::string target = resolve_symlinks(path, what);
  const std::string name = file_name_of(target);
  if (name.empty() || name == "." || name == "..")
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": '" + path + "' does not name a file");
  const std::string dir = directory_of(target);

  Fd dirfd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dirfd.fd < 0) {
    if (errno == ENOENT) throw Error(ErrorCode::NotFound, std::string(what) + ": directory '" + dir + "' does not exist");
    fail(errno, what, "open directory '" + dir + "'");
  }
  if (options.sweep) sweep_dead_temps(dir, name);

  // The mode (and owner) the file must end with.
  struct stat old;
  bool exists = ::fstatat(dirfd.fd, name.c_str(), &old, 0) == 0;
  if (!exists && errno != ENOENT) fail(errno, what, "stat '" + target + "'");
  if (exists && S_ISDIR(old.st_mode))
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": '" + target + "' is a directory");
  std::optional<unsigned> exact_mode;
  if (exists) exact_mode = static_cast<unsigned>(old.st_mode & 07777);
  else if (options.new_file_mode) exact_mode = *options.new_file_mode & 07777;
  // Without an exact mode, O_CREAT's 0644 minus the umask is the answer (the
  // umask cannot be read without changing it, which races other threads).
  const mode_t create_mode = exact_mode ? 0600 : 0644;

  std::string temp;
  Fd fd;
  for (int attempt = 0; fd.fd < 0; ++attempt) {
    temp = temp_prefix(name) + writer_tag() + std::string(kTempSuffix);
    fd.fd = ::openat(dirfd.fd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, create_mode);
    if (fd.fd >= 0) break;
    if (errno == EEXIST && attempt < 8) continue;
    if (errno == EACCES || errno == EPERM || errno == EROFS)
      throw Error(ErrorCode::PermissionDenied, std::string(what) + ": cannot create a file in directory '" + dir +
                                                   "': " + std::strerror(errno));
    fail(errno, what, "create temporary file in '" + dir + "'");
  }
  SHMSTATE_CRASH_POINT("file.replace.after_create");

  // From here on, any failure removes the temp file.
  auto abandon = [&](int err, const std::string& step) {
    ::unlinkat(dirfd.fd, temp.c_str(), 0);
    fail(err, what, step + " '" + dir + "/" + temp + "'");
  };
  if (exists && (old.st_uid != ::geteuid() || old.st_gid != ::getegid()))
    (void)::fchown(fd.fd, old.st_uid, old.st_gid);  // best effort: only root may give files away
  if (exact_mode && ::fchmod(fd.fd, static_cast<mode_t>(*exact_mode)) != 0) abandon(errno, "fchmod");
  if (int err = write_all(fd.fd, bytes)) abandon(err, "write");
  SHMSTATE_CRASH_POINT("file.replace.after_write");
  if (::fsync(fd.fd) != 0) abandon(errno, "fsync");
  SHMSTATE_CRASH_POINT("file.replace.after_fsync");
  int fd_value = fd.fd;
  fd.fd = -1;
  if (::close(fd_value) != 0) abandon(errno, "close");
  if (::renameat(dirfd.fd, temp.c_str(), dirfd.fd, name.c_str()) != 0) abandon(errno, "rename over '" + target + "' from");
  SHMSTATE_CRASH_POINT("file.replace.after_rename");
  if (::fsync(dirfd.fd) != 0)
    throw Error(ErrorCode::Io, std::string(what) + ": '" + target +
                                   "' was replaced, but the directory fsync failed, so the change may not survive a "
                                   "crash: " + std::strerror(errno));
}

std::optional<std::string> read_whole_file(const std::string& path, std::string_view what) {
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail(errno, what, "open '" + path + "'");
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) fail(errno, what, "fstat '" + path + "'");
  if (S_ISDIR(st.st_mode)) throw Error(ErrorCode::InvalidArgument, std::string(what) + ": '" + path + "' is a directory");
  std::string out;
  if (st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, what, "read '" + path + "'");
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace shmstate::platform
