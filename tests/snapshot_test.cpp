// The snapshot file format (lib/store/snapshot_codec): round trip, and every
// damaged, truncated, foreign or newer document refused with a clear error.
// (Segment::snapshot/restore themselves are not built yet.)
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include <boost/json.hpp>

#include "store/snapshot_codec.hpp"
#include "support/checks.hpp"

using shmstate::ErrorCode;
using shmstate::Kind;
using shmstate::detail::decode_snapshot;
using shmstate::detail::encode_snapshot;
using shmstate::detail::SnapshotDocument;
namespace json = boost::json;

namespace {

SnapshotDocument sample() {
  SnapshotDocument d;
  d.segment = "jobs";
  d.options.size = 1 << 20;
  d.options.max_objects = 16;
  d.options.mode = 0640;
  d.objects.push_back({"done", Kind::Int64, 5});
  d.objects.push_back({"ratio", Kind::Double, 0.9809778140020573});
  d.objects.push_back({"state", Kind::Atom, json::object{{"value", json::object{{"b", 1}, {"a", 2}}}, {"version", 7}}});
  d.objects.push_back({"flag", Kind::Bool, true});
  return d;
}

}  // namespace

TEST_CASE("a snapshot document round-trips exactly, keys and doubles included") {
  auto d = sample();
  std::string bytes = encode_snapshot(d);
  auto back = decode_snapshot(bytes, "snapshot 'x'");
  CHECK(back.segment == "jobs");
  CHECK(back.options.size == d.options.size);
  CHECK(back.options.max_objects == 16);
  CHECK(back.options.mode == 0640);
  REQUIRE(back.objects.size() == d.objects.size());
  for (std::size_t i = 0; i < d.objects.size(); ++i) {
    CHECK(back.objects[i].name == d.objects[i].name);
    CHECK(back.objects[i].kind == d.objects[i].kind);
    CHECK(json::serialize(back.objects[i].state) == json::serialize(d.objects[i].state));
  }
  double r = back.objects[1].state.as_double();
  double want = 0.9809778140020573;
  CHECK(std::memcmp(&r, &want, sizeof r) == 0);
  CHECK(encode_snapshot(back) == bytes);
}

TEST_CASE("every truncation of a snapshot is refused as Corrupt") {
  std::string bytes = encode_snapshot(sample());
  // Cut anywhere before the closing brace: never accepted.
  std::size_t last = bytes.rfind('}');
  for (std::size_t n = 0; n < last; ++n) {
    CAPTURE(n);
    auto e = test::error_of([&] { decode_snapshot(bytes.substr(0, n), "snapshot 'x'"); });
    CHECK((e.code() == ErrorCode::Corrupt || e.code() == ErrorCode::LayoutMismatch));
    CHECK(std::string(e.what()).rfind("snapshot 'x': ", 0) == 0);
  }
}

TEST_CASE("damaged, foreign and newer documents are clear errors") {
  auto code = [](const std::string& text) { return test::error_of([&] { decode_snapshot(text, "snapshot 'x'"); }); };
  std::string good = encode_snapshot(sample());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };
  auto newer = code(with("\"version\":1", "\"version\":2"));
  CHECK(newer.code() == ErrorCode::LayoutMismatch);
  CHECK(std::string(newer.what()).find("version 2 is newer than this library's (1)") != std::string::npos);
  CHECK(code("[1,2]").code() == ErrorCode::Corrupt);
  CHECK(code("{\"hello\":1}").code() == ErrorCode::LayoutMismatch);
  CHECK(code(with("\"kind\":\"int64\"", "\"kind\":\"int65\"")).code() == ErrorCode::Corrupt);
  CHECK(code(with("\"name\":\"ratio\"", "\"name\":\"done\"")).code() == ErrorCode::Corrupt);  // repeated
  CHECK(code(with("\"name\":\"ratio\"", "\"name\":\"bad name\"")).code() == ErrorCode::Corrupt);
  CHECK(code(with("\"max_objects\":16", "\"max_objects\":2")).code() == ErrorCode::Corrupt);
  CHECK(code(with("\"mode\":416", "\"mode\":-1")).code() == ErrorCode::Corrupt);
  CHECK(code(with("\"size\":1048576", "\"size\":\"big\"")).code() == ErrorCode::Corrupt);
  CHECK(code(with(",\"state\":5", "")).code() == ErrorCode::Corrupt);
  auto garbage = code(with("\"objects\":[", "\"objects\":[x"));
  CHECK(garbage.code() == ErrorCode::Corrupt);
  CHECK(std::string(garbage.what()).find("at byte") != std::string::npos);
}
