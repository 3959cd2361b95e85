// shmstate/config.hpp: included first by every public header.
//
// 1. shmstate is C++20 (concepts, std::span, std::stop_token). A program
//    compiled as C++17 (g++ 12's default) stops here with one clear line
//    instead of a page of errors about `concept`. With CMake,
//    target_link_libraries(app shmstate::shmstate) sets cxx_std_20 for you;
//    with pkg-config, add -std=c++20.
// 2. SHMSTATE_API marks what libshmstate.so exports. The library is built
//    with -fvisibility=hidden -fvisibility-inlines-hidden, so everything
//    else (shmstate::detail, the platform layer, the test hooks) stays
//    internal and can change in any release without breaking programs.
#pragma once

#if !defined(__cplusplus) || __cplusplus < 202002L
#error "shmstate needs C++20: compile with -std=c++20 or later (CMake: link shmstate::shmstate, which sets cxx_std_20)"
// A missing header is a fatal error: compilation stops right after the line
// above instead of going on into the C++20 code below.
#include <shmstate-needs-cxx20>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SHMSTATE_API __attribute__((visibility("default")))
#else
#define SHMSTATE_API
#endif
