#include "primitives/json_storable.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

#include <boost/json/serialize.hpp>

#include <shmstate/error.hpp>

namespace shmstate::detail {

namespace json = boost::json;

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // ASCII fast path, 8 bytes at a time.
    while (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      if (w & 0x8080808080808080ULL) break;
      p += 8;
    }
    if (p >= end) break;
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) n = 2, lo = 0xA0;
    else if (c == 0xED) n = 2, hi = 0x9F;  // no UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) n = 2;
    else if (c == 0xF0) n = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) n = 3, hi = 0x8F;  // <= U+10FFFF
    else return false;
    if (end - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= n; ++i)
      if ((p[i] & 0xC0) != 0x80) return false;
    p += n + 1;
  }
  return true;
}

namespace {
const char* bad_shape_at(const json::value& v, std::size_t depth) noexcept {
  switch (v.kind()) {
    case json::kind::double_:
      return std::isfinite(v.get_double()) ? nullptr : "NaN or infinity (JSON has neither)";
    case json::kind::array:
      if (depth > kMaxJsonDepth) return "nested deeper than 512 levels";
      for (const auto& e : v.get_array())
        if (e.is_structured() || e.is_double())
          if (const char* why = bad_shape_at(e, depth + 1)) return why;
      return nullptr;
    case json::kind::object:
      if (depth > kMaxJsonDepth) return "nested deeper than 512 levels";
      for (const auto& kv : v.get_object())
        if (kv.value().is_structured() || kv.value().is_double())
          if (const char* why = bad_shape_at(kv.value(), depth + 1)) return why;
      return nullptr;
    default:
      return nullptr;
  }
}
}  // namespace

const char* not_storable_shape(const json::value& v) noexcept { return bad_shape_at(v, 1); }

void throw_not_storable(const std::string& where, const char* why) {
  throw Error(ErrorCode::InvalidArgument, where + ": not storable as JSON: " + why);
}

}  // namespace shmstate::detail
