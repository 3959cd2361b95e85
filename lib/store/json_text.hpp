// JSON text for files (store files, segment snapshots): the parse that
// reports where the text is bad, and the indented serializer.
#pragma once

#include <string>
#include <string_view>

#include <boost/json/value.hpp>

namespace shmstate::detail {

// Parses one JSON document (whitespace around it allowed; nesting up to
// kMaxJsonDepth). Throws Error(Corrupt) "<what>: not valid JSON at byte N
// (line L, column C): <why>"; an empty text is "empty, not JSON".
boost::json::value parse_json_document(std::string_view text, std::string_view what);

// `v` with `indent` spaces per level, one array element or object member per
// line, "key": value, empty containers as [] and {}. Scalars and strings are
// written exactly as boost::json::serialize writes them.
std::string pretty_json(const boost::json::value& v, int indent);

}  // namespace shmstate::detail
