// libFuzzer target: a /dev/shm file with untrusted contents, as `shmstate
// dump`/`list` and Segment::open meet it. The input becomes the whole file;
// every reader must end with a result or shmstate::Error (never a crash, a
// hang, or another exception). Seeds: real segments made by tools/fuzz.sh.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <shmstate/error.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

namespace {

const std::string& name() {
  static const std::string n = "shmstate-fuzz-" + std::to_string(::getpid());
  return n;
}

// A new file (new inode) each time: rewriting one file in place would shrink
// it under the mapping this process keeps of the previous input, and SIGBUS
// on a truncated mapping is the documented limit of POSIX shm, not a finding.
void write_segment(const std::uint8_t* data, std::size_t size) {
  std::string path = "/dev/shm/" + name();
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  if (size > 0 && ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (std::size_t{1} << 20)) return -1;  // segments this big add nothing but time
  write_segment(data, size);
  try {
    auto seg = shmstate::Segment::open(name());
    (void)shmstate::inspect::dump_text(seg);
    (void)shmstate::inspect::dump_json(seg);
    for (const auto& o : seg.objects()) {
      try {
        (void)shmstate::inspect::get(seg, o.name);
      } catch (const shmstate::Error&) {
      }
    }
  } catch (const shmstate::Error&) {
  }
  return 0;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::atexit([] { ::shm_unlink(name().c_str()); });
  return 0;
}
