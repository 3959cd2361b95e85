// libFuzzer target: a store file's bytes through the store's loaders (compact
// and pretty JSON, both the exact parser). A value or shmstate::Error naming
// the path and position, never a crash or another exception; what loads
// dumps and loads back to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include <shmstate/error.hpp>
#include <shmstate/store.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  static const auto compact = shmstate::json_format();
  static const auto pretty = shmstate::pretty_json_format();
  try {
    boost::json::value v = compact->load(bytes, "fuzz.json");
    for (const auto* f : {compact.get(), pretty.get()}) {
      if (f->load(f->dump(v), "fuzz.json") != v) std::abort();  // a round trip that changes the value
    }
  } catch (const shmstate::Error&) {
  }
  return 0;
}
