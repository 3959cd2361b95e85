// libFuzzer target: a snapshot file's bytes through the snapshot loader. It
// must give a document or shmstate::Error (Corrupt, LayoutMismatch), never a
// crash or another exception.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <shmstate/error.hpp>

#include "store/snapshot_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto doc = shmstate::detail::decode_snapshot(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.snapshot");
    (void)shmstate::detail::encode_snapshot(doc);
  } catch (const shmstate::Error&) {
  }
  return 0;
}
