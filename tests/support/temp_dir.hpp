// Test support: a fresh directory, removed with its contents on scope exit.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

namespace test {

class TempDir {
 public:
  // Under `base`: /tmp by default; /dev/shm (tmpfs: fsync costs nothing) for
  // tests that write a file hundreds of times.
  explicit TempDir(const std::string& base = "/tmp") {
    std::string templ = base + "/shmstate-test-dir-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    // A test may have made it read-only.
    ::chmod(path_.c_str(), 0700);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  // Names in the directory, hidden ones included, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

// The file's bytes, or nullopt if it does not exist.
inline std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Temp files of the durable replace protocol (".<name>.<writer tag>.tmp")
// left in `dir`.
inline std::size_t replace_temps(const TempDir& dir) {
  std::size_t n = 0;
  for (const auto& e : dir.entries())
    if (e.size() > 4 && e[0] == '.' && e.substr(e.size() - 4) == ".tmp") ++n;
  return n;
}

// IN A CHILD PROCESS ONLY (test::Child): mounts a fresh tmpfs of `bytes` on
// `dir` in a mount namespace of this process's own, so a write there can
// really fail with ENOSPC; nothing outside the process sees the mount, and it
// goes with the process. Root: a new mount namespace; another user: a new user
// namespace too, mapping the user to itself. False when the kernel allows
// neither (the caller skips its test, saying so).
inline bool mount_small_tmpfs(const std::string& dir, std::size_t bytes) {
  if (::unshare(CLONE_NEWNS) != 0) {
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
    auto put = [](const char* file, const std::string& text) {
      int fd = ::open(file, O_WRONLY | O_CLOEXEC);
      bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0) ::close(fd);
      return ok;
    };
    if (!put("/proc/self/setgroups", "deny") ||
        !put("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1") ||
        !put("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1"))
      return false;
  }
  // Private first: else a mount below a shared mount would propagate to the
  // namespace the test runs in.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
  return ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0;
}

// Exit status of a child whose test could not run here (mount_small_tmpfs
// refused): the parent says so and checks nothing else.
inline constexpr int kSkipped = 77;

}  // namespace test
