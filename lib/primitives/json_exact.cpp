#include "primitives/json_exact.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include <boost/json/basic_parser_impl.hpp>  // basic_parser's definitions, for our own handler
#include <boost/json/value_stack.hpp>

namespace shmstate::detail {

namespace json = boost::json;

namespace {

// Boost's own parse handler (boost/json/detail/handler.hpp) with one change:
// a double's value comes from its text, not from Boost's conversion.
struct ExactHandler {
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  json::value_stack st;
  std::string number;  // the earlier parts of a number split across writes (none in one write)

  ExactHandler(json::storage_ptr sp, unsigned char* buffer, std::size_t size) : st(std::move(sp), buffer, size) {}

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) { return true; }
  bool on_object_end(std::size_t n, json::error_code&) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t n, json::error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    st.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view s, json::error_code&) {
    number.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double inexact, json::string_view s, json::error_code&) {
    std::string_view text(s.data(), s.size());
    if (!number.empty()) {
      number.append(text);
      text = number;
    }
    double d = 0;
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (err == std::errc::result_out_of_range) {
      // The text's magnitude is beyond DBL_MAX or below half the least
      // subnormal; Boost's value, even 1 ulp off, tells which side.
      bool negative = text.front() == '-';
      d = std::fabs(inexact) >= 1.0 ? std::numeric_limits<double>::infinity() : 0.0;
      if (negative) d = -d;
    } else if (err != std::errc() || end != text.data() + text.size()) {
      d = inexact;  // unreachable: the parser validated the grammar, which from_chars accepts
    }
    number.clear();
    st.push_double(d);
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(json::error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

}  // namespace

json::value parse_json_exact(std::string_view text, boost::system::error_code& ec, std::size_t max_depth,
                             std::size_t* error_offset) {
  // As boost::json::parse does: the value stack starts in a stack buffer.
  unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
  json::parse_options opt;
  opt.max_depth = max_depth;
  json::basic_parser<ExactHandler> p(opt, json::storage_ptr(), temp, sizeof temp);
  p.handler().st.reset();
  std::size_t n = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && n < text.size()) ec = json::error::extra_data;
  if (ec) {
    if (error_offset != nullptr) *error_offset = n;  // write_some stops where the text went wrong
    return nullptr;
  }
  return p.handler().st.release();
}

}  // namespace shmstate::detail
