// Test support: doctest helpers shared by the suites.
#pragma once

#include <exception>

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

}  // namespace test
