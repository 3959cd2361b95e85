#include <shmstate/store.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <utility>

#include "platform/durable_file.hpp"
#include "platform/system_error.hpp"
#include "primitives/json_storable.hpp"
#include "store/json_text.hpp"

namespace shmstate {

namespace json = boost::json;

namespace {

class JsonFormat final : public Format {
 public:
  explicit JsonFormat(int indent) : indent_(indent) {}

  json::value load(std::string_view bytes, const std::string& path) const override {
    return detail::parse_json_document(bytes, "store '" + path + "'");
  }

  std::string dump(const json::value& value) const override {
    auto where = [] { return std::string("store value"); };
    std::string out;
    if (indent_ <= 0) {
      out = detail::encode_storable(value, where);
    } else {
      if (const char* why = detail::not_storable_shape(value)) detail::throw_not_storable(where(), why);
      out = detail::pretty_json(value, indent_);
      if (!detail::valid_utf8(out)) detail::throw_not_storable(where(), "a string or key that is not valid UTF-8");
    }
    out += '\n';
    return out;
  }

 private:
  int indent_;
};

}  // namespace

std::shared_ptr<const Format> json_format() {
  static const auto compact = std::make_shared<const JsonFormat>(0);
  return compact;
}

std::shared_ptr<const Format> pretty_json_format(int indent) {
  if (indent < 1 || indent > 16)
    throw Error(ErrorCode::InvalidArgument, "pretty_json_format: indent must be 1..16, got " + std::to_string(indent));
  return std::make_shared<const JsonFormat>(indent);
}

struct Store::Impl {
  std::string path;
  json::value value;
  json::value default_value;
  StoreOptions options;
  int depth = 0;          // open transactions
  bool swept = false;     // dead writers' temps removed by this object's first write
  std::string lock_path;  // of lock_fd
  int lock_fd = -1;

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);
  }

  std::string what() const { return "store '" + path + "'"; }

  // Holds the flock on "<resolved file>.lock" for its lifetime.
  class Locked {
   public:
    explicit Locked(Impl& s) : fd_(s.lock_fd_for_write()) {
      while (::flock(fd_, LOCK_EX) != 0) {
        if (errno != EINTR) platform::throw_errno(errno, s.what() + ": flock '" + s.lock_path + "'");
      }
    }
    ~Locked() { ::flock(fd_, LOCK_UN); }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;

   private:
    int fd_;
  };

  int lock_fd_for_write() {
    // Beside the file the symlink names, so every path to one file shares one lock.
    std::string want = platform::resolve_symlinks(path, what()) + ".lock";
    if (lock_fd >= 0 && want == lock_path) return lock_fd;
    if (lock_fd >= 0) ::close(lock_fd);
    lock_fd = -1;
    // flock needs no write access, so readers of a shared store can lock it.
    int fd = ::open(want.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, options.mode ? *options.mode & 0666 : 0644);
    if (fd < 0) {
      int err = errno;
      std::string dir = platform::directory_of(want);
      if (err == ENOENT) throw Error(ErrorCode::NotFound, what() + ": directory '" + dir + "' does not exist");
      platform::throw_file_errno(err, what() + ": create lock file '" + want + "'");
    }
    lock_fd = fd;
    lock_path = std::move(want);
    return lock_fd;
  }

  // REQUIRES: the lock held.
  void write(std::string_view bytes) {
    platform::ReplaceOptions ro;
    ro.new_file_mode = options.mode;
    ro.sweep = !swept;
    platform::replace_file_durably(path, bytes, ro, what());
    swept = true;
  }

  json::value read_current() const {
    auto bytes = platform::read_whole_file(path, what());
    if (!bytes) return default_value;
    return options.format->load(*bytes, path);
  }

  void commit() {
    std::string bytes = options.format->dump(value);
    Locked locked(*this);
    write(bytes);
  }
};

Store::Store(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

Store Store::open(std::string path, const json::value& default_value, StoreOptions options) {
  if (path.empty()) throw Error(ErrorCode::InvalidArgument, "store '': empty path");
  auto impl = std::make_unique<Impl>();
  impl->path = std::move(path);
  impl->default_value = default_value;
  impl->options = std::move(options);
  if (!impl->options.format) impl->options.format = json_format();
  if (impl->options.mode && *impl->options.mode > 07777)
    throw Error(ErrorCode::InvalidArgument, impl->what() + ": mode must be at most 07777");
  impl->value = impl->read_current();
  return Store(std::move(impl));
}

json::value& Store::value() noexcept { return impl_->value; }
const json::value& Store::value() const noexcept { return impl_->value; }
const std::string& Store::path() const noexcept { return impl_->path; }

void Store::commit() { impl_->commit(); }

Store::Transaction Store::transaction() { return Transaction(impl_.get()); }

const json::value& Store::update(const std::function<void(json::value&)>& fn) {
  Impl::Locked locked(*impl_);
  json::value next = impl_->read_current();
  fn(next);
  impl_->write(impl_->options.format->dump(next));
  impl_->value = std::move(next);
  return impl_->value;
}

Store::Transaction::Transaction(Impl* store) noexcept
    : store_(store), uncaught_at_start_(std::uncaught_exceptions()) {
  ++store_->depth;
}

Store::Transaction::Transaction(Transaction&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), uncaught_at_start_(other.uncaught_at_start_) {}

Store::Transaction::~Transaction() noexcept(false) {
  if (store_ == nullptr) return;
  int depth = --store_->depth;
  if (std::uncaught_exceptions() > uncaught_at_start_) return;  // ended by an exception: write nothing
  if (depth == 0 || !store_->options.ignore_inner_exits) store_->commit();
}

}  // namespace shmstate
