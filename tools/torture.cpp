// tools/torture: kill -9 torture of every kind in one segment.
//
// N worker processes (this binary, exec'ed with --worker) run random
// operations on every object of one segment while the parent SIGKILLs random
// workers at random moments (--kill-min-ms..--kill-max-ms apart) and restarts
// them. At the end it checks what must hold whatever was killed, prints one
// verdict line and exits 0 only when nothing was violated:
//   - counters equal the acknowledged operations, give or take one per kill;
//   - an atom {"a": x, "b": y} keeps x + y constant under transfers, and every
//     value read anywhere is valid and self-consistent (big values carry their
//     own length and checksum);
//   - no two live processes were ever inside incompatible FifoLock modes at
//     once (shared witness words), fencing tokens only grew, grants came in
//     queue order (every grant is recorded with the ticket its request was
//     queued with; see GrantLog), and after the run every mode of every lock
//     is granted within 1.5 s (no slot of a dead holder or waiter left behind);
//   - every surviving worker finishes when asked;
//   - writes are as cheap at the end as at the start: a burst of writes to a
//     word dead waiters slept on takes the slow wake path at most once (counted
//     through <shmstate/testing.hpp>); the time ratio is printed, not judged;
//   - segment space grows by at most kMaxBytesPerKill per kill;
//   - the store file is valid JSON and its counter equals the acknowledged
//     updates, give or take one per kill;
//   - a Monitor is never held by two live processes at once (a witness word
//     set after lock and after each wait, cleared before unlock and wait),
//     wait always returns holding it, and after the run it is lockable
//     within 1.5 s;
//   - signals, fired one after another from a pool, never go back to unset;
//     a wait on `a | b | Till` that says "set" has a or b set, one on
//     `a & b` has both, and no wait outlasts its Till by more than 1 s.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/error.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#include <shmstate/store.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

// The lock's own slots, read to learn the ticket a granted request was queued
// with (the grant-order check; no public API says it).
#include "primitives/fifo_lock.hpp"

namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using shmstate::Atomic;
using shmstate::FifoLock;
using shmstate::LockModes;
using shmstate::Segment;

namespace {

constexpr int kMaxWorkers = 32;
constexpr std::int64_t kBankTotal = 1'000'000;
constexpr std::size_t kMaxBlob = 200'000;
constexpr std::size_t kSignals = 96;  // the pool: workers fire them in order, about one a few ms
// A worker killed inside an atom write can leak the block it had allocated
// for the new value (the allocator cannot know the dead writer will never
// publish it), at most one block of the largest size class a value takes:
// 256 KiB for a 200 KB value.
constexpr std::uint64_t kMaxBytesPerKill = 256 * 1024;

struct Options {
  double seconds = 20;
  int workers = 4;
  std::uint64_t seed = 0;
  int kill_min_ms = 1;
  int kill_max_ms = 50;
  // Worker mode (set by the parent when it execs a worker).
  int worker = -1;
  std::string segment;
  std::string store;
  std::string grants;
};

[[noreturn]] void usage(int status) {
  std::fprintf(status == 0 ? stdout : stderr,
               "usage: torture [--seconds S] [--workers N] [--seed N] [--kill-min-ms MS] [--kill-max-ms MS]\n"
               "Runs N worker processes doing random operations on every kind of shmstate object in one\n"
               "segment while SIGKILLing random workers, then checks the invariants and prints one verdict\n"
               "line. Exit status 0: no violation; 1: violations; 2: usage error.\n"
               "Defaults: --seconds 20 --workers 4 --seed <time> --kill-min-ms 1 --kill-max-ms 50.\n");
  std::exit(status);
}

Options parse(int argc, char** argv) {
  Options o;
  o.seed = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "torture: %s needs a value\n", a.c_str());
        usage(2);
      }
      return argv[++i];
    };
    auto number = [&](const std::string& s) -> double {
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      if (end == s.c_str() || *end != '\0' || !(v >= 0)) {
        std::fprintf(stderr, "torture: %s takes a number >= 0, not '%s'\n", a.c_str(), s.c_str());
        usage(2);
      }
      return v;
    };
    if (a == "-h" || a == "--help") usage(0);
    else if (a == "--seconds") o.seconds = number(next());
    else if (a == "--workers") o.workers = static_cast<int>(number(next()));
    else if (a == "--seed") o.seed = static_cast<std::uint64_t>(number(next()));
    else if (a == "--kill-min-ms") o.kill_min_ms = static_cast<int>(number(next()));
    else if (a == "--kill-max-ms") o.kill_max_ms = static_cast<int>(number(next()));
    else if (a == "--worker") o.worker = static_cast<int>(number(next()));
    else if (a == "--segment") o.segment = next();
    else if (a == "--store") o.store = next();
    else if (a == "--grants") o.grants = next();
    else {
      std::fprintf(stderr, "torture: unknown option '%s'\n", a.c_str());
      usage(2);
    }
  }
  if (o.workers < 1 || o.workers > kMaxWorkers) {
    std::fprintf(stderr, "torture: --workers takes 1..%d\n", kMaxWorkers);
    usage(2);
  }
  if (o.kill_max_ms < o.kill_min_ms || o.kill_min_ms < 1) {
    std::fprintf(stderr, "torture: need 1 <= --kill-min-ms <= --kill-max-ms\n");
    usage(2);
  }
  return o;
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A process that no longer runs: gone, or an unreaped zombie (which holds
// nothing any more: the kernel released its futexes and robust mutexes).
bool is_dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] == 'Z' || line[close + 2] == 'X';
}

// The locks under test, each with its modes and a conflict matrix the
// witnesses check against (the lock's own table, read back).
struct LockSpec {
  const char* name;
  LockModes modes;
};

std::vector<LockSpec> lock_specs() {
  return {
      {"lx", LockModes::exclusive()},
      {"lrw", LockModes::read_write()},
      {"lsem", LockModes::semaphore(3)},
      {"lint", LockModes({{"IS", {"X"}, 0},
                          {"IX", {"S", "SIX", "X"}, 0},
                          {"S", {"IX", "SIX", "X"}, 0},
                          {"SIX", {"IX", "S", "SIX", "X"}, 0},
                          {"X", {"IS", "IX", "S", "SIX", "X"}, 0}})},
  };
}

bool conflicts(const LockModes& modes, std::size_t a, std::size_t b) {
  const auto& list = modes.modes()[a].conflicts;
  return std::find(list.begin(), list.end(), modes.modes()[b].name) != list.end();
}

std::string witness_name(const char* lock, int slot) { return std::string("w.") + lock + "." + std::to_string(slot); }

// ---- grant order ----
//
// FifoLock promises strict FIFO: a request is granted only when no earlier
// request still waits (compatible requests at the head go together). Queue
// order is the ticket a request gets under the lock's mutex when it queues
// (FifoLockSlot::ticket); a request granted at once, without queueing (the
// lock free and nobody waiting), has no ticket and counts as queued last and
// granted at once. Every worker records each grant it gets in a GrantLog (a
// shared file mapping, one append-only array per worker slot): the lock, the
// mode, the token, and its queue position, a key:
//   - queued with ticket t:                   key 2t;
//   - granted at once, the lock's ticket
//     counter read as T0 before the request:   key 2*T0 + 1 (after every
//     ticket issued before the request, before any issued after; its own
//     grant came later still, when nothing waited).
// After the run the parent checks, per lock, for every pair of recorded grants
// A and B with key(A) < key(B), A queued, and modes that conflict (or, both
// queued, the same capacity-limited mode, which also waits on itself):
// token(A) < token(B). A queued request B is granted only once every earlier
// request has left the queue; A did not leave it ungranted (it is recorded as
// granted), so A's grant came first, and conflicting grants' tokens grow in
// grant order. A request granted at once found nothing waiting, so every
// request queued before it had been granted (or had left) already. Requests
// that left ungranted (timed out, or killed while waiting) were never granted
// and are not recorded; a worker killed between its grant and its record
// leaves no record (records are published by a count stored after them):
// missing records only make the check see fewer pairs, never a false one. Two
// grants made at once are not ordered (whoever took the mutex first) and are
// not compared.
struct GrantRecord {
  std::uint64_t key;
  std::uint64_t token;
  std::uint32_t lock;
  std::uint32_t mode;
};

class GrantLog {
 public:
  // The parent: a new log for `workers` slots of `capacity` records each
  // (a sparse file: only the pages written take space).
  static GrantLog create(const std::string& path, int workers, std::uint64_t capacity) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("grant log " + path + ": " + std::strerror(errno));
    std::uint64_t bytes = kHeader + static_cast<std::uint64_t>(workers) * capacity * sizeof(GrantRecord);
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      ::close(fd);
      throw std::runtime_error("grant log " + path + ": ftruncate: " + std::strerror(errno));
    }
    GrantLog log(fd, bytes);
    log.word(kWorkersWord).store(static_cast<std::uint64_t>(workers));
    log.word(kCapacityWord).store(capacity);
    return log;
  }

  // A worker.
  static GrantLog open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st{};
    if (fd < 0 || ::fstat(fd, &st) != 0) throw std::runtime_error("grant log " + path + ": " + std::strerror(errno));
    return GrantLog(fd, static_cast<std::uint64_t>(st.st_size));
  }

  GrantLog(GrantLog&& o) noexcept : base_(std::exchange(o.base_, nullptr)), bytes_(o.bytes_) {}
  GrantLog(const GrantLog&) = delete;
  GrantLog& operator=(const GrantLog&) = delete;
  GrantLog& operator=(GrantLog&&) = delete;
  ~GrantLog() {
    if (base_ != nullptr) ::munmap(base_, bytes_);
  }

  int workers() const { return static_cast<int>(word(kWorkersWord).load()); }
  std::uint64_t capacity() const { return word(kCapacityWord).load(); }

  // Appends to slot's array: the record first, then the count (a kill in
  // between loses the record; the slot's next worker writes over it). False
  // when the array is full.
  bool append(int slot, const GrantRecord& r) {
    auto count = word(kCountWord + slot);
    std::uint64_t n = count.load(std::memory_order_relaxed);
    if (n >= capacity()) return false;
    records(slot)[n] = r;
    count.store(n + 1, std::memory_order_release);
    return true;
  }

  std::vector<GrantRecord> all() const {
    std::vector<GrantRecord> out;
    for (int slot = 0; slot < workers(); ++slot) {
      std::uint64_t n = std::min(word(kCountWord + slot).load(std::memory_order_acquire), capacity());
      out.insert(out.end(), records(slot), records(slot) + n);
    }
    return out;
  }

  bool full(int slot) const { return word(kCountWord + slot).load() >= capacity(); }

 private:
  // Header: workers, capacity, then one count per slot, 64 bytes apart.
  static constexpr std::size_t kWorkersWord = 0, kCapacityWord = 1, kCountWord = 8;
  static constexpr std::uint64_t kHeader = 64 * (kMaxWorkers + 1);

  GrantLog(int fd, std::uint64_t bytes) : bytes_(bytes) {
    void* p = bytes < kHeader ? MAP_FAILED : ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw std::runtime_error("grant log: cannot map it");
    base_ = static_cast<std::byte*>(p);
  }

  std::atomic_ref<std::uint64_t> word(std::size_t i) const {
    // Word 8 + s is slot s's count, alone in its 64 bytes.
    std::size_t offset = i < kCountWord ? i * 8 : 64 * (i - kCountWord + 1);
    return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(base_ + offset));
  }
  GrantRecord* records(int slot) const {
    return reinterpret_cast<GrantRecord*>(base_ + kHeader) + static_cast<std::uint64_t>(slot) * capacity();
  }

  std::byte* base_ = nullptr;
  std::uint64_t bytes_ = 0;
};

// The last ticket the lock issued (read without its mutex, as dump does).
// Read before a request: every ticket up to it was issued before the request
// took the lock's mutex.
std::uint64_t issued_tickets(const FifoLock& lock) {
  auto* s = shmstate::detail::FifoLockAccess::handle(lock)->s;
  return std::atomic_ref<std::uint64_t>(s->next_ticket).load(std::memory_order_acquire);
}

// The ticket the request granted `token` was queued with, read from its slot
// while this process holds it (nobody else writes a held slot); 0 when it was
// granted at once: a slot granted at once keeps the ticket of an earlier
// request, but only a grant from the queue sets the slot's word to Granted
// (grant(i, true)); and a grant that has no slot holding its token (an
// uncontended fast path) has no ticket either.
std::uint64_t queued_ticket(const FifoLock& lock, std::uint64_t token) {
  auto* s = shmstate::detail::FifoLockAccess::handle(lock)->s;
  auto* slots = shmstate::detail::fifo_slots(s);
  for (std::uint32_t i = 0; i < s->slot_count; ++i) {
    auto& sl = slots[i];
    if (sl.state.load(std::memory_order_acquire) != shmstate::detail::kSlotHeld ||
        std::atomic_ref<std::uint64_t>(sl.token).load(std::memory_order_relaxed) != token)
      continue;
    if (sl.word.load(std::memory_order_acquire) != shmstate::detail::kWordGranted) return 0;
    return std::atomic_ref<std::uint64_t>(sl.ticket).load(std::memory_order_relaxed);
  }
  return 0;
}

// The objects every process opens by name.
struct World {
  Segment seg;
  Atomic<bool> stop;
  Atomic<std::int64_t> counter, violations, wake;
  std::vector<Atomic<std::int64_t>> acks, store_acks, ops;
  shmstate::Atom bank, blob, changes;
  shmstate::AtomicReference ref;
  std::vector<FifoLock> locks;
  std::vector<LockModes> modes;
  std::vector<Atomic<std::int64_t>> max_token;  // per lock
  std::vector<std::vector<Atomic<std::int64_t>>> witness;  // [lock][slot]: pid * 32 + mode + 1, or 0
  shmstate::Monitor mon;
  Atomic<std::int64_t> mon_holder;  // pid of the process inside the monitor, or 0
  std::vector<shmstate::Signal> sigs;

  World(Segment s, int workers)
      : seg(std::move(s)),
        stop(seg.atomic<bool>("stop", false)),
        counter(seg.atomic<std::int64_t>("counter", 0)),
        violations(seg.atomic<std::int64_t>("violations", 0)),
        wake(seg.atomic<std::int64_t>("wake", 0)),
        bank(seg.atom("bank", json::object{{"a", kBankTotal}, {"b", 0}})),
        blob(seg.atom("blob", json::object{{"n", 0}, {"sum", fnv1a("")}, {"s", ""}})),
        changes(seg.atom("changes", 0)),
        ref(seg.atomic_reference("ref", json::object{{"seq", 0}})),
        mon(seg.monitor("mon", 2 * kMaxWorkers + 8)),
        mon_holder(seg.atomic<std::int64_t>("mon.holder", 0)) {
    for (std::size_t i = 0; i < kSignals; ++i) sigs.push_back(seg.signal("sig." + std::to_string(i)));
    for (int i = 0; i < workers; ++i) {
      acks.push_back(seg.atomic<std::int64_t>("ack." + std::to_string(i), 0));
      store_acks.push_back(seg.atomic<std::int64_t>("sack." + std::to_string(i), 0));
      ops.push_back(seg.atomic<std::int64_t>("ops." + std::to_string(i), 0));
    }
    for (auto& spec : lock_specs()) {
      locks.push_back(seg.fifo_lock(spec.name, spec.modes, 2 * kMaxWorkers + 8));
      modes.push_back(spec.modes);
      max_token.push_back(seg.atomic<std::int64_t>(std::string("tok.") + spec.name, 0));
      std::vector<Atomic<std::int64_t>> w;
      for (int i = 0; i < workers; ++i) w.push_back(seg.atomic<std::int64_t>(witness_name(spec.name, i), 0));
      witness.push_back(std::move(w));
    }
  }
};

Segment create_segment(const std::string& name) {
  shmstate::SegmentOptions o;
  o.size = std::size_t{64} << 20;
  o.max_objects = 1024;
  return Segment::create(name, o);
}

// ---- worker ----

class Worker {
 public:
  Worker(World& w, GrantLog& grants, int slot, const std::string& store_path, std::uint64_t seed)
      : w_(w), grants_(grants), slot_(slot), store_path_(store_path), rng_(seed), pid_(getpid()) {}

  void run() {
    while (!w_.stop.get()) {
      step();
      w_.ops[slot_].add_and_get(1);
    }
  }

 private:
  void violation(const std::string& what) {
    w_.violations.add_and_get(1);
    std::fprintf(stderr, "torture: VIOLATION (worker %d, pid %d): %s\n", slot_, static_cast<int>(pid_),
                 what.c_str());
  }

  std::uint64_t pick(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }

  void step() {
    switch (pick(11)) {
      case 0:
        w_.counter.add_and_get(1);
        w_.acks[slot_].add_and_get(1);  // a kill between the two loses one ack
        break;
      case 1: transfer(); break;
      case 2: blob(); break;
      case 3: reference(); break;
      case 4:
      case 5: lock(); break;
      case 6: w_.wake.wait_while_equal(w_.wake.get(), std::chrono::milliseconds(1 + pick(5))); break;
      case 7: w_.changes.wait_for_change(w_.changes.version(), std::chrono::milliseconds(1 + pick(5))); break;
      case 8: store(); break;
      case 9: monitor(); break;
      case 10: signals(); break;
    }
  }

  // Inside the monitor: nobody else alive is. A kill anywhere leaves the
  // witness naming a dead pid, which the next holder ignores.
  void enter_monitor() {
    std::int64_t other = w_.mon_holder.get();
    if (other != 0 && other != pid_ && !is_dead(static_cast<pid_t>(other)) && w_.mon_holder.get() == other)
      violation("monitor held while pid " + std::to_string(other) + " holds it");
    w_.mon_holder.set(pid_);
  }

  void monitor() {
    auto g = w_.mon.lock_for(std::chrono::milliseconds(50 + pick(200)));
    if (!g) return;
    enter_monitor();
    if (pick(2) == 0) {
      w_.mon_holder.set(0);  // wait gives the monitor up
      w_.mon.wait(*g, std::chrono::milliseconds(1 + pick(5)));
      if (!g->held()) violation("monitor wait returned without holding the monitor");
      enter_monitor();
    }
    if (pick(4) == 0) std::this_thread::sleep_for(std::chrono::microseconds(pick(1000)));
    if (pick(3) == 0) w_.mon.notify_one();
    w_.mon_holder.set(0);  // before the unlock: the next holder may look at once
  }

  void signals() {
    // Fire the first pending one now and then, so the pool lasts the run.
    std::size_t first = 0;
    while (first < kSignals && w_.sigs[first].is_set()) ++first;
    if (first < fired_seen_) violation("signal " + std::to_string(fired_seen_ - 1) + " went back to unset");
    fired_seen_ = first;
    if (first < kSignals && pick(100) == 0) w_.sigs[first].go();
    std::size_t a = pick(kSignals), b = pick(kSignals);
    auto till = std::chrono::milliseconds(1 + pick(5));
    auto start = Clock::now();
    if (pick(2) == 0) {
      if ((w_.sigs[a] | w_.sigs[b] | shmstate::Till(till)).wait_for(2s) && !w_.sigs[a].is_set() &&
          !w_.sigs[b].is_set() && Clock::now() - start < till)
        violation("a | b | Till returned set before its Till with neither a nor b set");
    } else {
      if ((w_.sigs[a] & w_.sigs[b]).wait(shmstate::Till(till)) && (!w_.sigs[a].is_set() || !w_.sigs[b].is_set()))
        violation("a & b returned set without both set");
    }
    if (Clock::now() - start > till + 1s) violation("a signal wait outlasted its Till by more than 1 s");
  }

  void check_bank(const json::value& v, const char* when) {
    const auto* o = v.if_object();
    const json::value* a = o ? o->if_contains("a") : nullptr;
    const json::value* b = o ? o->if_contains("b") : nullptr;
    if (!a || !b || !a->is_int64() || !b->is_int64()) return violation(std::string("bank ") + when + ": " + json::serialize(v));
    if (a->get_int64() + b->get_int64() != kBankTotal)
      violation(std::string("bank ") + when + ": a + b = " + std::to_string(a->get_int64() + b->get_int64()));
  }

  void transfer() {
    std::int64_t d = static_cast<std::int64_t>(pick(1000)) - 500;
    w_.bank.swap([&](const json::value& v) {
      json::object o = v.as_object();
      o["a"] = o["a"].as_int64() - d;
      o["b"] = o["b"].as_int64() + d;
      return json::value(std::move(o));
    });
    check_bank(*w_.bank.deref(), "read");
  }

  void blob() {
    if (pick(2) == 0) {
      std::size_t n = pick(3) == 0 ? 10 + pick(kMaxBlob - 10) : 10 + pick(1000);
      std::string s(n, 'x');
      for (auto& c : s) c = static_cast<char>('a' + pick(26));
      w_.blob.reset(json::object{{"n", n}, {"sum", fnv1a(s)}, {"s", s}});
      w_.changes.swap([](const json::value& v) { return json::value(v.as_int64() + 1); });
      return;
    }
    auto v = w_.blob.deref();
    const auto* o = v->if_object();
    const json::value* s = o ? o->if_contains("s") : nullptr;
    const json::value* n = o ? o->if_contains("n") : nullptr;
    const json::value* sum = o ? o->if_contains("sum") : nullptr;
    if (!s || !n || !sum || !s->is_string() || !n->is_number() || !sum->is_number())
      return violation("blob has the wrong shape: " + json::serialize(*v).substr(0, 100));
    std::string_view text = s->get_string();
    if (json::value_to<std::uint64_t>(*n) != text.size() || json::value_to<std::uint64_t>(*sum) != fnv1a(text))
      violation("blob is torn: n or sum does not match its text");
  }

  void reference() {
    auto [version, v] = w_.ref.get_versioned();
    std::int64_t seq = v.at("seq").as_int64();
    if (seq < last_seq_) violation("reference went backwards: " + std::to_string(seq) + " after " +
                                   std::to_string(last_seq_));
    last_seq_ = seq;
    w_.ref.compare_and_set(v, json::object{{"seq", seq + 1}});
  }

  void lock() {
    std::size_t l = pick(w_.locks.size());
    auto& lock = w_.locks[l];
    const auto& modes = w_.modes[l];
    std::size_t m = pick(modes.size());
    std::uint64_t tickets_before = issued_tickets(lock);
    auto guard = lock.acquire_for(lock.mode(modes.modes()[m].name), std::chrono::milliseconds(50 + pick(200)));
    if (!guard) return;
    auto token = static_cast<std::int64_t>(guard->token());
    if (token <= last_token_[l]) violation(std::string("token of ") + lock.name() + " did not grow");
    last_token_[l] = token;
    // Its place in the queue, for the grant-order check after the run.
    std::uint64_t ticket = queued_ticket(lock, guard->token());
    if (ticket != 0 && ticket <= tickets_before)
      violation(std::string(lock.name()) + ": request queued with ticket " + std::to_string(ticket) +
                ", issued before it asked (the lock had issued " + std::to_string(tickets_before) + ")");
    grants_.append(slot_, {ticket != 0 ? 2 * ticket : 2 * tickets_before + 1, guard->token(),
                           static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(m)});
    // Raise the lock's max token; for a lock whose every mode conflicts with
    // itself and the others (lx), grants are serial, so it must be a new max.
    std::int64_t seen = w_.max_token[l].get();
    while (seen < token && !w_.max_token[l].compare_and_set(seen, token)) seen = w_.max_token[l].get();
    if (l == 0 && seen >= token) violation("lx granted token " + std::to_string(token) + " after " + std::to_string(seen));
    w_.witness[l][slot_].set(static_cast<std::int64_t>(pid_) * 32 + static_cast<std::int64_t>(m) + 1);
    for (std::size_t other = 0; other < w_.witness[l].size(); ++other) {
      if (static_cast<int>(other) == slot_) continue;
      std::int64_t word = w_.witness[l][other].get();
      if (word == 0) continue;
      auto pid = static_cast<pid_t>(word / 32);
      auto mode = static_cast<std::size_t>(word % 32 - 1);
      if (mode < modes.size() && conflicts(modes, m, mode) && !is_dead(pid) && w_.witness[l][other].get() == word)
        violation(std::string(lock.name()) + ": " + modes.modes()[m].name + " granted while pid " +
                  std::to_string(pid) + " holds " + modes.modes()[mode].name);
    }
    if (m == 0 && l == 2) {  // lsem: at most 3 permits at once
      int holders = 0;
      for (auto& wit : w_.witness[l]) {
        std::int64_t word = wit.get();
        if (word != 0 && !is_dead(static_cast<pid_t>(word / 32))) ++holders;
      }
      if (holders > 3) violation("lsem has " + std::to_string(holders) + " permit holders");
    }
    if (pick(4) == 0) std::this_thread::sleep_for(std::chrono::microseconds(pick(2000)));
    w_.witness[l][slot_].set(0);  // before the release: the next holder may look at once
  }

  void store() {
    auto s = shmstate::Store::open(store_path_, json::object{{"n", 0}});
    s.update([](json::value& v) { v.as_object()["n"] = v.at("n").as_int64() + 1; });
    w_.store_acks[slot_].add_and_get(1);
  }

  World& w_;
  GrantLog& grants_;
  int slot_;
  std::string store_path_;
  std::mt19937_64 rng_;
  pid_t pid_;
  std::int64_t last_seq_ = 0;
  std::int64_t last_token_[8] = {};
  std::size_t fired_seen_ = 0;
};

// ---- parent ----

pid_t spawn(const Options& o, int slot, std::uint64_t generation) {
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("torture: fork");
    std::exit(1);
  }
  if (pid == 0) {
    std::string s = std::to_string(slot), seed = std::to_string(o.seed ^ (generation * 0x9E3779B97F4A7C15ull) ^ slot);
    execl("/proc/self/exe", "torture", "--worker", s.c_str(), "--segment", o.segment.c_str(), "--store",
          o.store.c_str(), "--grants", o.grants.c_str(), "--seed", seed.c_str(), "--workers",
          std::to_string(o.workers).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// ns per add_and_get on `a`, over n calls.
double write_cost(Atomic<std::int64_t>& a, int n) {
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) a.add_and_get(1);
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / n;
}

// The grant-order check (see GrantLog): per lock, in key order, the largest
// token of an earlier queued grant of each mode; a grant whose token is below
// that of an earlier queued grant of a mode it must wait for came out of order.
struct OrderCheck {
  std::uint64_t grants = 0, queued = 0, violations = 0;
  std::vector<std::string> examples;  // the first few
};

OrderCheck check_grant_order(std::vector<GrantRecord> records, const std::vector<FifoLock>& locks,
                             const std::vector<LockModes>& modes) {
  OrderCheck out;
  auto place = [](const GrantRecord& r) {
    return r.key % 2 == 0 ? "queued with ticket " + std::to_string(r.key / 2)
                          : "granted at once after ticket " + std::to_string(r.key / 2);
  };
  std::sort(records.begin(), records.end(), [](const GrantRecord& a, const GrantRecord& b) {
    return a.lock != b.lock ? a.lock < b.lock : a.key < b.key;
  });
  std::vector<std::optional<GrantRecord>> latest(LockModes::kMaxModes);  // per mode: the queued grant of largest token
  std::uint32_t lock = UINT32_MAX;
  for (const auto& r : records) {
    if (r.lock >= locks.size() || r.mode >= modes[r.lock].size()) {
      ++out.violations;
      if (out.examples.size() < 5) out.examples.push_back("grant log: a record names lock " + std::to_string(r.lock) +
                                                          " mode " + std::to_string(r.mode));
      continue;
    }
    if (r.lock != lock) {
      lock = r.lock;
      std::fill(latest.begin(), latest.end(), std::nullopt);
    }
    const auto& table = modes[lock];
    bool queued = r.key % 2 == 0;
    ++out.grants;
    if (queued) ++out.queued;
    const GrantRecord* first = nullptr;  // the earlier grant of largest token among the modes r waits for
    for (std::size_t a = 0; a < table.size(); ++a) {
      bool waits = conflicts(table, r.mode, a) || (queued && a == r.mode && table.modes()[a].capacity != 0);
      if (waits && latest[a] && latest[a]->token > r.token && (!first || latest[a]->token > first->token))
        first = &*latest[a];
    }
    if (first != nullptr) {
      ++out.violations;
      if (out.examples.size() < 5)
        out.examples.push_back(locks[lock].name() + ": " + table.modes()[r.mode].name + " " + place(r) +
                               " was granted (token " + std::to_string(r.token) + ") before " +
                               table.modes()[first->mode].name + " " + place(*first) + " (token " +
                               std::to_string(first->token) + "): grants out of queue order");
    }
    if (queued && (!latest[r.mode] || r.token > latest[r.mode]->token)) latest[r.mode] = r;
  }
  return out;
}

}  // namespace

int run_worker(const Options& o) {
  try {
    World w(Segment::open(o.segment), o.workers);
    auto grants = GrantLog::open(o.grants);
    if (o.worker >= grants.workers()) throw std::runtime_error("grant log has no slot " + std::to_string(o.worker));
    Worker(w, grants, o.worker, o.store, o.seed).run();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torture: worker %d: %s\n", o.worker, e.what());
    return 3;
  }
}

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.worker >= 0) return run_worker(o);

  o.segment = "shmstate-torture-" + std::to_string(getpid());
  char dir_template[] = "/tmp/shmstate-torture-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::perror("torture: mkdtemp");
    return 1;
  }
  std::string dir = dir_template;
  o.store = dir + "/store.json";
  o.grants = dir + "/grants";

  std::int64_t violations = 0;
  std::uint64_t kills = 0;
  std::int64_t total_ops = 0;
  OrderCheck order;
  std::string verdict_extra;
  std::vector<std::string> problems;
  try {
    World w(create_segment(o.segment), o.workers);
    // Room for every grant a worker slot records: about 100 a second on the
    // development machine; room for 4,000 a second is ample.
    auto grants = GrantLog::create(o.grants, o.workers, 65'536 + static_cast<std::uint64_t>(o.seconds * 4'000));
    auto probe = w.seg.atomic<std::int64_t>("probe", 0);
    double cost_start = write_cost(probe, 200'000);

    // Warm-up without kills, so that the atoms' buffers have reached their
    // working sizes before the space baseline is taken.
    {
      World& ww = w;
      std::string big(kMaxBlob, 'q');
      for (int i = 0; i < 4; ++i) ww.blob.reset(json::object{{"n", big.size()}, {"sum", fnv1a(big)}, {"s", big}});
    }
    std::uint64_t used_before = w.seg.info().used;

    std::mt19937_64 rng(o.seed);
    std::vector<pid_t> pids(static_cast<std::size_t>(o.workers));
    std::uint64_t generation = 0;
    for (int i = 0; i < o.workers; ++i) pids[i] = spawn(o, i, generation++);

    auto deadline = Clock::now() + std::chrono::duration<double>(o.seconds);
    std::uniform_int_distribution<int> gap(o.kill_min_ms, o.kill_max_ms);
    std::uniform_int_distribution<int> victim(0, o.workers - 1);
    while (Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(gap(rng)));
      int i = victim(rng);
      // A worker that exited by itself failed: report it, restart it.
      int status = 0;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        problems.push_back("worker " + std::to_string(i) + " exited by itself (status " + std::to_string(status) + ")");
      } else {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &status, 0);
        ++kills;
      }
      for (auto& lw : w.witness) lw[i].set(0);  // the dead worker holds nothing now
      pids[i] = spawn(o, i, generation++);
    }

    // Survivors must finish when asked.
    w.stop.set(true);
    auto finish_by = Clock::now() + 10s;
    for (int i = 0; i < o.workers; ++i) {
      int status = 0;
      pid_t r = 0;
      while ((r = waitpid(pids[i], &status, WNOHANG)) == 0 && Clock::now() < finish_by) std::this_thread::sleep_for(5ms);
      if (r == 0) {
        problems.push_back("worker " + std::to_string(i) + " did not finish within 10 s of the stop");
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &status, 0);
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        problems.push_back("worker " + std::to_string(i) + " ended with status " + std::to_string(status));
      }
    }

    // Grants came in queue order (every worker has ended: the log is complete).
    order = check_grant_order(grants.all(), w.locks, w.modes);
    for (const auto& e : order.examples) std::fprintf(stderr, "torture: VIOLATION: %s\n", e.c_str());
    if (order.violations > order.examples.size())
      std::fprintf(stderr, "torture: ... and %" PRIu64 " more grants out of queue order\n",
                   order.violations - order.examples.size());
    for (int i = 0; i < o.workers; ++i)
      if (grants.full(i))
        std::fprintf(stderr, "torture: note: worker slot %d filled its grant log; later grants were not checked\n", i);

    // Counters: equal to the acknowledged operations, give or take one per kill.
    std::int64_t acked = 0, store_acked = 0;
    for (auto& a : w.acks) acked += a.get();
    for (auto& a : w.store_acks) store_acked += a.get();
    for (auto& a : w.ops) total_ops += a.get();
    std::int64_t drift = w.counter.get() - acked;
    if (drift < 0 || static_cast<std::uint64_t>(drift) > kills)
      problems.push_back("counter " + std::to_string(w.counter.get()) + " vs " + std::to_string(acked) +
                         " acknowledged, " + std::to_string(kills) + " kills");

    // The bank's sum; the blob's consistency, read by a fresh reader.
    {
      auto v = Segment::open(o.segment).open_atom("bank").deref();
      const auto& obj = v->as_object();
      if (obj.at("a").as_int64() + obj.at("b").as_int64() != kBankTotal) problems.push_back("bank sum changed");
    }

    // Every mode of every lock is granted within 1.5 s: no dead holder or
    // waiter is left in the way. The semaphore's three permits at once.
    for (std::size_t l = 0; l < w.locks.size(); ++l) {
      for (const auto& mode : w.modes[l].modes()) {
        std::vector<FifoLock::Guard> held;
        int want = l == 2 ? 3 : 1;
        for (int k = 0; k < want; ++k) {
          auto g = w.locks[l].acquire_for(w.locks[l].mode(mode.name), 1500ms);
          if (!g) {
            problems.push_back(std::string(w.locks[l].name()) + ": mode " + mode.name +
                               " not granted within 1.5 s after the run");
            break;
          }
          held.push_back(std::move(*g));
        }
      }
    }

    // The monitor: lockable, no dead holder or waiter in the way.
    if (!w.mon.lock_for(1500ms)) problems.push_back("monitor not granted within 1.5 s after the run");

    // The store: valid, and its counter within one per kill of the acks.
    {
      auto s = shmstate::Store::open(o.store, json::object{{"n", 0}});
      std::int64_t n = s.value().at("n").as_int64();
      std::int64_t sd = n - store_acked;
      if (sd < 0 || static_cast<std::uint64_t>(sd) > kills)
        problems.push_back("store n " + std::to_string(n) + " vs " + std::to_string(store_acked) + " acknowledged");
    }

    // No cost left behind: writes to the word dead waiters slept on.
    // (Counted only in builds with -Dtest_hooks=true; 0 elsewhere.)
    std::uint64_t slow = 0;
#if SHMSTATE_TEST_HOOKS
    std::uint64_t slow_before = shmstate::testing::slow_notify_count();
#endif
    for (int i = 0; i < 10'000; ++i) w.wake.add_and_get(1);
#if SHMSTATE_TEST_HOOKS
    slow = shmstate::testing::slow_notify_count() - slow_before;
    if (slow > 1)
      problems.push_back("10,000 writes after the run took the slow wake path " + std::to_string(slow) + " times");
#endif
    double cost_end = write_cost(probe, 200'000);

    // Space: bounded per kill.
    std::uint64_t used_after = w.seg.info().used;
    std::uint64_t grown = used_after > used_before ? used_after - used_before : 0;
    if (grown > kMaxBytesPerKill * std::max<std::uint64_t>(kills, 1))
      problems.push_back("segment grew by " + std::to_string(grown) + " bytes over " + std::to_string(kills) + " kills");

    violations = w.violations.get();
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  " space_per_kill=%.0fB write_cost_end/start=%.2f slow_notifies=%" PRIu64 " lock_grants=%" PRIu64
                  " queued=%" PRIu64,
                  kills ? static_cast<double>(grown) / static_cast<double>(kills) : 0.0, cost_end / cost_start,
                  slow, order.grants, order.queued);
    verdict_extra = buf;
  } catch (const std::exception& e) {
    problems.push_back(std::string("error: ") + e.what());
  }
  Segment::remove(o.segment);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  for (const auto& p : problems) std::fprintf(stderr, "torture: VIOLATION: %s\n", p.c_str());
  std::int64_t total =
      violations + static_cast<std::int64_t>(problems.size()) + static_cast<std::int64_t>(order.violations);
  std::printf("torture: %s seconds=%g workers=%d seed=%" PRIu64 " operations=%" PRId64 " kills=%" PRIu64
              " violations=%" PRId64 "%s\n",
              total == 0 ? "PASS" : "FAIL", o.seconds, o.workers, o.seed, total_ops, kills, total,
              verdict_extra.c_str());
  return total == 0 ? 0 : 1;
}
