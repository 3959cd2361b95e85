// shmstate/store.hpp: a JSON value kept in a file, replaced atomically and
// durably, with read-modify-write across processes that loses no update.
//
// A port of atomic_store (seeds/atomic_store.txt), fixed where the seed is
// wrong: a transaction that ends by an exception writes nothing, the file
// keeps its mode, a symlink keeps pointing at the file it names, and update()
// loses no write when several processes change the same file.
//
//   auto store = shmstate::Store::open("runs.json", boost::json::array{});
//   {
//     auto tx = store.transaction();
//     store.value().as_array().push_back("started");
//   }  // committed here; nothing is written if the scope ends by an exception
//   store.update([](boost::json::value& v) { v.as_array().push_back("again"); });
//
// Durability. Every write (commit, scope exit, update) replaces the whole file:
// a temp file in the same directory, fsync, rename over the file, fsync of the
// directory. Readers (other processes, Store::open) see the old or the new
// contents, never a mix. A process killed anywhere in a write leaves the old
// or the new file plus at most one hidden temp file
// (".<name>.<writer>.tmp"), which a later write of the same file by another
// process removes. After a write returns, the new contents survive a crash of
// the machine (as far as the file system honours fsync).
//
// Concurrency. commit() and update() of any Store objects on the same file,
// in any processes, are serialized by an advisory lock (flock) on a lock file
// beside it ("<file>.lock", created on the first write, never removed: removing
// a lock file races its other users). commit() writes this object's value, so
// the last commit wins, as in the seed; update() reads the file under the lock
// and so never loses another writer's change. The lock is the kernel's: a
// process killed while holding it releases it. Programs that write the file
// without this library bypass the lock.
//
// Thread safety. A Store object is not safe for concurrent use from several
// threads (like a std container); distinct Store objects on one file are, in
// any threads and processes.
//
// Doubles are exact: every double survives a write and a read bit for bit
// (NaN and infinities are not JSON and are refused by the JSON formats).
#pragma once

#include <shmstate/config.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>

#include <shmstate/error.hpp>

namespace shmstate {

// How a value becomes the file's bytes and back. Implement it for a custom
// format; the built-in ones are json_format() and pretty_json_format().
class SHMSTATE_API Format {
 public:
  virtual ~Format() = default;
  // The value the file's bytes hold. `path` is for messages: throw
  // Error(Corrupt) naming it and where the bytes are bad.
  virtual boost::json::value load(std::string_view bytes, const std::string& path) const = 0;
  // The bytes of `value`. Throw Error(InvalidArgument) for a value the format
  // cannot hold; nothing is written then.
  virtual std::string dump(const boost::json::value& value) const = 0;
};

// Compact JSON (no spaces) and a final newline. Keeps object keys in their
// order. Loading is exact for doubles and refuses an empty file, anything but
// one JSON value (whitespace aside), or nesting deeper than 512, with
// Error(Corrupt) "store '<path>': not valid JSON at byte N (line L, column C):
// <why>". Dumping refuses NaN, infinities, nesting deeper than 512 and
// strings that are not UTF-8 (InvalidArgument).
SHMSTATE_API std::shared_ptr<const Format> json_format();
// The same, indented by `indent` spaces per level, one member per line,
// "key": value (for files people read and diff).
SHMSTATE_API std::shared_ptr<const Format> pretty_json_format(int indent = 2);

struct StoreOptions {
  std::shared_ptr<const Format> format;  // null: json_format()
  // Mode bits of the file when a write creates it, applied exactly. nullopt:
  // 0644 minus the umask. An existing file keeps its mode.
  std::optional<unsigned> mode;
  // Nested transactions: false (the seed's default) commits at every scope
  // exit; true commits only when the outermost scope exits.
  bool ignore_inner_exits = false;
};

class SHMSTATE_API Store {
 public:
  class Transaction;

  // Reads the file at `path` once. If it does not exist, value() is a copy of
  // `default_value` and no file is created until the first write. Never
  // modifies the file. Throws Error(Corrupt) for an empty or damaged file
  // (naming the path and the position), PermissionDenied, InvalidArgument (a
  // directory), Io.
  static Store open(std::string path, const boost::json::value& default_value = nullptr,
                    StoreOptions options = {});

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  // The value in memory. Changes reach the file only through commit(), the
  // end of a transaction or update().
  boost::json::value& value() noexcept;
  const boost::json::value& value() const noexcept;

  const std::string& path() const noexcept;

  // Writes value() to the file (durably, atomically, under the lock; see
  // above). On an error (the format refuses the value, the directory is
  // missing or read-only, the disk is full) the file is unchanged and the
  // error is thrown: NotFound, PermissionDenied, InvalidArgument, Io.
  void commit();

  // An RAII scope: when it ends normally it commits (or, with
  // ignore_inner_exits, only the outermost scope does); when it ends by an
  // exception it writes nothing. value() keeps whatever the scope changed
  // either way (there is no rollback, as in the seed): an enclosing scope
  // that then ends normally commits it. The destructor throws commit()'s
  // errors when it is not unwinding. Must end before its Store is destroyed
  // or moved from.
  [[nodiscard]] Transaction transaction();

  // Read-modify-write without lost updates: under the lock, reads the file
  // (the default value if it does not exist), calls fn on that value, and
  // commits the result; value() is then the committed value (changes to
  // value() made before update() and not committed are discarded). If fn
  // throws, nothing is written and value() is left as it was before update().
  // Every process's update()s on the file are applied one after another, each
  // to its predecessor's result. Throws what open() and commit() throw. fn
  // runs with the lock held: keep it short, and do not write the same file
  // from it (that would wait for itself).
  const boost::json::value& update(const std::function<void(boost::json::value&)>& fn);

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

class SHMSTATE_API Store::Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction() noexcept(false);

 private:
  friend class Store;
  explicit Transaction(Impl* store) noexcept;
  Impl* store_;
  int uncaught_at_start_;
};

}  // namespace shmstate
