// The rows of every primitive, and the one table that lists them in order.
// A new primitive adds <primitive>_rows.cpp, its function here, and one line
// in all_cases() (rows.cpp) and in tools/meson.build.
#pragma once

#include <vector>

#include "harness.hpp"

namespace shmstate_bench {

void atomic_rows(std::vector<Case>& cases);
void atom_rows(std::vector<Case>& cases);
void store_rows(std::vector<Case>& cases);
void registry_rows(std::vector<Case>& cases);
void fifo_lock_rows(std::vector<Case>& cases);
void signal_rows(std::vector<Case>& cases);
void watch_rows(std::vector<Case>& cases);

// Every row, in the order bench runs and prints them.
std::vector<Case> all_cases();

}  // namespace shmstate_bench
