// What an atom may hold: exactly the JSON values that Boost.JSON parses back
// from their own serialization with json_parse_options(). Writers check this
// before publishing, because a value only the writer could read (it caches
// it) would be Corrupt for every other process.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/json/parse_options.hpp>
#include <boost/json/value.hpp>

namespace shmstate::detail {

// Deepest nesting of arrays and objects an atom accepts (Boost's default is 32).
inline constexpr std::size_t kMaxJsonDepth = 512;

// The options every reader of atom bytes (and the CLI) parses with.
boost::json::parse_options json_parse_options() noexcept;

// Throws Error(InvalidArgument), prefixed by `where`, if v nests deeper than
// kMaxJsonDepth, holds a NaN or infinite double, or a string or key that is
// not valid UTF-8. Iterative: any depth is safe to check.
void check_storable(const boost::json::value& v, std::string_view where);

// True if s is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates).
bool valid_utf8(std::string_view s) noexcept;

}  // namespace shmstate::detail
