// The one JSON text -> value parser of the library: Boost.JSON's grammar and
// limits, but numbers converted exactly.
//
// Why: Boost.JSON 1.81's own number conversion rounds about 1 double in 10 to
// a neighbour (1 ulp; ARCHITECTURE.md fact 9), and it has no exact option.
// Values are exact across processes, so every reader of stored bytes (atoms,
// references, the store, snapshots) and every parser of user text (the CLI,
// through inspect::parse_json) goes through here, never through
// boost::json::parse.
#pragma once

#include <cstddef>
#include <string_view>

#include <boost/json/error.hpp>
#include <boost/json/value.hpp>

namespace shmstate::detail {

// Deepest nesting of arrays and objects an atom accepts (Boost's default is 32).
inline constexpr std::size_t kMaxJsonDepth = 512;  // the messages in json_storable.cpp say 512

// Parses one JSON document (RFC 8259: no comments, no trailing commas, valid
// UTF-8, nothing but whitespace after it) nesting at most max_depth levels.
// Integers become int64 (uint64 above INT64_MAX) exactly as boost::json::parse
// makes them; every other number (a fraction, an exponent, an integer beyond
// uint64) becomes the double nearest to its decimal text (std::from_chars,
// round-to-nearest-even; beyond DBL_MAX it is +-infinity, below the least
// subnormal +-0), so the shortest round-trip text of a double parses back to
// the same bits. On bad input sets ec (Boost's error codes: syntax,
// too_deep, extra_data, incomplete, exponent_overflow, ...) and returns null;
// then *error_offset (if given) is the byte offset where the text went wrong.
// Does not throw except std::bad_alloc. Cost: Boost's parse plus one
// from_chars per non-integer number.
boost::json::value parse_json_exact(std::string_view text, boost::system::error_code& ec,
                                    std::size_t max_depth = kMaxJsonDepth, std::size_t* error_offset = nullptr);

}  // namespace shmstate::detail
