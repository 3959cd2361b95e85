// The one user program of the packaging tests, built as a user would build
// it: by CMake through find_package(shmstate) (tests/consumer/CMakeLists.txt),
// with `pkg-config --cflags --libs shmstate` (tests/pkgconfig_test.sh), and by
// a parent meson project that has shmstate as a subproject
// (tests/subproject_consumer/). It uses only the installed public headers,
// and exits 0 when Segment, Atomic, Atom and Error work across the library
// boundary.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include <boost/json.hpp>

#include <shmstate/shmstate.hpp>

int main() {
  const std::string name = "shmstate-consumer-" + std::to_string(::getpid());
  int rc = 0;
  try {
    auto seg = shmstate::Segment::create(name, {.size = 64 * 1024});
    auto n = seg.atomic<std::int64_t>("n", 41);
    if (n.add_and_get(1) != 42) rc = 1;
    // Not equal to 0: returns at once (an exported template member).
    if (!n.wait_while_equal(0, std::chrono::milliseconds(1))) rc = 2;
    auto atom = seg.atom("a", boost::json::parse(R"({"v": [1]})"));
    atom.swap([](const boost::json::value& v) {
      boost::json::value next = v;
      next.as_object()["v"].as_array().push_back(2);
      return next;
    });
    if (*atom.deref() != boost::json::parse(R"({"v": [1, 2]})")) rc = 3;
    // Thrown inside the library, caught here by type: shmstate::Error's
    // type_info is exported.
    try {
      seg.open_atom("missing");
      rc = 4;
    } catch (const shmstate::Error& e) {
      if (e.code() != shmstate::ErrorCode::NotFound) rc = 5;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    rc = 6;
  }
  shmstate::Segment::remove(name);
  if (rc == 0) std::printf("consumer of shmstate %s: ok\n", SHMSTATE_VERSION_STRING);
  else std::fprintf(stderr, "consumer: check %d failed\n", rc);
  return rc;
}
