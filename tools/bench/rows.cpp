#include "rows.hpp"

namespace shmstate_bench {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  atomic_rows(cases);
  atom_rows(cases);
  store_rows(cases);
  registry_rows(cases);
  fifo_lock_rows(cases);
  signal_rows(cases);
  watch_rows(cases);
  return cases;
}

}  // namespace shmstate_bench
