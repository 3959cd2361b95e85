// What an atom may hold: exactly the JSON values that parse_json_exact parses
// back from their Boost.JSON serialization. Writers check this
// before publishing, because a value only the writer could read (it caches
// it) would be Corrupt for every other process.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "primitives/json_exact.hpp"

namespace shmstate::detail {

// The bytes to store for v: its serialization, after checking that every
// process can parse them back with parse_json_exact(). Throws
// Error(InvalidArgument) "<where()>: not storable as JSON: <why>" if v nests
// deeper than kMaxJsonDepth, holds a NaN or infinite double, or a string or
// key that is not valid UTF-8 (checked on the output in one pass: the
// serializer copies string bytes through). On the write path of every atom
// change: one bounded recursion (it stops at depth kMaxJsonDepth + 1) and one
// scan of the bytes.
template <class Where>
std::string encode_storable(const boost::json::value& v, Where&& where);

// True if s is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates).
bool valid_utf8(std::string_view s) noexcept;

// Why v's shape cannot be stored (depth, NaN/infinity), or nullptr.
const char* not_storable_shape(const boost::json::value& v) noexcept;
[[noreturn]] void throw_not_storable(const std::string& where, const char* why);

template <class Where>
std::string encode_storable(const boost::json::value& v, Where&& where) {
  if (const char* why = not_storable_shape(v)) throw_not_storable(where(), why);
  std::string bytes = boost::json::serialize(v);
  if (!valid_utf8(bytes)) throw_not_storable(where(), "a string or key that is not valid UTF-8");
  return bytes;
}

}  // namespace shmstate::detail
