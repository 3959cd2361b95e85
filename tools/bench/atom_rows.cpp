// bench rows of Atom: each candidate beside its baseline (harness.hpp).
#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>

#include "harness.hpp"
#include "primitives/atom_state.hpp"
#include "segment/segment_impl.hpp"
#include "rows.hpp"

namespace shmstate_bench {
namespace {
// atomos chat-server state.
boost::json::value document_1kb() {
  boost::json::object o;
  o["conns"] = 0;
  boost::json::array clients;
  for (int i = 0; clients.size() < 64; ++i) clients.push_back(boost::json::value("client-" + std::to_string(1000 + i)));
  o["active_clients"] = std::move(clients);
  o["server"] = "bench";
  return o;
}

// Candidate: Atom::deref of a value nobody changes (a cache hit).
// Baseline: one acquire load of a shared word, the least a reader must do.
Bodies atom_deref_bodies(Fixture& f, const std::string& object_name) {
  auto atom = f.segment.atom(object_name, document_1kb());
  auto page = std::make_shared<SharedPages>(4096);
  auto* raw = new (page->get()) std::atomic<std::uint64_t>(1);
  Body candidate = [atom](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += reinterpret_cast<std::uintptr_t>(atom.deref().get()) & 1u;
    return acc;
  };
  Body baseline = [page, raw](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += raw->load(std::memory_order_acquire);
    return acc;
  };
  return {std::move(candidate), std::move(baseline)};
}

// Candidate: Atom::swap incrementing "conns" of the shared 1 KB document
// (copy, modify, serialize, publish; on a conflict, read the winner's value
// and retry). Baseline: the JSON work a process would do without shmstate:
// parse the 1 KB text, modify the same field, serialize.
Bodies atom_swap_bodies(Fixture& f, const std::string& object_name) {
  auto atom = f.segment.atom(object_name, document_1kb());
  auto text = std::make_shared<std::string>(boost::json::serialize(document_1kb()));
  Body candidate = [atom](std::uint64_t n) mutable {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      auto next = atom.swap([](const boost::json::value& v) {
        boost::json::value copy = v;
        auto& conns = copy.as_object()["conns"];
        conns = conns.as_int64() + 1;
        return copy;
      });
      acc += static_cast<std::uint64_t>(next->as_object().at("conns").as_int64());
    }
    return acc;
  };
  Body baseline = [text](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      boost::json::value v = boost::json::parse(*text);
      auto& conns = v.as_object()["conns"];
      conns = conns.as_int64() + 1;
      acc += boost::json::serialize(v).size();
    }
    return acc;
  };
  return {std::move(candidate), std::move(baseline)};
}

// Candidate: Atom::reset to one of two 1 KB documents in turn (serialize,
// lock, copy into the inactive buffer after checking its block header,
// publish). Baseline: serializing the same document, the JSON work alone.
Bodies atom_reset_bodies(Fixture& f, const std::string& object_name) {
  auto atom = f.segment.atom(object_name, document_1kb());
  auto docs = std::make_shared<std::array<boost::json::value, 2>>();
  (*docs)[0] = document_1kb();
  (*docs)[1] = document_1kb();
  (*docs)[1].as_object()["conns"] = 1;
  Body candidate = [atom, docs](std::uint64_t n) mutable {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += atom.reset((*docs)[i & 1])->as_object().size();
    return acc;
  };
  Body baseline = [docs](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc += boost::json::serialize((*docs)[i & 1]).size();
    return acc;
  };
  return {std::move(candidate), std::move(baseline)};
}

// The same document kept as JSON text in shared memory behind a
// process-shared mutex: what processes sharing one document do without
// shmstate. Each op: lock, parse, modify, serialize, write back, unlock.
struct LockedText {
  pthread_mutex_t mutex;
  std::size_t length;
  char text[16384];
};

Body locked_text_body(const std::shared_ptr<SharedPages>& page, LockedText* doc) {
  return [page, doc](std::uint64_t n) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      ::pthread_mutex_lock(&doc->mutex);
      boost::json::value v = boost::json::parse(std::string_view(doc->text, doc->length));
      auto& conns = v.as_object()["conns"];
      conns = conns.as_int64() + 1;
      std::string out = boost::json::serialize(v);
      std::memcpy(doc->text, out.data(), out.size());  // the document stays ~1 KB
      doc->length = out.size();
      ::pthread_mutex_unlock(&doc->mutex);
      acc += out.size();
    }
    return acc;
  };
}

Bodies atom_swap_shared_bodies(Fixture& f, const std::string& object_name) {
  auto page = std::make_shared<SharedPages>(sizeof(LockedText));
  auto* doc = new (page->get()) LockedText;
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutex_init(&doc->mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  std::string text = boost::json::serialize(document_1kb());
  std::memcpy(doc->text, text.data(), text.size());
  doc->length = text.size();
  Bodies b = atom_swap_bodies(f, object_name);
  b.baseline = locked_text_body(page, doc);
  return b;
}

// Issue 6 item 3 for atoms: swap on an atom whose waiter was SIGKILLed while
// asleep (in wait_for_change, or the dispatcher of a process with a watch on
// it), against swap on a twin atom no waiter ever touched ("before the
// kill"), interleaved in one run.
enum class KilledWaiter { WaitForChange, Watch };

Bodies atom_swap_after_kill_bodies(Fixture& f, const std::string& object_name, KilledWaiter how) {
  Bodies before = atom_swap_bodies(f, object_name + ".before");
  Bodies after = atom_swap_bodies(f, object_name + ".after");
  auto info = f.segment.find(object_name + ".after");
  auto* state = reinterpret_cast<shmstate::detail::AtomState*>(f.segment.impl().base + info->offset);
  std::string segment_name = f.segment.name();
  kill_a_waiter(
      [segment_name, object_name, how] {
        auto atom = shmstate::Segment::open(segment_name).open_atom(object_name + ".after");
        if (how == KilledWaiter::WaitForChange) {
          atom.wait_for_change(atom.version(), std::chrono::hours(1));
        } else {
          atom.add_watch("bench", [](const shmstate::WatchEvent&) {});
          ::pause();
        }
      },
      [state] { return state->changes.waiters.load() != 0; });
  return {std::move(after.candidate), std::move(before.candidate)};
}

}  // namespace

void atom_rows(std::vector<Case>& cases) {
  // Atom issue, "Example and benchmark".
  // deref of an unchanged value: absolute target <= 50 ns (its baseline, a
  // plain load of a shared word, is for scale).
  cases.push_back(Case{
      "Atom::deref unchanged 1 proc",
      "std::atomic<uint64_t>::load on shm 1 proc",
      1,
      Target{std::nullopt, 50.0},
      [](Fixture& f) { return atom_deref_bodies(f, "bench.deref"); },
  });
  // swap of a 1 KB object vs the JSON work alone: target ratio <= 1.3.
  cases.push_back(Case{
      "Atom::swap 1KB 1 proc",
      "Boost.JSON parse+modify+serialize 1KB 1 proc",
      1,
      Target{1.3, std::nullopt},
      [](Fixture& f) { return atom_swap_bodies(f, "bench.swap.1"); },
  });
  // reset of a 1 KB object vs serializing it: no target (for the writer's
  // cost beside swap's, e.g. of the block header check).
  cases.push_back(Case{
      "Atom::reset 1KB 1 proc",
      "Boost.JSON serialize 1KB 1 proc",
      1,
      Target{},
      [](Fixture& f) { return atom_reset_bodies(f, "bench.reset.1"); },
  });
  // With 2 processes "the same document" is one shared document, so the
  // baseline is the same JSON work on shared text under a process-shared
  // mutex. The second row compares with private, unshared copies instead:
  // an upper bound no shared value can reach, since updates to one value
  // are serial (each must see the one before).
  cases.push_back(Case{
      "Atom::swap 1KB 2 procs",
      "locked shared text parse+modify+serialize 1KB 2 procs",
      2,
      Target{1.3, std::nullopt},
      [](Fixture& f) { return atom_swap_shared_bodies(f, "bench.swap.2"); },
  });
  cases.push_back(Case{
      "Atom::swap 1KB 2 procs (vs unshared)",
      "Boost.JSON parse+modify+serialize 1KB 2 procs, private copies",
      2,
      Target{},
      [](Fixture& f) { return atom_swap_bodies(f, "bench.swap.2u"); },
  });
  // Issue 6 item 3: a SIGKILLed waiter or watcher costs later swaps nothing: <= 1.1.
  cases.push_back(Case{
      "Atom::swap 1KB after a SIGKILLed wait_for_change 1 proc",
      "Atom::swap 1KB before the kill (twin atom, no waiter ever) 1 proc",
      1,
      Target{1.1, std::nullopt},
      [](Fixture& f) { return atom_swap_after_kill_bodies(f, "bench.swap.killw", KilledWaiter::WaitForChange); },
  });
  cases.push_back(Case{
      "Atom::swap 1KB after a SIGKILLed watcher 1 proc",
      "Atom::swap 1KB before the kill (twin atom, no watcher ever) 1 proc",
      1,
      Target{1.1, std::nullopt},
      [](Fixture& f) { return atom_swap_after_kill_bodies(f, "bench.swap.killd", KilledWaiter::Watch); },
  });
}

}  // namespace shmstate_bench
