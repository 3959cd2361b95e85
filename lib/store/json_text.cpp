#include "store/json_text.hpp"

#include <boost/json/serialize.hpp>

#include <shmstate/error.hpp>

#include "primitives/json_exact.hpp"

namespace shmstate::detail {

namespace json = boost::json;

namespace {

[[noreturn]] void bad_text(std::string_view text, std::size_t at, std::string_view what, const std::string& why) {
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < at && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  throw Error(ErrorCode::Corrupt, std::string(what) + ": not valid JSON at byte " + std::to_string(at) + " (line " +
                                      std::to_string(line) + ", column " + std::to_string(column) + "): " + why);
}

void pretty_into(std::string& out, const json::value& v, int indent, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(d), ' ');
  };
  if (v.is_array() && !v.get_array().empty()) {
    out += '[';
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ',';
      first = false;
      newline(depth + 1);
      pretty_into(out, e, indent, depth + 1);
    }
    newline(depth);
    out += ']';
  } else if (v.is_object() && !v.get_object().empty()) {
    out += '{';
    bool first = true;
    for (const auto& kv : v.get_object()) {
      if (!first) out += ',';
      first = false;
      newline(depth + 1);
      out += json::serialize(json::string_view(kv.key()));
      out += ": ";
      pretty_into(out, kv.value(), indent, depth + 1);
    }
    newline(depth);
    out += '}';
  } else {
    out += json::serialize(v);
  }
}

}  // namespace

json::value parse_json_document(std::string_view text, std::string_view what) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    throw Error(ErrorCode::Corrupt, std::string(what) + ": empty, not JSON");
  boost::system::error_code ec;
  std::size_t at = 0;
  json::value v = parse_json_exact(text, ec, kMaxJsonDepth, &at);
  if (ec) bad_text(text, at, what, ec.message());
  return v;
}

std::string pretty_json(const json::value& v, int indent) {
  std::string out;
  pretty_into(out, v, indent, 0);
  return out;
}

}  // namespace shmstate::detail
