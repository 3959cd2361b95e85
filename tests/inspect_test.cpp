// inspect over the kind table: creation races between real processes, the
// table itself, and the messages inspect gives.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/segment.hpp>

#include "primitives/kind.hpp"
#include "support/checks.hpp"
#include "support/proc.hpp"

using shmstate::ErrorCode;
using shmstate::Kind;
using shmstate::Segment;
namespace json = boost::json;
namespace in = shmstate::inspect;
using test::error_of;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

constexpr int kRacers = 4;
constexpr int kNames = 1000;

// Results of a creation race, in memory shared with the children.
struct RaceBoard {
  std::atomic<int> created[kNames];  // successes per name
  std::atomic<int> refused[kNames];  // AlreadyExists per name
};

// kRacers processes create the same kNames names, in the same order, each as
// kind_of(child). Returns the children's exit codes; fills board.
std::vector<int> race(const std::string& segment, RaceBoard* board, Kind (*kind_of)(int)) {
  return test::run_children(kRacers, [&](int child) {
    auto seg = Segment::open(segment);
    for (int n = 0; n < kNames; ++n) {
      try {
        in::create(seg, kind_of(child), "x" + std::to_string(n), nullptr);
        board->created[n].fetch_add(1);
      } catch (const shmstate::Error& e) {
        if (e.code() != ErrorCode::AlreadyExists) return 10 + static_cast<int>(e.code());
        board->refused[n].fetch_add(1);
      }
    }
    return 0;
  });
}

void check_race(const std::string& segment, RaceBoard* board) {
  auto seg = Segment::open(segment);
  int doubles = 0;
  for (int n = 0; n < kNames; ++n) {
    CAPTURE(n);
    if (board->created[n].load() != 1) ++doubles;
    CHECK(board->created[n].load() == 1);
    CHECK(board->refused[n].load() == kRacers - 1);
    CHECK(seg.find("x" + std::to_string(n)).has_value());
  }
  CHECK(doubles == 0);
}

}  // namespace

TEST_CASE("create: racing creators of the same name and kind: exactly one succeeds") {
  test::TempSegment t("inspect");
  Segment::create(t.name(), {.size = 4 << 20, .max_objects = 1024});
  test::SharedMemory mem(sizeof(RaceBoard));
  auto* board = mem.as<RaceBoard>();
  SUBCASE("int64") {
    auto codes = race(t.name(), board, [](int) { return Kind::Int64; });
    CHECK(codes == std::vector<int>(kRacers, 0));
    check_race(t.name(), board);
  }
  SUBCASE("atom") {
    auto codes = race(t.name(), board, [](int) { return Kind::Atom; });
    CHECK(codes == std::vector<int>(kRacers, 0));
    check_race(t.name(), board);
  }
  SUBCASE("different kinds: the losers get AlreadyExists, not KindMismatch") {
    auto codes = race(t.name(), board, [](int child) {
      constexpr Kind kinds[] = {Kind::Int64, Kind::Bool, Kind::Atom, Kind::Reference};
      return kinds[child % 4];
    });
    CHECK(codes == std::vector<int>(kRacers, 0));
    check_race(t.name(), board);
  }
}

TEST_CASE("the kind table: one descriptor per kind, in Kind order; names and creatable kinds come from it") {
  std::set<std::string_view> names;
  std::uint32_t previous = 0;
  for (const auto* d : shmstate::detail::kinds()) {
    CAPTURE(d->name);
    CHECK(static_cast<std::uint32_t>(d->kind) > previous);
    previous = static_cast<std::uint32_t>(d->kind);
    CHECK(names.insert(d->name).second);
    CHECK(shmstate::kind_name(d->kind) == d->name);
    CHECK(shmstate::parse_kind(d->name) == d->kind);
    CHECK(shmstate::detail::find_kind(d->kind) == d);
  }
  CHECK(shmstate::detail::find_kind(static_cast<Kind>(0)) == nullptr);
  CHECK(shmstate::kind_name(static_cast<Kind>(99)) == "unknown");

  std::vector<Kind> creatable;
  for (const auto* d : shmstate::detail::kinds())
    if (d->create != nullptr) creatable.push_back(d->kind);
  CHECK(in::creatable_kinds() == creatable);
  CHECK(in::creatable_kinds() == std::vector<Kind>{Kind::Bool, Kind::Int64, Kind::Double, Kind::Atom, Kind::Reference,
                                                     Kind::FifoLock, Kind::Monitor, Kind::Signal});
  CHECK(in::create_options(Kind::Int64).empty());
  CHECK(in::create_options(Kind::FifoLock).size() == 2);
  CHECK(in::create_options(Kind::Monitor).size() == 1);
}

TEST_CASE("inspect messages: articles, numbers in shortest form, long values as a short one-line prefix") {
  test::TempSegment t("inspect");
  auto seg = Segment::create(t.name());
  in::create(seg, Kind::Int64, "i", json::value(1));
  in::create(seg, Kind::Bool, "b", nullptr);
  in::create(seg, Kind::Atom, "a", nullptr);

  SUBCASE("an int64, an atom") {
    auto e = error_of([&] { in::set(seg, "i", json::value(1.5)); });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(contains(e.what(), "object 'i': an int64 takes an integer"));
    e = error_of([&] { seg.open_atom("i"); });
    CHECK(e.code() == ErrorCode::KindMismatch);
    CHECK(contains(e.what(), "is an int64, not an atom"));
    e = error_of([&] { seg.open_atomic<bool>("a"); });
    CHECK(contains(e.what(), "is an atom, not a bool"));
    e = error_of([&] { in::create(seg, Kind::Double, "a", nullptr); });
    CHECK(e.code() == ErrorCode::AlreadyExists);
    CHECK(contains(e.what(), "already exists (an atom)"));
  }

  SUBCASE("numbers as to_text writes them, never 1.5E0 or 1E3") {
    auto e = error_of([&] { in::set(seg, "i", json::value(1.5)); });
    CHECK(contains(e.what(), "not 1.5"));
    CHECK_FALSE(contains(e.what(), "E0"));
    e = error_of([&] { in::set(seg, "b", json::value(1e3)); });
    CHECK(contains(e.what(), "not 1000.0"));
    CHECK_FALSE(contains(e.what(), "E3"));
    e = error_of([&] { in::set(seg, "b", json::value(1e300)); });
    CHECK(contains(e.what(), "not 1e+300"));
  }

  SUBCASE("a long or multi-line value is quoted as a short prefix on one line") {
    std::string big;
    for (int k = 0; k < 20000; ++k) big += "line\n";
    json::array arr;
    arr.emplace_back(big);
    for (const json::value& v : {json::value(big), json::value(arr)}) {
      auto e = error_of([&] { in::set(seg, "i", v); });
      std::string what = e.what();
      CHECK(what.size() < 200);
      CHECK(what.find('\n') == std::string::npos);
      CHECK(contains(what, "..."));
    }
    CHECK(in::excerpt("ab\ncd") == "ab cd");
    CHECK(in::excerpt(std::string(100, 'x'), 10) == "xxxxxxx...");
    // Not cut inside a UTF-8 sequence: "é" is 2 bytes at 6..7.
    CHECK(in::excerpt("xxxxxx\xc3\xa9yyyy", 10) == "xxxxxx...");
    CHECK(in::excerpt("short", 10) == "short");
  }

  SUBCASE("an operation a kind lacks: KindMismatch naming the kinds that have it") {
    auto e = error_of([&] { in::add(seg, "b", json::value(1)); });
    CHECK(e.code() == ErrorCode::KindMismatch);
    CHECK(contains(e.what(), "object 'b': a bool has no number to add to (add works on int64 and double)"));
    e = error_of([&] { in::swap(seg, "i", [](const json::value& v) { return v; }); });
    CHECK(e.code() == ErrorCode::KindMismatch);
    CHECK(contains(e.what(), "an int64 has no value to swap (swap works on atom and reference)"));
    CHECK(seg.open_atomic<std::int64_t>("i").get() == 1);
  }

  SUBCASE("create: kinds without creation, options the kind does not take") {
    auto e = error_of([&] { in::create(seg, static_cast<Kind>(99), "s", nullptr); });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(contains(e.what(), "cannot be created here (new works on bool, int64, double, atom, reference, fifo_lock, monitor and signal)"));
    e = error_of([&] { in::create(seg, Kind::Monitor, "s", nullptr, {{"waiters", "0"}}); });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(contains(e.what(), "monitor waiters must be 1..4095, not 0"));
    e = error_of([&] { in::create(seg, Kind::Monitor, "s", nullptr, {{"waiters", "x"}}); });
    CHECK(contains(e.what(), "--waiters takes a number, not 'x'"));
    e = error_of([&] { in::create(seg, Kind::Int64, "j", json::value(1), {{"modes", "rw"}}); });
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(contains(e.what(), "an int64 takes no option --modes"));
    CHECK_FALSE(seg.find("s").has_value());
    CHECK_FALSE(seg.find("j").has_value());
  }
}
