// Conditions: the one-shot word, callbacks, compositions, LocalSignal, Till,
// ProcessExit, the per-process timer thread, and the one wait (wait_any).
//
// The timer thread (one per process, started by the first Till with a
// callback or the first ProcessExit) sleeps in ppoll() on an eventfd (poked
// when its set changes), every ProcessExit's pidfd, and the nearest Till
// deadline as the timeout. When a pidfd polls readable it fires that
// ProcessExit's process-local one-shot word (so waiters, who sleep on the
// word with futex_waitv, wake like for any signal) and runs its callbacks;
// when a deadline passes it runs that Till's callbacks. It holds strong
// references to the Tills and ProcessExits that have callbacks, so an
// unreferenced Till(...).then(f) still runs (the seed's weak references let
// it vanish), and weak ones to the other ProcessExits.
#include "primitives/condition.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <thread>

#include <shmstate/detail/event_count.hpp>
#include <shmstate/error.hpp>
#if SHMSTATE_TEST_HOOKS
#include <shmstate/testing.hpp>
#endif

#include "platform/arm_hook.hpp"
#include "platform/futex.hpp"
#include "platform/process.hpp"
#include "platform/read_only.hpp"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace shmstate {
namespace detail {

// ---- one-shot word ----

bool one_shot::fire(std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t old = word.fetch_or(kFired, std::memory_order_seq_cst);
  if ((old & kFired) != 0) return false;
  if ((old & kSleeper) != 0) wake(word);
  return true;
}

#if SHMSTATE_TEST_HOOKS
namespace {
std::atomic<std::uint64_t> g_signal_wakes{0};
}
#endif

void one_shot::wake(std::atomic<std::uint32_t>& word) noexcept {
#if SHMSTATE_TEST_HOOKS
  g_signal_wakes.fetch_add(1, std::memory_order_relaxed);
#endif
  platform::futex_wake(word, INT_MAX);
}

std::uint32_t one_shot::arm(std::atomic<std::uint32_t>& word, std::uint32_t bit) noexcept {
  std::uint32_t v = word.load(std::memory_order_seq_cst);
  // Read-only mapping: no bit (a store would be SIGSEGV); the waiter sleeps
  // while the word is v and sees a go() at the end of its slice.
  if ((v & bit) == 0 && !platform::is_read_only(&word))
    v = word.fetch_or(bit, std::memory_order_seq_cst) | bit;
#if SHMSTATE_TEST_HOOKS
  run_after_arm_hook();
#endif
  return v;
}

// ---- the wait set ----

void WaitSet::add_one_shot(std::atomic<std::uint32_t>& word, EventCount* summary) {
  if (defer)
    declared.push_back(OneShot{&word, summary});
  else
    add(word, one_shot::arm(word));
}

void WaitSet::arm_declared(bool wide) {
  const EventCount* last = nullptr;  // words of one segment tend to come together
  for (const OneShot& d : declared) {
    // A read-only mapping cannot be armed (neither the word nor the
    // summary): its word is slept on directly, and re-checked every slice.
    if (!wide || d.summary == nullptr || platform::is_read_only(d.word)) {
      add(*d.word, one_shot::arm(*d.word));
      continue;
    }
    // The segment's summary first (reads its sequence, sets kSleeperBit),
    // then the word (kWatch), then, in wait_any, the predicate: the order
    // the argument in event_count.hpp ("Wide waits") needs.
    if (d.summary != last && std::find(summaries.begin(), summaries.end(), d.summary) == summaries.end()) {
      add(d.summary->seq, d.summary->arm());
      summaries.push_back(d.summary);
    }
    last = d.summary;
    one_shot::arm(*d.word, one_shot::kWatch);
  }
  declared.clear();
}

// ---- callbacks ----

Condition::CallbackId next_callback_id() noexcept {
  static std::atomic<Condition::CallbackId> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void run_callback(const Condition::Callback& cb) noexcept {
  try {
    cb();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmstate: a then-callback threw: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "shmstate: a then-callback threw a non-std::exception\n");
  }
}

void CallbackList::adopt_after_fork_locked() {
  pid_t self = platform::current_pid();
  if (owner_ == self) return;
  // A fork()ed child's copy: the parent's callbacks are not the child's.
  if (owner_ != 0) callbacks_.clear();
  owner_ = self;
}

Condition::CallbackId CallbackList::add(Condition::Callback cb) {
  Condition::CallbackId id = next_callback_id();
  {
    std::lock_guard<std::mutex> g(mu_);
    adopt_after_fork_locked();
    if (!delivered_) {
      callbacks_.emplace(id, std::move(cb));
      registered_.store(true, std::memory_order_seq_cst);
      return id;
    }
  }
  run_callback(cb);
  return id;
}

void CallbackList::remove(Condition::CallbackId id) {
  std::lock_guard<std::mutex> g(mu_);
  adopt_after_fork_locked();
  callbacks_.erase(id);
}

void CallbackList::run_all() {
  std::map<Condition::CallbackId, Condition::Callback> taken;
  {
    std::lock_guard<std::mutex> g(mu_);
    adopt_after_fork_locked();
    delivered_ = true;
    taken.swap(callbacks_);
  }
  for (auto& [id, cb] : taken) run_callback(cb);
}

bool CallbackList::empty() const {
  std::lock_guard<std::mutex> g(mu_);
  return callbacks_.empty() && !delivered_;
}

// ---- nodes ----

const std::string& ConditionNode::name() const {
  static const std::string empty;
  return empty;
}
const std::string& ConditionNode::segment_name() const { return name(); }

namespace {

class ConstantNode final : public ConditionNode {
 public:
  explicit ConstantNode(bool v) : value_(v) {}
  bool is_set() const override { return value_; }
  void arm(WaitSet&) const override {}
  Condition::CallbackId then(Condition::Callback cb) override {
    if (value_) run_callback(cb);
    return next_callback_id();
  }
  void remove_then(Condition::CallbackId) override {}

 private:
  bool value_;
};

// A one-shot word in this process's memory (LocalSignal, and the word a
// ProcessExit's pidfd fires).
class LocalNode : public ConditionNode {
 public:
  bool is_set() const override { return (word_.load() & one_shot::kFired) != 0; }
  void arm(WaitSet& ws) const override { ws.add_one_shot(word_); }
  Condition::CallbackId then(Condition::Callback cb) override {
    auto id = callbacks_.add(std::move(cb));
    if (is_set()) callbacks_.run_all();
    return id;
  }
  void remove_then(Condition::CallbackId id) override { callbacks_.remove(id); }
  void go() override {
    // Whoever fires runs the callbacks; a concurrent then() that saw the
    // word set runs them too: run_all takes each exactly once.
    if (one_shot::fire(word_)) callbacks_.run_all_if_any();
  }
  bool can_go() const override { return true; }

 protected:
  mutable std::atomic<std::uint32_t> word_{0};
  CallbackList callbacks_;
};

class TillNode;
class ExitNode;

// The per-process timer thread (see the file comment).
class Timer {
 public:
  static Timer& get();
  void add_till(std::shared_ptr<TillNode> till);
  void add_exit(int pidfd, const std::shared_ptr<ExitNode>& node);
  void keep(const std::shared_ptr<ExitNode>& node);

 private:
  struct Exit {
    int fd;
    std::weak_ptr<ExitNode> weak;
    std::shared_ptr<ExitNode> strong;  // set while it has callbacks
  };
  explicit Timer(pid_t p) : pid(p) {}
  void start_locked();
  void poke() noexcept;
  void run();

  pid_t pid;
  std::mutex mu_;
  std::multimap<Clock::time_point, std::shared_ptr<TillNode>> tills_;
  std::vector<Exit> exits_;
  int event_fd_ = -1;
  bool started_ = false;
};

class TillNode final : public ConditionNode {
 public:
  explicit TillNode(Clock::time_point d) : deadline_(d) {}
  bool is_set() const override { return Clock::now() >= deadline_; }
  void arm(WaitSet& ws) const override { ws.add_deadline(deadline_); }
  Condition::CallbackId then(Condition::Callback cb) override {
    auto id = callbacks_.add(std::move(cb));
    if (is_set()) {
      callbacks_.run_all();
    } else {
      Timer::get().add_till(std::static_pointer_cast<TillNode>(shared_from_this()));
    }
    return id;
  }
  void remove_then(Condition::CallbackId id) override { callbacks_.remove(id); }
  void expire() { callbacks_.run_all(); }
  Clock::time_point deadline() const { return deadline_; }

 private:
  Clock::time_point deadline_;
  CallbackList callbacks_;
};

class ExitNode final : public LocalNode {
 public:
  explicit ExitNode(int fd) : fd_(fd) {}
  ~ExitNode() override { ::close(fd_); }
  bool is_set() const override {
    if (LocalNode::is_set()) return true;
    // The timer thread may not have looked yet: ask the pidfd directly, and
    // set the word so that waiters see it (callbacks stay with the timer).
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      one_shot::fire(word_);
      return true;
    }
    return false;
  }
  Condition::CallbackId then(Condition::Callback cb) override {
    auto id = callbacks_.add(std::move(cb));
    if (is_set()) {
      callbacks_.run_all();
    } else {
      Timer::get().keep(std::static_pointer_cast<ExitNode>(shared_from_this()));
    }
    return id;
  }
  void exited() {
    one_shot::fire(word_);
    callbacks_.run_all();
  }
  void go() override {}
  bool can_go() const override { return false; }

 private:
  int fd_;
};

Timer& Timer::get() {
  // One per process; a fork()ed child makes its own (its copy's thread does
  // not exist there, and its mutex may be held by a thread that is gone).
  static std::atomic<Timer*> current{nullptr};
  pid_t self = platform::current_pid();
  Timer* t = current.load(std::memory_order_acquire);
  while (t == nullptr || t->pid != self) {
    auto* fresh = new Timer(self);
    if (current.compare_exchange_strong(t, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;
  }
  return *t;
}

void Timer::start_locked() {
  if (started_) return;
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw Error(ErrorCode::Io, "timer thread: eventfd failed");
  std::thread([this] { run(); }).detach();
  started_ = true;
}

void Timer::poke() noexcept {
  std::uint64_t one = 1;
  if (event_fd_ >= 0) [[maybe_unused]] auto n = ::write(event_fd_, &one, sizeof one);
}

void Timer::add_till(std::shared_ptr<TillNode> till) {
  {
    std::lock_guard<std::mutex> g(mu_);
    start_locked();
    tills_.emplace(till->deadline(), std::move(till));
  }
  poke();
}

void Timer::add_exit(int pidfd, const std::shared_ptr<ExitNode>& node) {
  int dup = ::fcntl(pidfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw Error(ErrorCode::Io, "ProcessExit: cannot duplicate the pidfd");
  {
    std::lock_guard<std::mutex> g(mu_);
    start_locked();
    exits_.push_back(Exit{dup, node, nullptr});
  }
  poke();
}

void Timer::keep(const std::shared_ptr<ExitNode>& node) {
  {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& e : exits_)
      if (e.weak.lock() == node) e.strong = node;
  }
  poke();
}

void Timer::run() {
  std::vector<pollfd> fds;
  for (;;) {
    Clock::time_point next = Clock::time_point::max();
    {
      std::lock_guard<std::mutex> g(mu_);
      // Forget ProcessExits nobody can observe any more.
      std::erase_if(exits_, [](Exit& e) {
        if (e.strong != nullptr || !e.weak.expired()) return false;
        ::close(e.fd);
        return true;
      });
      fds.assign(1, pollfd{event_fd_, POLLIN, 0});
      for (auto& e : exits_) fds.push_back(pollfd{e.fd, POLLIN, 0});
      if (!tills_.empty()) next = tills_.begin()->first;
    }
    timespec ts{};
    timespec* timeout = nullptr;
    if (next != Clock::time_point::max()) {
      auto rel = std::max(next - Clock::now(), Clock::duration::zero());
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(rel).count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      timeout = &ts;
    }
    int n = ::ppoll(fds.data(), fds.size(), timeout, nullptr);
    if (n < 0 && errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      [[maybe_unused]] auto r = ::read(event_fd_, &v, sizeof v);
    }
    std::vector<std::shared_ptr<TillNode>> due;
    std::vector<std::shared_ptr<ExitNode>> ended;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto now = Clock::now();
      while (!tills_.empty() && tills_.begin()->first <= now) {
        due.push_back(std::move(tills_.begin()->second));
        tills_.erase(tills_.begin());
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        auto it = std::find_if(exits_.begin(), exits_.end(), [&](const Exit& e) { return e.fd == fds[i].fd; });
        if (it == exits_.end()) continue;
        if (auto node = it->weak.lock()) ended.push_back(std::move(node));
        ::close(it->fd);
        exits_.erase(it);
      }
    }
    for (auto& t : due) t->expire();
    for (auto& e : ended) e->exited();
  }
}

// a | b (kind 1) and a & b (kind 2) over a flat list of parts.
class CompositionNode final : public ConditionNode {
 public:
  CompositionNode(int kind, std::vector<std::shared_ptr<ConditionNode>> parts)
      : kind_(kind), parts_(std::move(parts)) {}

  bool is_set() const override {
    if (kind_ == 1)
      return std::any_of(parts_.begin(), parts_.end(), [](auto& p) { return p->is_set(); });
    return std::all_of(parts_.begin(), parts_.end(), [](auto& p) { return p->is_set(); });
  }
  void arm(WaitSet& ws) const override {
    for (auto& p : parts_)
      if (kind_ == 1 || !p->is_set()) p->arm(ws);
  }
  Condition::CallbackId then(Condition::Callback cb) override {
    // One registration on each part; the first part's callback that finds
    // the whole set runs cb (an atomic flag makes it once). The parts'
    // closures hold the Once weakly: remove_then drops it, which disarms
    // them, and removes them from the parts' lists.
    auto once = std::make_shared<Once>();
    once->cb = std::move(cb);
    Condition::CallbackId id = next_callback_id();
    {
      std::lock_guard<std::mutex> g(mu_);
      registrations_[id] = once;
    }
    auto self = std::static_pointer_cast<CompositionNode>(shared_from_this());
    for (auto& p : parts_) {
      std::weak_ptr<Once> weak = once;
      auto reg = p->then([self, weak, id] {
        auto o = weak.lock();
        if (o == nullptr || !self->is_set() || o->ran.exchange(true)) return;
        self->forget(id);
        run_callback(o->cb);
      });
      std::lock_guard<std::mutex> g(once->mu);
      once->regs.emplace_back(p, reg);
      if (once->ran.load()) break;
    }
    return id;
  }
  void remove_then(Condition::CallbackId id) override {
    std::shared_ptr<Once> o;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = registrations_.find(id);
      if (it == registrations_.end()) return;
      o = std::move(it->second);
      registrations_.erase(it);
    }
    std::vector<std::pair<std::shared_ptr<ConditionNode>, Condition::CallbackId>> regs;
    {
      std::lock_guard<std::mutex> g(o->mu);
      regs.swap(o->regs);
    }
    for (auto& [part, reg] : regs) part->remove_then(reg);
  }
  int composition() const override { return kind_; }
  const std::vector<std::shared_ptr<ConditionNode>>* parts() const override { return &parts_; }

 private:
  struct Once {
    std::atomic<bool> ran{false};
    Condition::Callback cb;
    std::mutex mu;
    std::vector<std::pair<std::shared_ptr<ConditionNode>, Condition::CallbackId>> regs;
  };
  void forget(Condition::CallbackId id) {
    std::lock_guard<std::mutex> g(mu_);
    registrations_.erase(id);
  }

  int kind_;
  std::vector<std::shared_ptr<ConditionNode>> parts_;
  std::mutex mu_;
  std::map<Condition::CallbackId, std::shared_ptr<Once>> registrations_;
};

std::chrono::nanoseconds until(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t - now);
}

}  // namespace

const std::shared_ptr<ConditionNode>& done_node() {
  static const std::shared_ptr<ConditionNode> n = std::make_shared<ConstantNode>(true);
  return n;
}
const std::shared_ptr<ConditionNode>& never_node() {
  static const std::shared_ptr<ConditionNode> n = std::make_shared<ConstantNode>(false);
  return n;
}

#if SHMSTATE_TEST_HOOKS
namespace {
std::atomic<std::uint64_t> g_wait_passes{0};
}
#endif

WaitEnd wait_any(const std::function<bool()>& done, const std::function<void(WaitSet&)>& arm_own,
                 const ConditionNode* till, Clock::time_point deadline) {
  WaitSet ws;
  ws.defer = true;
  for (;;) {
#if SHMSTATE_TEST_HOOKS
    g_wait_passes.fetch_add(1, std::memory_order_relaxed);
#endif
    if (done()) return WaitEnd::Done;
    if (till != nullptr && till->is_set()) return WaitEnd::Till;
    ws.clear();
    if (arm_own) arm_own(ws);
    if (till != nullptr) till->arm(ws);
    // More words than one futex_waitv takes: a segment's signals are waited
    // for through its watch summary, no helper thread (WaitSet).
    ws.arm_declared(ws.size() > platform::kWaitvMax);
    // Re-check after arming: a change after this moves an armed word.
    if (done()) return WaitEnd::Done;
    if (till != nullptr && till->is_set()) return WaitEnd::Till;
    auto now = Clock::now();
    if (now >= deadline) return WaitEnd::Timeout;
    auto wake = std::min({deadline, ws.deadline, now + kWaitSlice});
    if (ws.words.empty()) {
      std::this_thread::sleep_until(wake);
    } else if (ws.words.size() == 1) {
      platform::futex_wait(*ws.words[0], ws.expected[0], until(wake, now));
    } else {
      platform::futex_wait_any(ws.words.data(), ws.expected.data(), static_cast<unsigned>(ws.words.size()),
                               until(wake, now));
    }
  }
}

WaitEnd wait_event(EventCount& ec, const std::function<bool()>& done, const ConditionNode* till,
                   Clock::time_point deadline) {
  return wait_any(done, [&ec](WaitSet& ws) { ws.add(ec.seq, ec.arm()); }, till, deadline);
}

}  // namespace detail

// ---- public API ----

namespace {
using detail::ConditionNode;
using NodePtr = std::shared_ptr<ConditionNode>;

// Flattens parts of the same composition kind, so (a | b) | c is one node
// over three parts and one wait over their words.
void flatten(int kind, const NodePtr& n, std::vector<NodePtr>& out) {
  if (n->composition() == kind) {
    for (auto& p : *n->parts()) out.push_back(p);
  } else {
    out.push_back(n);
  }
}

NodePtr compose(int kind, const NodePtr& a, const NodePtr& b) {
  const NodePtr& absorbing = kind == 1 ? detail::done_node() : detail::never_node();
  const NodePtr& neutral = kind == 1 ? detail::never_node() : detail::done_node();
  if (a == absorbing || b == absorbing) return absorbing;
  if (a == neutral) return b;
  if (b == neutral) return a;
  std::vector<NodePtr> parts;
  flatten(kind, a, parts);
  flatten(kind, b, parts);
  return std::make_shared<detail::CompositionNode>(kind, std::move(parts));
}
}  // namespace

Condition::Condition(bool value) : node_(value ? detail::done_node() : detail::never_node()) {}

bool Condition::is_set() const { return node_->is_set(); }

void Condition::wait() const { wait_until(std::chrono::steady_clock::time_point::max()); }

bool Condition::wait_for(std::chrono::nanoseconds timeout) const {
  return wait_until(detail::deadline_after(timeout));
}

bool Condition::wait_until(std::chrono::steady_clock::time_point deadline) const {
  const ConditionNode* n = node_.get();
  return detail::wait_any([n] { return n->is_set(); }, [n](detail::WaitSet& ws) { n->arm(ws); }, nullptr,
                          deadline) == detail::WaitEnd::Done;
}

bool Condition::wait(const Condition& till) const {
  const ConditionNode* n = node_.get();
  return detail::wait_any([n] { return n->is_set(); }, [n](detail::WaitSet& ws) { n->arm(ws); },
                          till.node().get(), std::chrono::steady_clock::time_point::max()) == detail::WaitEnd::Done;
}

Condition::CallbackId Condition::then(Callback callback) const { return node_->then(std::move(callback)); }
void Condition::remove_then(CallbackId id) const { node_->remove_then(id); }

Condition operator|(const Condition& a, const Condition& b) { return Condition(compose(1, a.node(), b.node())); }
Condition operator&(const Condition& a, const Condition& b) { return Condition(compose(2, a.node(), b.node())); }

const Condition DONE{true};
const Condition NEVER{false};

void Signal::go() const {
  if (!node()->can_go()) throw Error(ErrorCode::InvalidArgument, "this condition cannot be fired");
  node()->go();
}
std::optional<Signal::Fired> Signal::fired() const { return node()->fired(); }
const std::string& Signal::name() const noexcept { return node()->name(); }
const std::string& Signal::segment_name() const noexcept { return node()->segment_name(); }

LocalSignal::LocalSignal() : Signal(std::make_shared<detail::LocalNode>()) {}

Till::Till(std::chrono::nanoseconds timeout) : Till(until(detail::deadline_after(timeout))) {}

Till Till::until(std::chrono::steady_clock::time_point deadline) {
  if (deadline <= std::chrono::steady_clock::now()) return Till(detail::done_node(), deadline);
  return Till(std::make_shared<detail::TillNode>(deadline), deadline);
}

namespace {
NodePtr exit_node(pid_t pid) {
  if (pid <= 0) throw Error(ErrorCode::InvalidArgument, "ProcessExit: pid " + std::to_string(pid) + " is not a process");
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return detail::done_node();
    throw Error(errno == EPERM ? ErrorCode::PermissionDenied : ErrorCode::Io,
                "ProcessExit(" + std::to_string(pid) + "): pidfd_open failed: " + std::strerror(errno));
  }
  auto node = std::make_shared<detail::ExitNode>(fd);
  detail::Timer::get().add_exit(fd, node);
  return node;
}
}  // namespace

ProcessExit::ProcessExit(pid_t pid) : Condition(exit_node(pid)) {}

#if SHMSTATE_TEST_HOOKS
std::uint64_t testing::signal_wake_count() noexcept {
  return detail::g_signal_wakes.load(std::memory_order_relaxed);
}
std::uint64_t testing::wait_pass_count() noexcept { return detail::g_wait_passes.load(std::memory_order_relaxed); }
#endif

}  // namespace shmstate
