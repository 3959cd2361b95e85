// Doubles are exact across processes (issue 6 item 2): the one JSON parser
// of the library (detail::parse_json_exact) and every path that turns stored
// or user text into values -- another process's Atom::deref, its
// AtomicReference::get, and `shmstate set`/`get` -- give back each double bit
// for bit. Boost.JSON 1.81's own parse rounds about 1 in 10 by 1 ulp.
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>

#include "primitives/json_exact.hpp"
#include "support/proc.hpp"
#include "support/run.hpp"

namespace json = boost::json;
using shmstate::Segment;
using shmstate::detail::parse_json_exact;

namespace {

std::uint64_t bits(double d) {
  std::uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// The hard cases, each of which a sloppy conversion gets wrong somewhere.
std::vector<double> edge_doubles() {
  const double two53 = 9007199254740992.0;
  std::vector<double> v = {
      5e-324,                                   // least subnormal
      -5e-324,
      1e-323,
      2.2250738585072009e-308,                  // greatest subnormal
      2.2250738585072014e-308,                  // DBL_MIN
      std::nextafter(DBL_MIN, 0.0),
      std::nextafter(DBL_MIN, 1.0),
      DBL_MAX,
      -DBL_MAX,
      std::nextafter(DBL_MAX, 0.0),
      -0.0,
      0.0,
      0.1,
      0.2,
      0.3,
      1.0 / 3.0,
      1e300,
      1e-300,
      1e23,                                     // a classic double-rounding trap
      8.98846567431158e307,
      0.9809778140020573,                       // the issue's example
      two53 + 2,                                // integers beyond 2^53 held as doubles
      two53 * 2 + 4,
      9223372036854775808.0,                    // 2^63
      -9223372036854775808.0,
      18446744073709551616.0,                   // 2^64: beyond uint64
      1e19,
      123456789012345678901234567890.0,
      std::nextafter(two53, 0.0),
      1.0,
      -1.0,
      3.0,
      DBL_EPSILON,
      1.0 + DBL_EPSILON,
  };
  return v;
}

// 200,000 random doubles, half uniform in [0, 1) (the issue's measurement),
// half uniform over finite bit patterns (every exponent, subnormals
// included), then the edge cases. Deterministic, so processes agree.
std::vector<double> test_doubles() {
  std::vector<double> v;
  std::mt19937_64 gen(20261202);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < 100000; ++i) v.push_back(unit(gen));
  while (v.size() < 200000) {
    std::uint64_t b = gen();
    double d;
    std::memcpy(&d, &b, sizeof d);
    if (std::isfinite(d)) v.push_back(d);
  }
  for (double d : edge_doubles()) v.push_back(d);
  return v;
}

// The doubles split into arrays of `per` elements, one per object.
std::vector<json::array> chunks(const std::vector<double>& all, std::size_t per) {
  std::vector<json::array> out;
  for (std::size_t i = 0; i < all.size(); i += per) {
    json::array a;
    for (std::size_t j = i; j < std::min(all.size(), i + per); ++j) a.push_back(all[j]);
    out.push_back(std::move(a));
  }
  return out;
}

// How many elements of `got` are not `want[first + i]` bit for bit (or not doubles).
std::size_t mismatches(const json::value& got, const std::vector<double>& want, std::size_t first) {
  const auto* a = got.if_array();
  if (a == nullptr) return want.size();
  std::size_t bad = 0;
  for (std::size_t i = 0; i < a->size(); ++i) {
    const auto& e = (*a)[i];
    if (!e.is_double() || bits(e.get_double()) != bits(want[first + i])) ++bad;
  }
  return bad;
}

constexpr std::size_t kPerObject = 25000;  // ~600 KB of JSON per object

shmstate::SegmentOptions big_segment() {
  shmstate::SegmentOptions o;
  o.size = std::size_t{32} << 20;
  return o;
}

// A writer process stores the doubles in objects made by `make`; a reader
// process that never saw them reads each with `read` (a fresh parse: no
// cache of the writer's) and exits with 0 when every bit matches.
template <class Make, class Read>
void writer_then_reader(const test::TempSegment& t, Make make, Read read) {
  Segment::create(t.name(), big_segment());
  test::Child writer([&] {
    Segment seg = Segment::open(t.name());
    auto parts = chunks(test_doubles(), kPerObject);
    for (std::size_t i = 0; i < parts.size(); ++i) make(seg, "d" + std::to_string(i), json::value(parts[i]));
    return 0;
  });
  REQUIRE(writer.exit_code() == 0);
  test::Child reader([&] {
    Segment seg = Segment::open(t.name());
    auto all = test_doubles();
    std::size_t bad = 0;
    for (std::size_t first = 0, i = 0; first < all.size(); first += kPerObject, ++i)
      bad += mismatches(read(seg, "d" + std::to_string(i)), all, first);
    if (bad != 0) std::fprintf(stderr, "reader: %zu of %zu doubles differ\n", bad, all.size());
    return bad == 0 ? 0 : 1;
  });
  CHECK(reader.exit_code() == 0);
}

}  // namespace

TEST_CASE("parse_json_exact: every double's serialization parses back to the same bits") {
  std::size_t bad = 0;
  for (double d : test_doubles()) {
    boost::system::error_code ec;
    json::value v = parse_json_exact(json::serialize(json::value(d)), ec);
    REQUIRE(!ec);
    if (!v.is_double() || bits(v.get_double()) != bits(d)) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("parse_json_exact: numbers keep Boost's kinds; out-of-range decimals round as IEEE says") {
  auto parse = [](std::string_view text) {
    boost::system::error_code ec;
    json::value v = parse_json_exact(text, ec);
    REQUIRE_MESSAGE(!ec, text);
    return v;
  };
  CHECK(parse("9223372036854775807").as_int64() == INT64_MAX);
  CHECK(parse("-9223372036854775808").as_int64() == INT64_MIN);
  CHECK(parse("18446744073709551615").as_uint64() == UINT64_MAX);
  CHECK(parse("-0").is_int64());
  CHECK(bits(parse("18446744073709551616").as_double()) == bits(18446744073709551616.0));
  CHECK(bits(parse("-0.0").as_double()) == bits(-0.0));
  CHECK(bits(parse("2.4703282292062328e-324").as_double()) == bits(5e-324));  // Boost 1.81 says 0
  CHECK(bits(parse("1.7976931348623158e308").as_double()) == bits(DBL_MAX));  // Boost 1.81 says inf
  CHECK(bits(parse("1e-400").as_double()) == bits(0.0));
  CHECK(bits(parse("-1e-400").as_double()) == bits(-0.0));
  CHECK(parse("1e400").as_double() == std::numeric_limits<double>::infinity());
  CHECK(parse("-1e400").as_double() == -std::numeric_limits<double>::infinity());
  CHECK(bits(parse("0.1000000000000000055511151231257827021181583404541015625").as_double()) == bits(0.1));
  CHECK(bits(parse(std::string(400, '1') + ".5").as_double()) == bits(parse(std::string(400, '1')).as_double()));
  CHECK(parse(R"({"a":[1,2.5,"x",null,true,{"b":-3e-2}]})") ==
        json::parse(R"({"a":[1,2.5,"x",null,true,{"b":-0.03}]})"));
}

TEST_CASE("parse_json_exact: malformed, huge and too-deep inputs are errors, never crashes") {
  auto error_of = [](std::string_view text, std::size_t depth = shmstate::detail::kMaxJsonDepth) {
    boost::system::error_code ec;
    json::value v = parse_json_exact(text, ec, depth);
    if (ec) CHECK(v.is_null());
    return ec;
  };
  for (std::string_view bad : {"", " ", "[1,2", "[1]x", "{\"a\":}", "01", "1.", ".5", "1e", "+1", "-", "[1,]",
                               "/*c*/1", "NaN", "Infinity", "\"\xc0\xaf\"", "\"abc", "1e2147483648", "tru",
                               "{\"a\" 1}", "[1 2]"})
    CHECK_MESSAGE(error_of(bad), "accepted: '" << bad << "'");
  CHECK(error_of("[1] ") == boost::system::error_code());  // trailing whitespace is fine

  // Depth: exactly the limit parses, one more is too deep (also for a small limit).
  auto nested = [](std::size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  CHECK(!error_of(nested(shmstate::detail::kMaxJsonDepth)));
  CHECK(error_of(nested(shmstate::detail::kMaxJsonDepth + 1)) == json::error::too_deep);
  CHECK(error_of(nested(100000)) == json::error::too_deep);  // no stack overflow
  CHECK(!error_of(nested(3), 3));
  CHECK(error_of(nested(4), 3) == json::error::too_deep);

  // Huge: a long number, a long string, many elements.
  std::string digits(1 << 20, '7');
  boost::system::error_code ec;
  CHECK(parse_json_exact(digits, ec).is_double());
  CHECK(!ec);
  std::string str = "\"" + std::string(1 << 22, 'x') + "\"";
  CHECK(parse_json_exact(str, ec).as_string().size() == std::size_t{1} << 22);
  std::string many = "[";
  for (int i = 0; i < 200000; ++i) many += "1.5,";
  many += "0.25]";
  CHECK(parse_json_exact(many, ec).as_array().size() == 200001);
  CHECK(error_of(many.substr(0, many.size() - 1)) == json::error::incomplete);
}

TEST_CASE("doubles round-trip bit for bit through another process's Atom::deref") {
  test::TempSegment t("exact");
  writer_then_reader(
      t, [](Segment& seg, const std::string& name, const json::value& v) { seg.atom(name, v); },
      [](Segment& seg, const std::string& name) { return *seg.open_atom(name).deref(); });
}

TEST_CASE("doubles round-trip bit for bit through another process's AtomicReference::get") {
  test::TempSegment t("exact");
  writer_then_reader(
      t,
      [](Segment& seg, const std::string& name, const json::value& v) {
        seg.atomic_reference(name, nullptr).set(v);  // set: the write path after creation
      },
      [](Segment& seg, const std::string& name) { return seg.open_atomic_reference(name).get(); });
}

TEST_CASE("doubles round-trip bit for bit through `shmstate set` and `get`") {
  const char* cli = std::getenv("SHMSTATE_CLI");
  REQUIRE_MESSAGE(cli != nullptr, "set SHMSTATE_CLI to the shmstate binary (meson test does)");
  test::TempSegment t("exact");
  Segment::create(t.name(), big_segment());
  auto all = test_doubles();
  // Each argument stays under Linux's 128 KB limit for one argv string.
  constexpr std::size_t per = 4000;
  REQUIRE(test::run({cli, "new", t.name(), "atom", "a", "--init", "[]"}).status == 0);
  std::size_t bad = 0;
  for (std::size_t first = 0; first < all.size(); first += per) {
    // The input is the shortest round-trip text of each double, as a person
    // or another program would write it (std::to_chars; not our serializer).
    std::string text = "[";
    std::size_t last = std::min(all.size(), first + per);
    for (std::size_t i = first; i < last; ++i) {
      char buf[32];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, all[i]);
      std::string_view s(buf, static_cast<std::size_t>(end - buf));
      text += s;
      if (s.find_first_of(".e") == std::string_view::npos) text += ".0";  // a double, not an integer
      text += i + 1 < last ? "," : "]";
    }
    auto set = test::run({cli, "set", t.name(), "a", text});
    REQUIRE_MESSAGE(set.status == 0, set.err);
    auto get = test::run({cli, "get", t.name(), "a"});
    REQUIRE_MESSAGE(get.status == 0, get.err);
    // Read the printed numbers with std::from_chars, independently of the
    // library's parser: each must be the same double.
    std::string_view out = get.out;
    REQUIRE(out.size() >= 3);
    REQUIRE(out.substr(0, 1) == "[");
    REQUIRE(out.substr(out.size() - 2) == "]\n");
    out = out.substr(1, out.size() - 3);
    std::size_t i = first;
    while (!out.empty()) {
      std::size_t comma = std::min(out.find(','), out.size());
      std::string_view num = out.substr(0, comma);
      double d = 0;
      auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), d);
      if (ec != std::errc() || end != num.data() + num.size() || i >= last || bits(d) != bits(all[i])) ++bad;
      ++i;
      out.remove_prefix(std::min(out.size(), comma + 1));
    }
    CHECK(i == last);
  }
  CHECK(bad == 0);

  // A double Atomic through set/get too.
  REQUIRE(test::run({cli, "new", t.name(), "double", "x"}).status == 0);
  for (double d : edge_doubles()) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
    std::string text(buf, end);
    // "-0" is the JSON integer zero; a double's text says so with ".0".
    if (text.find_first_of(".e") == std::string::npos) text += ".0";
    REQUIRE(test::run({cli, "set", t.name(), "x", text}).status == 0);
    CHECK_MESSAGE(bits(Segment::open(t.name()).open_atomic<double>("x").get()) == bits(d), text);
    auto get = test::run({cli, "get", t.name(), "x"});
    double back = 0;
    std::from_chars(get.out.data(), get.out.data() + get.out.size() - 1, back);
    CHECK_MESSAGE(bits(back) == bits(d), text << " printed as " << get.out);
  }
}
