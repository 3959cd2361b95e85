// Test support: doctest helpers shared by the suites.
#pragma once

#include <exception>
#include <string>

#include <doctest/doctest.h>

#include <shmstate/error.hpp>

namespace test {

// Runs f, which must throw shmstate::Error; returns it (a failed check if not).
template <class F>
shmstate::Error error_of(F&& f) {
  try {
    f();
  } catch (const shmstate::Error& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL("threw a non-shmstate exception: " << e.what());
  }
  FAIL("did not throw");
  return shmstate::Error(shmstate::ErrorCode::Io, "unreachable");
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace test

// CHECKs that `expr` throws shmstate::Error with code `code_` (its message is
// shown when the code differs).
#define CHECK_ERROR(expr, code_)                                          \
  do {                                                                    \
    auto err_ = ::test::error_of([&] { (void)(expr); });                  \
    CHECK_MESSAGE(err_.code() == (code_), "message: " << err_.what());    \
  } while (0)
