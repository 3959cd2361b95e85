// libFuzzer target: the CLI's argument parsing (issue 11). The input is a
// command line, its arguments separated by NUL bytes. Each goes through the
// same grammar `shmstate` uses (the command table, parse_command) and the
// option value parsers its commands use (--size with its suffixes, octal
// --mode, --max-objects, JSON values). A parse or a UsageError,
// never a crash or another exception.
//
// The commands' actions are not run: they create and remove segments in
// /dev/shm by the names given and run filter programs, which a fuzzer must
// not do on a shared machine; the cli test suite covers them with real
// processes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#define main shmstate_cli_main  // the CLI's own main() is not this program's
#include "../../tools/shmstate.cpp"
#undef main

namespace {

void parse_values(const Args& a) {
  for (const auto& [name, value] : a.options) {
    if (name == "--size") (void)parse_size(a, value);
    else if (name == "--mode") (void)parse_number<unsigned>(a, name, value, 8);
    else if (name == "--max-objects") (void)parse_number<std::uint32_t>(a, name, value, 10);
  }
  std::string seg = a.positional.empty() ? "" : a.positional[0];
  for (const auto& p : a.positional) {
    try {
      (void)inspect::parse_json(p, json_arg(seg, "x", "value", p));
    } catch (const shmstate::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;  // a command line, not a file
  std::vector<std::string> words{"shmstate"};
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!rest.empty()) {
    auto nul = rest.find('\0');
    words.emplace_back(rest.substr(0, nul));
    rest = nul == std::string_view::npos ? std::string_view{} : rest.substr(nul + 1);
  }
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(words.size());
  try {
    if (argc < 2) return 0;
    for (const auto& c : commands()) {
      if (c.name != words[1]) continue;
      parse_values(parse_command(c, argc, argv.data(), 2));
    }
  } catch (const UsageError& e) {
    if (e.message.empty()) std::abort();  // every usage error says what was wrong
  }
  return 0;
}
