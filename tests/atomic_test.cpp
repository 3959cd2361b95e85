// Atomic<T> in one process, and the inspect API's JSON view of atomics.
#include <doctest/doctest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <utility>

#include <boost/json.hpp>

#include <shmstate/atomic.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

#include "support/checks.hpp"
#include "support/proc.hpp"

using namespace std::chrono_literals;
using shmstate::ErrorCode;
using shmstate::Kind;
using shmstate::Segment;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::uint64_t bits(double d) { return std::bit_cast<std::uint64_t>(d); }

using test::error_of;

struct Fixture {
  test::TempSegment t{"atomic"};
  Segment seg = Segment::create(t.name(), {.size = 256 * 1024});
};

}  // namespace

// ---------------------------------------------------------------- bool

TEST_CASE_FIXTURE(Fixture, "Atomic<bool>: every call") {
  auto b = seg.atomic<bool>("flag");  // default initial: false
  CHECK(b.name() == "flag");
  CHECK(b.segment_name() == t.name());
  CHECK(b.get() == false);
  b.set(true);
  CHECK(b.get() == true);
  CHECK(b.get_and_set(false) == true);
  CHECK(b.get() == false);
  CHECK(b.get_and_set(false) == false);
  CHECK_FALSE(b.compare_and_set(true, true));
  CHECK(b.get() == false);
  CHECK(b.compare_and_set(false, true));
  CHECK(b.get() == true);
  CHECK_FALSE(b.compare_and_set(false, false));
  CHECK(b.get() == true);

  // Another handle to the same object shares the value.
  auto again = seg.open_atomic<bool>("flag");
  CHECK(again.get() == true);
  again.set(false);
  CHECK(b.get() == false);
}

// ---------------------------------------------------------------- int64

TEST_CASE_FIXTURE(Fixture, "Atomic<int64_t>: every call") {
  auto n = seg.atomic<std::int64_t>("n", 10);
  CHECK(n.get() == 10);
  n.set(20);
  CHECK(n.get() == 20);
  CHECK(n.get_and_set(30) == 20);
  CHECK(n.get() == 30);
  CHECK_FALSE(n.compare_and_set(31, 40));
  CHECK(n.get() == 30);
  CHECK(n.compare_and_set(30, 40));
  CHECK(n.get() == 40);
  CHECK(n.add_and_get(5) == 45);
  CHECK(n.get() == 45);
  CHECK(n.get_and_add(5) == 45);
  CHECK(n.get() == 50);
  CHECK(n.subtract_and_get(7) == 43);
  CHECK(n.get() == 43);
  CHECK(n.get_and_subtract(3) == 43);
  CHECK(n.get() == 40);
  CHECK(n.add_and_get(-50) == -10);
  CHECK(n.get_and_subtract(-10) == -10);
  CHECK(n.get() == 0);
}

TEST_CASE_FIXTURE(Fixture, "Atomic<int64_t>: values beyond 32 bits are exact") {
  auto n = seg.atomic<std::int64_t>("big", std::int64_t{1} << 31);
  CHECK(n.get() == 2147483648LL);  // 2^31 does not wrap to -2^31
  CHECK(n.add_and_get(std::int64_t{1} << 31) == 4294967296LL);
  n.set((std::int64_t{1} << 53) + 1);  // not representable as a double
  CHECK(n.get() == 9007199254740993LL);
  CHECK(n.add_and_get(2) == 9007199254740995LL);
  n.set(kMax - 1);
  CHECK(n.add_and_get(1) == kMax);
  CHECK(n.get() == kMax);
  n.set(kMin + 1);
  CHECK(n.subtract_and_get(1) == kMin);
  CHECK(n.compare_and_set(kMin, kMax));
  CHECK(n.get() == kMax);
  CHECK(seg.atomic<std::int64_t>("min", kMin).get() == kMin);
}

TEST_CASE_FIXTURE(Fixture, "Atomic<int64_t>: arithmetic wraps on overflow (two's complement)") {
  auto n = seg.atomic<std::int64_t>("wrap", kMax);
  CHECK(n.add_and_get(1) == kMin);
  CHECK(n.get() == kMin);
  CHECK(n.subtract_and_get(1) == kMax);
  CHECK(n.get() == kMax);
  CHECK(n.get_and_add(2) == kMax);
  CHECK(n.get() == kMin + 1);
  CHECK(n.get_and_subtract(3) == kMin + 1);
  CHECK(n.get() == kMax - 1);
  n.set(kMin);
  CHECK(n.add_and_get(kMin) == 0);  // -2^63 + -2^63 wraps to 0
  n.set(0);
  CHECK(n.subtract_and_get(kMin) == kMin);  // 0 - (-2^63) wraps to -2^63
}

// ---------------------------------------------------------------- double

TEST_CASE_FIXTURE(Fixture, "Atomic<double>: every call") {
  auto d = seg.atomic<double>("d", 1.5);
  CHECK(d.get() == 1.5);
  d.set(2.25);
  CHECK(d.get() == 2.25);
  CHECK(d.get_and_set(-3.5) == 2.25);
  CHECK(d.get() == -3.5);
  CHECK_FALSE(d.compare_and_set(3.5, 1.0));
  CHECK(d.get() == -3.5);
  CHECK(d.compare_and_set(-3.5, 1.0));
  CHECK(d.get() == 1.0);
  CHECK(d.add_and_get(0.5) == 1.5);
  CHECK(d.get_and_add(0.25) == 1.5);
  CHECK(d.get() == 1.75);
  CHECK(d.subtract_and_get(0.75) == 1.0);
  CHECK(d.get_and_subtract(2.0) == 1.0);
  CHECK(d.get() == -1.0);
}

TEST_CASE_FIXTURE(Fixture, "Atomic<double>: binary64, not float") {
  auto d = seg.atomic<double>("tenth", 0.1);
  CHECK(bits(d.get()) == bits(0.1));
  CHECK(d.get() != static_cast<double>(0.1f));
  d.set(1e300);  // beyond float's range
  CHECK(d.get() == 1e300);
  d.set(0.1);
  CHECK(bits(d.add_and_get(0.2)) == bits(0.1 + 0.2));  // 0.30000000000000004, in double
  d.set(std::numeric_limits<double>::denorm_min());
  CHECK(d.get() == std::numeric_limits<double>::denorm_min());
  d.set(std::numeric_limits<double>::infinity());
  CHECK(d.get() == std::numeric_limits<double>::infinity());
}

TEST_CASE_FIXTURE(Fixture, "Atomic<double>: compare_and_set compares bit patterns") {
  auto d = seg.atomic<double>("z", 0.0);
  // -0.0 == 0.0 numerically, but not bitwise: no swap.
  CHECK_FALSE(d.compare_and_set(-0.0, 5.0));
  CHECK(bits(d.get()) == bits(0.0));
  CHECK(d.compare_and_set(0.0, -0.0));
  CHECK(std::signbit(d.get()));
  CHECK_FALSE(d.compare_and_set(0.0, 5.0));
  CHECK(std::signbit(d.get()));
  CHECK(d.compare_and_set(-0.0, 5.0));
  CHECK(d.get() == 5.0);

  // A NaN equals the same NaN (not numerically, but bitwise).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  d.set(nan);
  CHECK(std::isnan(d.get()));
  CHECK(d.compare_and_set(nan, 7.0));
  CHECK(d.get() == 7.0);
  // ...and not a NaN with another payload.
  const double other_nan = std::bit_cast<double>(bits(nan) | 1);
  REQUIRE(std::isnan(other_nan));
  d.set(nan);
  CHECK_FALSE(d.compare_and_set(other_nan, 8.0));
  CHECK(std::isnan(d.get()));
}

// ---------------------------------------------------------------- creation

TEST_CASE_FIXTURE(Fixture, "initial applies only when the object is created") {
  CHECK(seg.atomic<std::int64_t>("i", 5).get() == 5);
  CHECK(seg.atomic<std::int64_t>("i", 9).get() == 5);
  CHECK(seg.atomic<std::int64_t>("i").get() == 5);
  CHECK(seg.atomic<double>("d", 0.5).get() == 0.5);
  CHECK(seg.atomic<double>("d", 9.0).get() == 0.5);
  CHECK(seg.atomic<bool>("b", true).get() == true);
  CHECK(seg.atomic<bool>("b", false).get() == true);
  seg.atomic<std::int64_t>("i").set(6);
  CHECK(Segment::open(t.name()).atomic<std::int64_t>("i", 100).get() == 6);
  // Defaults are zero values.
  CHECK(seg.atomic<std::int64_t>("zi").get() == 0);
  CHECK(bits(seg.atomic<double>("zd").get()) == bits(0.0));
  CHECK(seg.atomic<bool>("zb").get() == false);
}

TEST_CASE_FIXTURE(Fixture, "open_atomic: NotFound, KindMismatch") {
  auto nf = error_of([&] { seg.open_atomic<std::int64_t>("nope"); });
  CHECK(nf.code() == ErrorCode::NotFound);
  CHECK(contains(nf.what(), t.name()));
  CHECK(contains(nf.what(), "nope"));
  CHECK_FALSE(seg.find("nope").has_value());  // open_atomic never creates

  seg.atomic<double>("d", 1.0);
  auto km = error_of([&] { seg.open_atomic<std::int64_t>("d"); });
  CHECK(km.code() == ErrorCode::KindMismatch);
  CHECK(contains(km.what(), "double"));
  CHECK(contains(km.what(), "int64"));
  CHECK(error_of([&] { seg.open_atomic<bool>("d"); }).code() == ErrorCode::KindMismatch);
  CHECK(error_of([&] { seg.atomic<bool>("d", true); }).code() == ErrorCode::KindMismatch);
  CHECK(seg.open_atomic<double>("d").get() == 1.0);
}

// ---------------------------------------------------------------- waiting

TEST_CASE_FIXTURE(Fixture, "wait_while_equal: timeout and immediate return") {
  auto n = seg.atomic<std::int64_t>("w", 3);
  auto t0 = Clock::now();
  CHECK_FALSE(n.wait_while_equal(3, 50ms));
  CHECK(Clock::now() - t0 >= 50ms);

  t0 = Clock::now();
  CHECK(n.wait_while_equal(4, 10s));
  CHECK(Clock::now() - t0 < 5s);

  t0 = Clock::now();
  CHECK_FALSE(n.wait_while_equal(3, 0ns));
  CHECK_FALSE(n.wait_while_equal(3, -1s));
  CHECK(Clock::now() - t0 < 5s);

  SUBCASE("double compares bitwise here too") {
    auto d = seg.atomic<double>("wd", -0.0);
    CHECK(d.wait_while_equal(0.0, 10s));  // -0.0 differs from 0.0: returns at once
    CHECK_FALSE(d.wait_while_equal(-0.0, 20ms));
    d.set(std::numeric_limits<double>::quiet_NaN());
    CHECK_FALSE(d.wait_while_equal(std::numeric_limits<double>::quiet_NaN(), 20ms));
  }
  SUBCASE("bool") {
    auto b = seg.atomic<bool>("wb", false);
    CHECK_FALSE(b.wait_while_equal(false, 20ms));
    CHECK(b.wait_while_equal(true, 10s));
  }
}

TEST_CASE_FIXTURE(Fixture, "wait_while_equal is woken by a set from another thread") {
  auto n = seg.atomic<std::int64_t>("wt", 0);
  bool woke = false;
  std::thread waiter([&] { woke = n.wait_while_equal(0, 20s); });
  std::this_thread::sleep_for(20ms);
  n.set(1);
  waiter.join();
  CHECK(woke);
}

// ---------------------------------------------------------------- inspect

TEST_CASE_FIXTURE(Fixture, "inspect::create, get, set, add") {
  namespace in = shmstate::inspect;
  in::create(seg, Kind::Int64, "i", json::value(42));
  in::create(seg, Kind::Double, "d", json::value(0.1));
  in::create(seg, Kind::Bool, "b", json::value(true));
  in::create(seg, Kind::Int64, "zi", nullptr);
  in::create(seg, Kind::Double, "zd", nullptr);
  in::create(seg, Kind::Bool, "zb", nullptr);
  in::create(seg, Kind::Double, "from-int", json::value(3));
  in::create(seg, Kind::Int64, "huge", json::value(kMax));

  CHECK(seg.open_atomic<std::int64_t>("i").get() == 42);
  CHECK(bits(seg.open_atomic<double>("d").get()) == bits(0.1));
  CHECK(seg.open_atomic<bool>("b").get() == true);
  CHECK(seg.open_atomic<std::int64_t>("zi").get() == 0);
  CHECK(seg.open_atomic<double>("zd").get() == 0.0);
  CHECK(seg.open_atomic<bool>("zb").get() == false);
  CHECK(seg.open_atomic<double>("from-int").get() == 3.0);
  CHECK(seg.open_atomic<std::int64_t>("huge").get() == kMax);

  json::value v = in::get(seg, "i");
  REQUIRE(v.is_int64());
  CHECK(v.get_int64() == 42);
  v = in::get(seg, "d");
  REQUIRE(v.is_double());
  CHECK(bits(v.get_double()) == bits(0.1));
  v = in::get(seg, "b");
  REQUIRE(v.is_bool());
  CHECK(v.get_bool());
  CHECK(in::get(seg, "huge").as_int64() == kMax);

  in::set(seg, "i", json::value(-7));
  CHECK(seg.open_atomic<std::int64_t>("i").get() == -7);
  in::set(seg, "i", in::parse_json("9007199254740993", "value"));
  CHECK(seg.open_atomic<std::int64_t>("i").get() == 9007199254740993LL);
  in::set(seg, "d", json::value(2.5));
  CHECK(seg.open_atomic<double>("d").get() == 2.5);
  in::set(seg, "d", json::value(4));  // an integer is a number
  CHECK(seg.open_atomic<double>("d").get() == 4.0);
  in::set(seg, "b", json::value(false));
  CHECK(seg.open_atomic<bool>("b").get() == false);

  json::value r = in::add(seg, "i", json::value(10));
  REQUIRE(r.is_int64());
  CHECK(r.get_int64() == 9007199254741003LL);
  r = in::add(seg, "d", json::value(0.5));
  REQUIRE(r.is_double());
  CHECK(r.get_double() == 4.5);
  CHECK(seg.open_atomic<double>("d").get() == 4.5);
  r = in::add(seg, "d", json::value(-1));
  CHECK(r.as_double() == 3.5);

  SUBCASE("NaN and infinity are shown as strings") {
    seg.open_atomic<double>("d").set(std::numeric_limits<double>::infinity());
    CHECK(in::get(seg, "d") == json::value("Infinity"));
    seg.open_atomic<double>("d").set(std::numeric_limits<double>::quiet_NaN());
    CHECK(in::get(seg, "d") == json::value("NaN"));
  }
}

TEST_CASE_FIXTURE(Fixture, "inspect: wrong JSON types are InvalidArgument and change nothing") {
  namespace in = shmstate::inspect;
  seg.atomic<std::int64_t>("i", 5);
  seg.atomic<double>("d", 1.5);
  seg.atomic<bool>("b", true);

  auto bad_set = [&](const char* object, json::value v) {
    CAPTURE(object);
    CAPTURE(json::serialize(v));
    auto e = error_of([&] { in::set(seg, object, v); });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(contains(e.what(), object));
    CHECK(contains(e.what(), t.name()));
  };
  for (json::value v : {json::value(true), json::value(1.5), json::value("5"), json::value(nullptr),
                        json::value(json::array{1}), json::value(json::object{{"a", 1}}),
                        json::value(std::uint64_t{1} << 63)})
    bad_set("i", v);
  for (json::value v : {json::value(false), json::value("1.5"), json::value(nullptr), json::value(json::array{})})
    bad_set("d", v);
  for (json::value v : {json::value(1), json::value(0), json::value("true"), json::value(nullptr), json::value(1.0)})
    bad_set("b", v);

  CHECK(seg.open_atomic<std::int64_t>("i").get() == 5);
  CHECK(seg.open_atomic<double>("d").get() == 1.5);
  CHECK(seg.open_atomic<bool>("b").get() == true);

  // add: wrong delta types, and a kind with no arithmetic.
  for (json::value v : {json::value(1.5), json::value("1"), json::value(true), json::value(nullptr)}) {
    CAPTURE(json::serialize(v));
    CHECK(error_of([&] { in::add(seg, "i", v); }).code() == ErrorCode::InvalidArgument);
  }
  CHECK(error_of([&] { in::add(seg, "d", json::value("0.5")); }).code() == ErrorCode::InvalidArgument);
  auto km = error_of([&] { in::add(seg, "b", json::value(1)); });
  CHECK(km.code() == ErrorCode::KindMismatch);
  CHECK(contains(km.what(), "bool"));
  CHECK(seg.open_atomic<std::int64_t>("i").get() == 5);
  CHECK(seg.open_atomic<double>("d").get() == 1.5);
  CHECK(seg.open_atomic<bool>("b").get() == true);

  // create: a wrong initial creates nothing.
  for (const auto& kv : {std::pair{Kind::Int64, json::value("1")}, std::pair{Kind::Int64, json::value(2.5)},
                         std::pair{Kind::Bool, json::value(1)}, std::pair{Kind::Double, json::value(true)}}) {
    // Not a structured binding: clang 14 cannot capture those in a lambda.
    Kind kind = kv.first;
    const json::value& v = kv.second;
    CAPTURE(json::serialize(v));
    CHECK(error_of([&] { in::create(seg, kind, "new", v); }).code() == ErrorCode::InvalidArgument);
    CHECK_FALSE(seg.find("new").has_value());
  }
}

TEST_CASE_FIXTURE(Fixture, "inspect: NotFound, AlreadyExists, bad JSON text") {
  namespace in = shmstate::inspect;
  seg.atomic<std::int64_t>("i", 5);
  auto nf = error_of([&] { in::get(seg, "missing"); });
  CHECK(nf.code() == ErrorCode::NotFound);
  CHECK(contains(nf.what(), "missing"));
  CHECK(error_of([&] { in::set(seg, "missing", json::value(1)); }).code() == ErrorCode::NotFound);
  CHECK(error_of([&] { in::add(seg, "missing", json::value(1)); }).code() == ErrorCode::NotFound);
  CHECK_FALSE(seg.find("missing").has_value());

  // create of a taken name fails whatever the kind, and keeps the value.
  CHECK(error_of([&] { in::create(seg, Kind::Int64, "i", json::value(1)); }).code() == ErrorCode::AlreadyExists);
  CHECK(error_of([&] { in::create(seg, Kind::Bool, "i", json::value(true)); }).code() == ErrorCode::AlreadyExists);
  CHECK(seg.open_atomic<std::int64_t>("i").get() == 5);

  auto pj = error_of([&] { in::parse_json("{not json", "the value"); });
  CHECK(pj.code() == ErrorCode::InvalidArgument);
  CHECK(contains(pj.what(), "the value"));
  CHECK(error_of([&] { in::parse_json("", "v"); }).code() == ErrorCode::InvalidArgument);
  CHECK(error_of([&] { in::parse_json("1 2", "v"); }).code() == ErrorCode::InvalidArgument);
  CHECK(in::parse_json(" 12 ", "v") == json::value(12));
  CHECK(error_of([&] { in::get(seg, "bad/name"); }).code() == ErrorCode::InvalidArgument);
}
