#include "primitives/json_storable.hpp"

#include <cmath>
#include <utility>
#include <vector>

#include <shmstate/error.hpp>

namespace shmstate::detail {

namespace json = boost::json;

json::parse_options json_parse_options() noexcept {
  json::parse_options o;
  o.max_depth = kMaxJsonDepth;
  return o;
}

bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
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

void check_storable(const json::value& root, std::string_view where) {
  auto reject = [&](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument, std::string(where) + ": not storable as JSON: " + why);
  };
  std::vector<std::pair<const json::value*, std::size_t>> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [v, depth] = stack.back();
    stack.pop_back();
    switch (v->kind()) {
      case json::kind::double_:
        if (!std::isfinite(v->get_double())) reject("NaN or infinity (JSON has neither)");
        break;
      case json::kind::string:
        if (!valid_utf8(v->get_string())) reject("a string that is not valid UTF-8");
        break;
      case json::kind::array:
        if (depth > kMaxJsonDepth) reject("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        for (const auto& e : v->get_array()) stack.emplace_back(&e, depth + 1);
        break;
      case json::kind::object:
        if (depth > kMaxJsonDepth) reject("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        for (const auto& kv : v->get_object()) {
          if (!valid_utf8(kv.key())) reject("a key that is not valid UTF-8");
          stack.emplace_back(&kv.value(), depth + 1);
        }
        break;
      default:
        break;
    }
  }
}

}  // namespace shmstate::detail
