// Internal, test builds only: testing::after_next_arm's hook, run by every
// kind of arm (EventCount::arm, one_shot::arm) after it has armed.
#pragma once

#if SHMSTATE_TEST_HOOKS
namespace shmstate::detail {
// Runs the hook set by testing::after_next_arm, once (it is cleared first).
void run_after_arm_hook() noexcept;
}  // namespace shmstate::detail
#endif
