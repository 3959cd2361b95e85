// shmstate-demo: several processes share one segment.
//
// Usage: shmstate-demo [SEGMENT]   (default "shmstate-demo")
//
// Forks worker processes that count into a shared Atomic<std::int64_t>,
// accumulate a shared double and start together on a shared bool, and a
// supervisor process that sleeps in wait_while_equal until the count is
// complete. Leaves the segment in place so `shmstate dump SEGMENT` can show it
// (tools/demo.sh does, then removes it). Each part is a small function so later
// examples can be added beside it: the atomos chat server (an atom swapped by
// several processes, watched by this one) and mo-threads' please_stop for a
// tree of processes (segment signals, Till, ProcessExit).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>

namespace {

using namespace std::chrono_literals;
using shmstate::Atomic;
using shmstate::Segment;

struct Plan {
  int workers = 4;
  int ops_per_worker = 5000;
  double load_per_op = 0.25;  // a power of two: the sum is exact
  std::int64_t total() const { return std::int64_t{workers} * ops_per_worker; }
};

// The shared objects, as handles every forked process inherits.
struct Counters {
  Atomic<std::int64_t> requests;
  Atomic<bool> ready;
  Atomic<double> load;
  Atomic<std::int64_t> workers_done;
};

// A fresh segment under `name` (an old demo segment of that name is replaced).
Segment fresh_segment(const std::string& name) {
  if (Segment::remove(name)) std::printf("(removed an old segment '%s')\n", name.c_str());
  return Segment::create(name, {.size = 64 * 1024, .mode = 0600, .max_objects = 16});
}

Counters create_counters(Segment& segment) {
  return Counters{segment.atomic<std::int64_t>("requests", 0), segment.atomic<bool>("ready", false),
                  segment.atomic<double>("load", 0.0), segment.atomic<std::int64_t>("workers_done", 0)};
}

// Forks a process that runs fn and exits with its result (1 if it throws).
pid_t spawn(const std::function<int()>& fn) {
  std::fflush(nullptr);  // nothing buffered is written twice
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  int rc = 1;
  try {
    rc = fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmstate-demo: process %d: %s\n", ::getpid(), e.what());
  }
  std::fflush(nullptr);
  ::_exit(rc);
}

// Waits for every pid; true if all exited with status 0.
bool wait_all(const std::vector<pid_t>& pids) {
  bool ok = true;
  for (pid_t pid : pids) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ok = false;
  }
  return ok;
}

// Blocks (no polling) until `flag` is true; false if that takes over 10 s.
bool await_true(const Atomic<bool>& flag) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!flag.get()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    flag.wait_while_equal(false, 100ms);
  }
  return true;
}

int worker(Counters c, const Plan& plan) {
  if (!await_true(c.ready)) return 1;
  for (int i = 0; i < plan.ops_per_worker; ++i) {
    c.requests.add_and_get(1);
    c.load.add_and_get(plan.load_per_op);
  }
  c.workers_done.add_and_get(1);
  return 0;
}

// Sleeps until the workers' count reaches the total, waking only when some
// process changes it; reports how often it woke.
int supervisor(Counters c, const Plan& plan) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::int64_t seen = c.requests.get();
  long wakeups = 0;
  while (seen < plan.total()) {
    if (std::chrono::steady_clock::now() > deadline) return 1;
    if (c.requests.wait_while_equal(seen, 1s)) ++wakeups;
    seen = c.requests.get();
  }
  std::printf("supervisor (pid %d): saw requests reach %lld after %ld wake-ups\n", ::getpid(),
              static_cast<long long>(seen), wakeups);
  return 0;
}

void explain(const std::string& name, const Plan& plan) {
  std::printf(
      "shmstate demo, segment '%s' (/dev/shm/%s)\n"
      "  %d worker processes wait for the bool 'ready', then each does %d x\n"
      "  requests.add_and_get(1) on an Atomic<int64_t> and load.add_and_get(%g) on an\n"
      "  Atomic<double>. A supervisor process sleeps in requests.wait_while_equal()\n"
      "  until the count reaches %lld: no polling, no lost updates.\n\n",
      name.c_str(), name.c_str(), plan.workers, plan.ops_per_worker, plan.load_per_op,
      static_cast<long long>(plan.total()));
}

// Prints the final values; true if they are exactly what the plan implies.
bool report(const Counters& c, const Plan& plan, std::chrono::steady_clock::duration took) {
  std::int64_t requests = c.requests.get();
  double load = c.load.get();
  double expected_load = static_cast<double>(plan.total()) * plan.load_per_op;
  bool ok = requests == plan.total() && load == expected_load && c.workers_done.get() == plan.workers;
  std::printf("result: requests = %lld (expected %lld), load = %.2f (expected %.2f), workers_done = %lld, "
              "ready = %s\n",
              static_cast<long long>(requests), static_cast<long long>(plan.total()), load, expected_load,
              static_cast<long long>(c.workers_done.get()), c.ready.get() ? "true" : "false");
  std::printf("%s in %.0f ms\n", ok ? "OK: every update from every process counted" : "MISMATCH",
              std::chrono::duration<double, std::milli>(took).count());
  return ok;
}

int run_counter_demo(const std::string& name) {
  Plan plan;
  Segment segment = fresh_segment(name);
  Counters counters = create_counters(segment);
  explain(name, plan);

  auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  pids.push_back(spawn([&] { return supervisor(counters, plan); }));
  for (int i = 0; i < plan.workers; ++i) pids.push_back(spawn([&] { return worker(counters, plan); }));
  counters.ready.set(true);  // the start gun: wakes every waiting worker
  bool children_ok = wait_all(pids);
  bool values_ok = report(counters, plan, std::chrono::steady_clock::now() - start);
  if (!children_ok) std::fprintf(stderr, "shmstate-demo: a child process failed\n");
  return children_ok && values_ok ? 0 : 1;
}

// ---- the atomos README's chat server, across processes --------------------

namespace json = boost::json;

constexpr int kChatServers = 3;
constexpr int kClientsPerServer = 8;

// atomos: def new_client(cur_state, client): conns += 1; active_clients.add(client)
json::value new_client(const json::value& state, const std::string& client) {
  json::value next = state;
  auto& o = next.as_object();
  o["conns"] = o["conns"].as_int64() + 1;
  o["active_clients"].as_array().push_back(json::value(client));
  return next;
}

json::value client_left(const json::value& state, const std::string& client) {
  json::value next = state;
  auto& o = next.as_object();
  auto& clients = o["active_clients"].as_array();
  for (auto it = clients.begin(); it != clients.end(); ++it) {
    if (*it == client.c_str()) {
      clients.erase(it);
      break;
    }
  }
  return next;
}

// One server process: every client connects; every other one leaves again.
int chat_server(Segment segment, int id) {
  auto state = segment.open_atom("chat");
  for (int c = 0; c < kClientsPerServer; ++c) {
    std::string client = "s" + std::to_string(id) + "-c" + std::to_string(c);
    state.swap([&](const json::value& s) { return new_client(s, client); });  // may run again on conflict
    if (c % 2 == 1) state.swap([&](const json::value& s) { return client_left(s, client); });
  }
  return 0;
}

int run_chat_demo(Segment& segment) {
  std::printf(
      "\nThe atomos chat server, across processes: %d server processes share the atom\n"
      "'chat' = {\"conns\": 0, \"active_clients\": []} and call swap(new_client) and\n"
      "swap(client_left). This process watches the atom and sees their changes.\n\n",
      kChatServers);
  auto state = segment.atom("chat", json::parse(R"({"conns": 0, "active_clients": []})"));
  long events = 0, coalesced = 0;
  std::uint64_t last_seen = 0;
  state.add_watch("log", [&](const shmstate::WatchEvent& e) {
    ++events;
    if (e.coalesced()) ++coalesced;
    last_seen = e.new_version;
    if (events <= 3)
      std::printf("  watch: v%llu -> v%llu  conns=%s\n", static_cast<unsigned long long>(e.old_version),
                  static_cast<unsigned long long>(e.new_version), json::serialize(e.new_value.at("conns")).c_str());
  });
  std::vector<pid_t> pids;
  for (int i = 0; i < kChatServers; ++i) pids.push_back(spawn([&segment, i] { return chat_server(segment, i); }));
  bool children_ok = wait_all(pids);
  auto final_state = state.deref_versioned();
  // Give the dispatcher thread a moment to deliver the last change.
  for (int i = 0; i < 100 && last_seen < final_state.version; ++i) state.wait_for_change(final_state.version, 10ms);
  state.remove_watch("log");
  const auto& v = *final_state.value;
  std::int64_t conns = v.at("conns").as_int64();
  std::size_t active = v.at("active_clients").as_array().size();
  bool ok = children_ok && conns == kChatServers * kClientsPerServer &&
            active == static_cast<std::size_t>(kChatServers * kClientsPerServer / 2) &&
            final_state.version == static_cast<std::uint64_t>(kChatServers * kClientsPerServer * 3 / 2);
  std::printf("  ...\n  %ld watch events up to v%llu (%ld coalesced: the watcher fell behind and saw the ends)\n",
              events, static_cast<unsigned long long>(final_state.version), coalesced);
  std::printf("result: conns = %lld, active_clients = %zu (expected %d and %d), version %llu\n%s\n",
              static_cast<long long>(conns), active, kChatServers * kClientsPerServer,
              kChatServers * kClientsPerServer / 2, static_cast<unsigned long long>(final_state.version),
              ok ? "OK: no update lost; the watch reached the final version" : "MISMATCH");
  return ok ? 0 : 1;
}

// mo-threads' please_stop, for a tree of processes. The parent owns the
// segment signal `please_stop`; each child i gets its own `child.i.please_stop`
// and fires its own `child.i.stopped` on the way out. Children loop
//   while (!please_stop) { work(); (please_stop | Till(1s)).wait(); }
// When `please_stop` fires (here after 300 ms, or at once from a shell with
// `shmstate signal SEG please_stop go`), the parent stops the children one by
// one, last started first, waiting for `stopped | ProcessExit(child)` each
// time: a child that dies instead of stopping does not hang the parent.
constexpr int kStoppableChildren = 3;

int stoppable_child(const std::string& segment_name, int i) {
  Segment segment = Segment::open(segment_name);
  auto please_stop = segment.open_signal("child." + std::to_string(i) + ".please_stop");
  auto work = segment.open_atomic<std::int64_t>("work_done");
  while (!please_stop) {
    work.add_and_get(1);  // work()
    (please_stop | shmstate::Till(1s)).wait();
  }
  segment.open_signal("child." + std::to_string(i) + ".stopped").go();
  return 0;
}

int run_please_stop_demo(Segment& segment) {
  std::printf(
      "\nplease_stop for a process tree: %d children loop until their please_stop fires; the\n"
      "parent stops them in order when its own 'please_stop' fires (here after 300 ms, or\n"
      "from a shell: shmstate signal %s please_stop go).\n\n",
      kStoppableChildren, segment.name().c_str());
  auto please_stop = segment.signal("please_stop");
  segment.atomic<std::int64_t>("work_done", 0);
  std::vector<pid_t> pids;
  for (int i = 0; i < kStoppableChildren; ++i) {
    segment.signal("child." + std::to_string(i) + ".please_stop");
    segment.signal("child." + std::to_string(i) + ".stopped");
    std::string name = segment.name();
    pids.push_back(spawn([name, i] { return stoppable_child(name, i); }));
  }
  if (!please_stop.wait(shmstate::Till(300ms))) please_stop.go();
  bool ok = true;
  for (int i = kStoppableChildren - 1; i >= 0; --i) {
    std::string prefix = "child." + std::to_string(i);
    shmstate::ProcessExit exited(pids[static_cast<std::size_t>(i)]);
    segment.open_signal(prefix + ".please_stop").go();
    auto stopped = segment.open_signal(prefix + ".stopped");
    bool ended = (stopped | exited).wait_for(10s);
    std::printf("  child %d (pid %d): %s\n", i, pids[static_cast<std::size_t>(i)],
                !ended ? "did not stop within 10 s" : stopped.is_set() ? "stopped" : "ended without stopping");
    ok = ok && ended && stopped.is_set();
  }
  ok = wait_all(pids) && ok;
  std::printf("result: all children stopped in order (work done: %lld rounds)\n%s\n",
              static_cast<long long>(segment.open_atomic<std::int64_t>("work_done").get()),
              ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
    std::fprintf(stderr, "usage: shmstate-demo [SEGMENT]   (default: shmstate-demo)\n");
    return 2;
  }
  std::string name = argc == 2 ? argv[1] : "shmstate-demo";
  try {
    int rc = run_counter_demo(name);
    Segment segment = Segment::open(name);
    int chat = run_chat_demo(segment);
    int stop = run_please_stop_demo(segment);
    return rc != 0 ? rc : chat != 0 ? chat : stop;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmstate-demo: %s\n", e.what());
    return 1;
  }
}
