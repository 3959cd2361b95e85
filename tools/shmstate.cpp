// shmstate: look at and change shmstate segments from the shell.
//
// Thin by design (STYLE.md, LevelDB's leveldbutil): this file parses argv,
// calls Segment and shmstate::inspect, prints, and maps errors to exit
// statuses. Everything else lives in the library. Documented in docs/cli.md,
// which, with the man page, the --help texts and the command table here, is
// generated from docs/cli.toml (adding a command: see there).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include <shmstate/fifo_lock.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#include <shmstate/store.hpp>
#include <shmstate/version.hpp>

namespace {

namespace inspect = shmstate::inspect;

enum Exit : int { kOk = 0, kError = 1, kUsage = 2, kNotFound = 3, kTimedOut = 4 };
// `lock` without the lock (-n, -w) exits like a timed-out `signal wait` (unless -E).
constexpr int kNotLocked = kTimedOut;

std::string kinds_text() {
  std::string s;
  for (auto k : inspect::creatable_kinds()) s += (s.empty() ? "" : ", ") + std::string(shmstate::kind_name(k));
  return s;
}

// "--modes" for each kind's option of `new` (they come from the kinds' own
// descriptors), once each; static, so Command can hold views of them.
const std::vector<std::string>& kind_option_flags() {
  static const std::vector<std::string> flags = [] {
    std::vector<std::string> out;
    for (auto k : inspect::creatable_kinds())
      for (const auto& o : inspect::create_options(k))
        if (std::find(out.begin(), out.end(), "--" + std::string(o.name)) == out.end())
          out.push_back("--" + std::string(o.name));
    return out;
  }();
  return flags;
}

// The per-kind options for `new --help` (empty when no kind has any).
std::string kind_options_text() {
  std::string s;
  for (auto k : inspect::creatable_kinds())
    for (const auto& o : inspect::create_options(k)) {
      char line[256];
      std::string head = "--" + std::string(o.name) + " " + std::string(o.value_name);
      std::snprintf(line, sizeof line, "  %-14s (%s) %s\n", head.c_str(), std::string(shmstate::kind_name(k)).c_str(),
                    std::string(o.help).c_str());
      s += line;
    }
  return s;
}

// ---- the commands' own description ------------------------------------------

struct Args;
using Handler = int (*)(const Args&);

// One command, as docs/cli.toml describes it (the table is generated from
// there: see commands() in cli_commands.hpp).
struct Command {
  std::string_view name;
  std::string_view synopsis;   // after "shmstate NAME"
  std::string_view summary;    // one line for the top-level usage
  std::string_view details;    // for NAME --help
  std::vector<std::string_view> flags;    // options without a value
  std::vector<std::string_view> options;  // options taking a value
  std::size_t positionals;
  Handler run;
  bool more = false;          // positionals is a minimum: the rest (after --) are a command
  bool kind_options = false;  // also takes every kind's own creation options (new)
};

// The parsed command line of one command.
struct Args {
  const Command* command = nullptr;
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;  // in order; last one wins
  bool help = false;

  bool flag(std::string_view name) const {
    for (const auto& [n, v] : options)
      if (n == name) return true;
    return false;
  }
  std::optional<std::string> option(std::string_view name) const {
    std::optional<std::string> out;
    for (const auto& [n, v] : options)
      if (n == name) out = v;
    return out;
  }
};

struct UsageError {
  std::string message;
  const Command* command;  // whose synopsis to show, or null for the top level
};

// The help texts (kUsageLines, kDescription, kExitStatuses), a declaration of
// each command's handler cmd_NAME and the table commands(): all generated from
// docs/cli.toml by tools/cli_doc.py, which also makes docs/cli.md, the man page
// and the bash completion from it.
#include "cli_commands.hpp"

// How every message quotes what the user (or a filter) gave: a short
// one-line prefix, so a 2 MB value cannot make a 2 MB, multi-line message.
std::string quoted(std::string_view text) { return "'" + inspect::excerpt(text) + "'"; }

void print_top_usage(std::FILE* out) {
  std::fprintf(out, "%s\n%s\ncommands:\n", kUsageLines, kDescription);
  for (const auto& c : commands()) {
    std::string head = std::string(c.name) + " " + std::string(c.synopsis);
    if (head.size() > 32) head += "\n" + std::string(34, ' ');  // summary on its own line
    std::fprintf(out, "  %-32s %s\n", head.c_str(), std::string(c.summary).c_str());
  }
  std::fprintf(out, "\n'shmstate COMMAND --help' describes a command.\n\n%s", kExitStatuses);
}

void print_command_usage(std::FILE* out, const Command& c) {
  std::fprintf(out, "usage: shmstate %s %s\n\n%s\n", std::string(c.name).c_str(), std::string(c.synopsis).c_str(),
               std::string(c.summary).c_str());
  if (!c.details.empty()) std::fprintf(out, "\n%s", std::string(c.details).c_str());
  if (c.name == "new") {
    std::fprintf(out, "\nKIND is one of: %s.\n", kinds_text().c_str());
    if (auto opts = kind_options_text(); !opts.empty()) std::fprintf(out, "Options of some kinds:\n%s", opts.c_str());
  }
  std::fprintf(out, "\n%s", kExitStatuses);
}

// "-5", "-.5", "-1e3" are values (negative numbers), not options.
bool looks_like_option(std::string_view a) {
  return a.size() >= 2 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9') && a[1] != '.';
}

Args parse_command(const Command& c, int argc, char** argv, int first) {
  Args args;
  args.command = &c;
  bool options_done = false;
  for (int i = first; i < argc; ++i) {
    std::string_view a = argv[i];
    if (options_done || !looks_like_option(a)) {
      args.positional.emplace_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      args.help = true;
      continue;
    }
    std::string name(a.substr(0, a.find('=')));
    auto in = [&](const auto& v) {
      for (const auto& n : v)
        if (n == name) return true;
      return false;
    };
    if (in(c.flags) && name.size() == a.size()) {
      args.options.emplace_back(name, "");
    } else if (in(c.options) || (c.kind_options && in(kind_option_flags()))) {
      if (name.size() < a.size()) {
        args.options.emplace_back(name, std::string(a.substr(name.size() + 1)));
      } else {
        if (i + 1 >= argc) throw UsageError{"option " + name + " needs a value", &c};
        args.options.emplace_back(name, argv[++i]);
      }
    } else {
      throw UsageError{"unknown option " + quoted(a), &c};
    }
  }
  if (!args.help && (c.more ? args.positional.size() < c.positionals : args.positional.size() != c.positionals))
    throw UsageError{"expected " + std::string(c.more ? "at least " : "") + std::to_string(c.positionals) +
                         " argument" + (c.positionals == 1 ? "" : "s") + ", got " +
                         std::to_string(args.positional.size()),
                     &c};
  return args;
}

// ---- option values ----------------------------------------------------------

template <class T>
T parse_number(const Args& a, std::string_view option, std::string_view text, int base) {
  T v{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw UsageError{"bad value " + quoted(text) + " for " + std::string(option), a.command};
  return v;
}

// BYTES with an optional K, M or G suffix (KiB, MiB, GiB).
std::size_t parse_size(const Args& a, std::string_view text) {
  std::size_t shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      default: break;
    }
  }
  auto n = parse_number<std::uint64_t>(a, "--size", shift ? text.substr(0, text.size() - 1) : text, 10);
  if (n > (std::numeric_limits<std::size_t>::max() >> shift))
    throw UsageError{"--size " + quoted(text) + " is too large", a.command};
  return static_cast<std::size_t>(n) << shift;
}

// The `what` of inspect::parse_json: names segment, object and the text.
std::string json_arg(std::string_view segment, std::string_view object, std::string_view role,
                     std::string_view text) {
  return "segment " + quoted(segment) + ", object " + quoted(object) + ": " + std::string(role) + " " + quoted(text);
}

void print_line(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

// ---- the commands -----------------------------------------------------------

int cmd_list(const Args& a) {
  auto segments = shmstate::Segment::list();
  if (a.flag("--json"))
    print_line(inspect::to_text(inspect::list_json(segments)));
  else
    std::fputs(inspect::list_text(segments).c_str(), stdout);
  return kOk;
}

// The commands that only read open the segment read-only (O_RDONLY,
// PROT_READ): a user with read permission only can run them, and they can
// never write the segment, not even to repair a dead process's lock.
shmstate::Segment open_to_read(const std::string& name) {
  return shmstate::Segment::open(name, shmstate::Segment::Access::ReadOnly);
}

int cmd_dump(const Args& a) {
  auto segment = open_to_read(a.positional[0]);
  if (a.flag("--json"))
    print_line(inspect::to_text(inspect::dump_json(segment)));
  else
    std::fputs(inspect::dump_text(segment).c_str(), stdout);
  return kOk;
}

int cmd_create(const Args& a) {
  shmstate::SegmentOptions o;
  if (auto v = a.option("--size")) o.size = parse_size(a, *v);
  if (auto v = a.option("--mode")) o.mode = parse_number<unsigned>(a, "--mode", *v, 8);
  if (auto v = a.option("--max-objects")) o.max_objects = parse_number<std::uint32_t>(a, "--max-objects", *v, 10);
  try {
    shmstate::Segment::check_options(a.positional[0], o);  // bad option values are usage errors (exit 2)
  } catch (const shmstate::Error& e) {
    throw UsageError{e.what(), a.command};
  }
  shmstate::Segment::create(a.positional[0], o);
  return kOk;
}

int cmd_rm(const Args& a) {
  inspect::remove(a.positional[0]);
  return kOk;
}

int cmd_new(const Args& a) {
  const std::string& kind_text = a.positional[1];
  std::optional<shmstate::Kind> kind;
  for (auto k : inspect::creatable_kinds())
    if (shmstate::kind_name(k) == kind_text) kind = k;
  if (!kind) throw UsageError{"unknown kind " + quoted(kind_text) + ": KIND is one of " + kinds_text(), a.command};
  boost::json::value initial;  // null: the kind's zero value
  inspect::CreateOptions options;   // the kind's own options, without "--"
  for (const auto& [name, value] : a.options) {
    if (name == "--init") {
      initial = inspect::parse_json(value, json_arg(a.positional[0], a.positional[2], "initial value", value));
      continue;
    }
    bool ok = false;
    for (const auto& o : inspect::create_options(*kind)) ok = ok || "--" + std::string(o.name) == name;
    if (!ok) throw UsageError{"option " + name + " is not for kind '" + kind_text + "'", a.command};
    options.emplace_back(name.substr(2), value);
  }
  auto segment = shmstate::Segment::open(a.positional[0]);
  inspect::create(segment, *kind, a.positional[2], initial, options);
  return kOk;
}

int cmd_get(const Args& a) {
  auto segment = open_to_read(a.positional[0]);
  print_line(inspect::to_text(inspect::get(segment, a.positional[1])));
  return kOk;
}

int cmd_set(const Args& a) {
  auto value = inspect::parse_json(a.positional[2], json_arg(a.positional[0], a.positional[1], "value", a.positional[2]));
  auto segment = shmstate::Segment::open(a.positional[0]);
  inspect::set(segment, a.positional[1], value);
  return kOk;
}

int cmd_add(const Args& a) {
  auto delta = inspect::parse_json(a.positional[2], json_arg(a.positional[0], a.positional[1], "delta", a.positional[2]));
  auto segment = shmstate::Segment::open(a.positional[0]);
  print_line(inspect::to_text(inspect::add(segment, a.positional[1], delta)));
  return kOk;
}


// Runs argv with `input` on its stdin and returns its stdout, which may be at
// most `cap` bytes. Throws shmstate::Error if it cannot start, prints more
// than `cap` (it is then killed), is killed, or exits non-zero: a filter that
// printed valid JSON and then failed has not vouched for its output (its
// stderr passes through to ours). Our pipe ends are non-blocking and one poll
// loop writes stdin and drains stdout together, so a filter that writes
// before it has read everything (cat, with values bigger than a pipe's
// buffer) cannot deadlock against us.
std::string run_filter(const std::string& where, const std::vector<std::string>& argv, const std::string& input,
                       std::size_t cap, std::string_view cap_reason) {
  auto fail = [&](const std::string& what) {
    return shmstate::Error(shmstate::ErrorCode::Io, where + ": filter " + quoted(argv[0]) + " " + what);
  };
  auto sys_fail = [&](const char* call) { return fail(std::string(call) + ": " + std::strerror(errno)); };
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw sys_fail("pipe");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    auto e = sys_fail("pipe");
    ::close(in[0]);
    ::close(in[1]);
    throw e;
  }
  // Only our ends: the filter gets ordinary blocking descriptors.
  ::fcntl(in[1], F_SETFL, ::fcntl(in[1], F_GETFL) | O_NONBLOCK);
  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  // We ignore SIGPIPE (cmd_swap); the filter gets the default back, as from a shell.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &pipe_only);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &fa, &attr, args.data(), ::environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    throw fail(std::string("cannot run: ") + std::strerror(rc));
  }
  std::string output;
  std::size_t written = 0;
  int to_child = in[1];
  auto stop_writing = [&] {
    if (to_child >= 0) ::close(to_child);
    to_child = -1;
  };
  if (input.empty()) stop_writing();
  bool too_much = false;
  std::string poll_error;
  char buf[65536];
  for (;;) {
    pollfd fds[2] = {{out[0], POLLIN, 0}, {to_child, POLLOUT, 0}};
    if (::poll(fds, to_child >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      poll_error = std::strerror(errno);
      break;
    }
    if (to_child >= 0 && fds[1].revents != 0) {
      // Non-blocking: writes what fits, never waits on a filter that is itself
      // waiting for us to read its output.
      ssize_t n = ::write(to_child, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EINTR && errno != EAGAIN) || written == input.size()) stop_writing();  // EPIPE: it stopped reading
    }
    if (fds[0].revents != 0) {
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n > 0) {
        output.append(buf, static_cast<std::size_t>(n));
        if (output.size() > cap) {
          too_much = true;
          break;
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        break;
      }
    }
  }
  // Killed before we close its stdout, so it does not get to complain of a broken pipe.
  if (too_much || !poll_error.empty()) ::kill(pid, SIGKILL);
  stop_writing();
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (too_much)
    throw fail("printed more than " + std::to_string(cap) + " bytes (" + std::string(cap_reason) +
               "); filter killed, value unchanged");
  if (!poll_error.empty()) throw fail("poll: " + poll_error + "; filter killed, value unchanged");
  if (WIFSIGNALED(status)) throw fail("was killed by signal " + std::to_string(WTERMSIG(status)) + "; value unchanged");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw fail("exited with status " + std::to_string(WEXITSTATUS(status)) + "; value unchanged");
  return output;
}

int cmd_swap(const Args& a) {
  const std::string& seg = a.positional[0];
  const std::string& name = a.positional[1];
  if (a.positional.size() == 2) throw UsageError{"the command to run is missing (after --)", a.command};
  std::vector<std::string> filter(a.positional.begin() + 2, a.positional.end());
  ::signal(SIGPIPE, SIG_IGN);  // a filter that ignores stdin must not kill us
  auto segment = shmstate::Segment::open(seg);
  // An atom stores its value as compact JSON text, so no value the segment
  // can hold is longer than the segment: that caps the filter's output.
  const std::size_t cap = segment.info().size;
  auto result = inspect::swap(segment, name, [&](const boost::json::value& current) {
    std::string out = run_filter("segment " + quoted(seg) + ", object " + quoted(name), filter,
                                 inspect::to_text(current) + "\n", cap,
                                 "the segment's size: no longer value fits in it");
    return inspect::parse_json(out, json_arg(seg, name, "output of filter " + quoted(filter[0]) + ":", out));
  });
  print_line(inspect::to_text(result));
  return kOk;
}

// A filter's output for `store update` is capped here, not by a file size.
constexpr std::size_t kMaxStoreFilterOutput = std::size_t{256} << 20;

// store get FILE | store update FILE -- CMD [ARGS...]
int cmd_store(const Args& a) {
  const std::string& sub = a.positional[0];
  const std::string& file = a.positional[1];
  const std::string where = "store '" + inspect::excerpt(file, 256) + "'";
  if (sub == "get") {
    if (a.positional.size() != 2) throw UsageError{"store get takes one FILE", a.command};
    if (::access(file.c_str(), F_OK) != 0 && errno == ENOENT)
      throw shmstate::Error(shmstate::ErrorCode::NotFound, where + ": no such file");
    print_line(inspect::to_text(shmstate::Store::open(file).value()));
    return kOk;
  }
  if (sub != "update") throw UsageError{"unknown store command " + quoted(sub) + ": use get or update", a.command};
  if (a.positional.size() < 3) throw UsageError{"store update: the command to run is missing (after --)", a.command};
  std::vector<std::string> filter(a.positional.begin() + 2, a.positional.end());
  ::signal(SIGPIPE, SIG_IGN);  // a filter that ignores stdin must not kill us
  auto store = shmstate::Store::open(file);
  const auto& result = store.update([&](boost::json::value& v) {
    std::string out = run_filter(where, filter, inspect::to_text(v) + "\n", kMaxStoreFilterOutput,
                                 "the most store update takes: a store is read whole into memory");
    v = inspect::parse_json(out, where + ": output of filter " + quoted(filter[0]) + ": " + quoted(out));
  });
  print_line(inspect::to_text(result));
  return kOk;
}

// snapshot SEG FILE [--every SECONDS]
//
// With --every: one snapshot at once, then one each period if the segment's
// document changed; SIGTERM and SIGINT end the loop after a last snapshot (if
// anything changed), exit 0. The signals are blocked and taken with
// sigtimedwait, so the wait between snapshots is the only place they are
// seen: a snapshot being written is never cut short.
int cmd_snapshot(const Args& a) {
  auto segment = open_to_read(a.positional[0]);
  const std::string& file = a.positional[1];
  auto every = a.option("--every");
  if (!every) {
    segment.snapshot(file);
    return kOk;
  }
  double seconds = 0;
  auto [end, ec] = std::from_chars(every->data(), every->data() + every->size(), seconds);
  if (ec != std::errc() || end != every->data() + every->size() || !(seconds > 0) || seconds > 86400 * 365)
    throw UsageError{"bad value '" + *every + "' for --every: a number of seconds > 0", a.command};
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (::sigprocmask(SIG_BLOCK, &stop, nullptr) != 0)
    throw shmstate::Error(shmstate::ErrorCode::Io, std::string("sigprocmask: ") + std::strerror(errno));
  std::string last;
  inspect::snapshot_if_changed(segment, file, last);
  auto period = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  auto next = std::chrono::steady_clock::now() + period;
  for (;;) {
    auto left = std::max(next - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero());
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    int sig = ::sigtimedwait(&stop, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      inspect::snapshot_if_changed(segment, file, last);
      return kOk;
    }
    if (sig < 0 && errno == EINTR) continue;
    if (sig < 0 && errno != EAGAIN)
      throw shmstate::Error(shmstate::ErrorCode::Io, std::string("sigtimedwait: ") + std::strerror(errno));
    inspect::snapshot_if_changed(segment, file, last);
    next += period;
  }
}

int cmd_restore(const Args& a) {
  shmstate::RestoreOptions o;
  if (auto v = a.option("--size")) o.size = parse_size(a, *v);
  if (auto v = a.option("--mode")) o.mode = parse_number<unsigned>(a, "--mode", *v, 8);
  if (auto v = a.option("--max-objects")) o.max_objects = parse_number<std::uint32_t>(a, "--max-objects", *v, 10);
  shmstate::Segment::restore(a.positional[0], a.positional[1], o);
  return kOk;
}

// signal SEG NAME go | wait [--timeout SECONDS] | status [--json]
int cmd_signal(const Args& a) {
  const std::string& action = a.positional[2];
  if (action != "go" && action != "wait" && action != "status")
    throw UsageError{"unknown signal action " + quoted(action) + ": use go, wait or status", a.command};
  if (a.option("--timeout") && action != "wait") throw UsageError{"--timeout is for wait only", a.command};
  if (a.flag("--json") && action != "status") throw UsageError{"--json is for status only", a.command};
  std::optional<std::chrono::nanoseconds> timeout;
  if (auto t = a.option("--timeout")) {
    double seconds = -1;
    auto [end, ec] = std::from_chars(t->data(), t->data() + t->size(), seconds);
    if (ec != std::errc() || end != t->data() + t->size() || !(seconds >= 0) || seconds > 86400.0 * 365 * 100)
      throw UsageError{"bad value " + quoted(*t) + " for --timeout: a number of seconds >= 0", a.command};
    timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  }
  // status only reads; wait needs no write either (read-only, it polls in
  // 100 ms slices instead of being woken), so a user who may only read the
  // segment can wait too; go writes.
  auto segment = [&] {
    if (action == "status") return open_to_read(a.positional[0]);
    if (action == "go") return shmstate::Segment::open(a.positional[0]);
    try {
      return shmstate::Segment::open(a.positional[0]);
    } catch (const shmstate::Error& e) {
      if (e.code() != shmstate::ErrorCode::PermissionDenied) throw;
      return open_to_read(a.positional[0]);
    }
  }();
  auto signal = segment.open_signal(a.positional[1]);  // NotFound, KindMismatch
  if (action == "go") {
    signal.go();
    return kOk;
  }
  if (action == "wait") {
    if (!timeout) {
      signal.wait();
      return kOk;
    }
    return signal.wait_for(*timeout) ? kOk : kTimedOut;
  }
  auto state = inspect::get(segment, a.positional[1]);  // {"fired", "pid", "when"}
  if (a.flag("--json")) {
    print_line(inspect::to_text(state));
    return kOk;
  }
  const auto& o = state.as_object();
  if (!o.at("fired").as_bool()) {
    print_line("pending");
    return kOk;
  }
  std::int64_t pid = o.at("pid").is_int64() ? o.at("pid").as_int64() : 0;
  std::string line = "fired by " + (pid > 0 ? "pid " + std::to_string(pid) : std::string("an unknown process"));
  if (o.at("when").is_string()) line += " at " + std::string(o.at("when").as_string());
  print_line(line);
  return kOk;
}

// lock SEG NAME [--mode MODE] [-w|--timeout SECONDS] [-n|--nonblock]
//      [-E|--conflict-exit-code N] -- CMD [ARGS...]
//
// flock(1)'s conventions. This process takes the lock, runs CMD, waits for it
// and releases; it is the holder, so if it is killed the lock goes to the
// next process as any dead holder's does (that one is told). Exits with CMD's
// status (128+N if a signal N killed it; 127 if CMD was not found, 126 if it
// could not be run), or the conflict status if the lock was not obtained.
int cmd_lock(const Args& a) {
  const std::string& seg = a.positional[0];
  const std::string& name = a.positional[1];
  if (a.positional.size() == 2) throw UsageError{"the command to run is missing (after --)", a.command};
  std::vector<std::string> cmd(a.positional.begin() + 2, a.positional.end());
  auto timeout_text = a.option("--timeout");
  if (auto w = a.option("-w")) timeout_text = w;
  bool nonblock = a.flag("--nonblock") || a.flag("-n");
  if (nonblock && timeout_text) throw UsageError{"-n and -w exclude each other", a.command};
  std::optional<std::chrono::nanoseconds> timeout;
  if (timeout_text) {
    double seconds = -1;
    auto [end, ec] = std::from_chars(timeout_text->data(), timeout_text->data() + timeout_text->size(), seconds);
    if (ec != std::errc() || end != timeout_text->data() + timeout_text->size() || !(seconds >= 0) ||
        seconds > 86400.0 * 365 * 100)
      throw UsageError{"bad value " + quoted(*timeout_text) + " for --timeout: a number of seconds >= 0", a.command};
    timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  }
  int conflict = kNotLocked;
  auto conflict_text = a.option("--conflict-exit-code");
  if (auto e = a.option("-E")) conflict_text = e;
  if (conflict_text) conflict = parse_number<int>(a, "--conflict-exit-code", *conflict_text, 10);
  if (conflict < 0 || conflict > 255) throw UsageError{"--conflict-exit-code takes 0..255", a.command};
  auto mode = a.option("--mode");

  auto segment = shmstate::Segment::open(seg);
  auto info = segment.find(name);
  if (!info)
    throw shmstate::Error(shmstate::ErrorCode::NotFound,
                          "segment " + quoted(seg) + ", object " + quoted(name) + ": no such object");
  // One of the two holds while CMD runs.
  std::optional<shmstate::FifoLock::Guard> lock_hold;
  std::optional<shmstate::Monitor::Guard> monitor_hold;
  bool died = false;
  std::string token;
  if (info->kind == shmstate::Kind::FifoLock) {
    auto lock = segment.open_fifo_lock(name);
    std::size_t m = mode ? lock.mode(*mode).index() : 0;
    if (!mode && lock.modes().size() != 1)
      throw UsageError{"the lock has modes " + lock.modes().to_string() + ": name one with --mode", a.command};
    auto selected = lock.modes().modes()[m].name;
    if (nonblock) {
      lock_hold = lock.try_acquire(selected);
    } else if (timeout) {
      lock_hold = lock.acquire_for(selected, *timeout);
    } else {
      lock_hold.emplace(lock.acquire(selected));
    }
    if (lock_hold) {
      died = lock_hold->previous_holder_died();
      token = std::to_string(lock_hold->token());
    }
  } else if (info->kind == shmstate::Kind::Monitor) {
    if (mode) throw UsageError{"a monitor has no modes: drop --mode", a.command};
    auto monitor = segment.open_monitor(name);
    if (nonblock) {
      monitor_hold = monitor.try_lock();
    } else if (timeout) {
      monitor_hold = monitor.lock_for(*timeout);
    } else {
      monitor_hold.emplace(monitor.lock());
    }
    if (monitor_hold) died = monitor_hold->previous_holder_died();
  } else {
    throw shmstate::Error(shmstate::ErrorCode::KindMismatch, "segment " + quoted(seg) + ", object " + quoted(name) +
                                                                 ": " + std::string(shmstate::kind_name(info->kind)) +
                                                                 " is not a lock (lock works on fifo_lock and monitor)");
  }
  if (!lock_hold && !monitor_hold) {
    std::fprintf(stderr, "shmstate: segment %s, object %s: lock not obtained%s\n", quoted(seg).c_str(),
                 quoted(name).c_str(), nonblock ? " (held or queued for by others)" : " within the timeout");
    return conflict;
  }
  if (died)
    std::fprintf(stderr, "shmstate: segment %s, object %s: note: the previous holder died holding the lock\n",
                 quoted(seg).c_str(), quoted(name).c_str());

  // CMD gets the token and the news in its environment.
  std::vector<std::string> env_strings;
  for (char** e = ::environ; *e != nullptr; ++e) {
    std::string_view v = *e;
    if (!v.starts_with("SHMSTATE_LOCK_TOKEN=") && !v.starts_with("SHMSTATE_LOCK_PREVIOUS_HOLDER_DIED="))
      env_strings.emplace_back(v);
  }
  if (!token.empty()) env_strings.push_back("SHMSTATE_LOCK_TOKEN=" + token);
  env_strings.push_back(std::string("SHMSTATE_LOCK_PREVIOUS_HOLDER_DIED=") + (died ? "1" : "0"));
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& c : cmd) args.push_back(c.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), envp.data());
  if (rc != 0) {
    std::fprintf(stderr, "shmstate: cannot run %s: %s\n", quoted(cmd[0]).c_str(), std::strerror(rc));
    return rc == ENOENT ? 127 : 126;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // The guards release here, after CMD has ended.
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kError;
}

int usage_error(const UsageError& e) {
  std::fprintf(stderr, "shmstate: %s\n", e.message.c_str());
  if (e.command != nullptr)
    std::fprintf(stderr, "usage: shmstate %s %s\n", std::string(e.command->name).c_str(),
                 std::string(e.command->synopsis).c_str());
  std::fprintf(stderr, "Try 'shmstate %s--help'.\n",
               e.command != nullptr ? (std::string(e.command->name) + " ").c_str() : "");
  return kUsage;
}

int run(int argc, char** argv) {
  if (argc < 2) {
    print_top_usage(stderr);
    return kUsage;
  }
  std::string_view first = argv[1];
  if (first == "--help" || first == "-h") {
    print_top_usage(stdout);
    return kOk;
  }
  if (first == "--version" || first == "-V") {  // -V as util-linux and mdb_stat
    std::printf("shmstate %s\n", SHMSTATE_VERSION_STRING);
    return kOk;
  }
  for (const auto& c : commands()) {
    if (c.name != first) continue;
    Args args = parse_command(c, argc, argv, 2);
    if (args.help) {
      print_command_usage(stdout, c);
      return kOk;
    }
    return c.run(args);
  }
  throw UsageError{"unknown command " + quoted(first), nullptr};
}

}  // namespace

int main(int argc, char** argv) {
  int status = kError;
  try {
    status = run(argc, argv);
  } catch (const UsageError& e) {
    return usage_error(e);
  } catch (const shmstate::Error& e) {
    std::fprintf(stderr, "shmstate: %s\n", e.what());
    return e.code() == shmstate::ErrorCode::NotFound ? kNotFound : kError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmstate: %s\n", e.what());
    return kError;
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "shmstate: writing to standard output failed\n");
    return kError;
  }
  return status;
}
