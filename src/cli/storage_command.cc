// `cohort storage cp|ls|rm|cat`: copies, lists, removes and prints objects
// in gs://, s3://, file:// (or plain local paths) through
// cohort/storage/transfer.h. A progress bar goes to stderr for transfers of
// 8 MiB or more when stderr is a terminal. Exit codes: 0 ok, 1 a failed
// operation, 2 a bad command line (including a URI that does not parse).
// Main thread only.
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cohort/storage/blob_store.h"
#include "cohort/storage/transfer.h"

namespace cohort::cli {
namespace {

using storage::ObjectInfo;

constexpr uint64_t kProgressMinBytes = uint64_t{8} << 20;
constexpr uint64_t kCatChunkBytes = uint64_t{16} << 20;

struct StorageFlags {
  bool recursive = false;
  std::string src;
  std::string dst;
  std::string uri;
};

// "\r[#####.....] 45% 230.1/512.0 MiB 120.3 MiB/s" on stderr, redrawn at
// most every 100 ms, for totals of at least kProgressMinBytes; silent when
// stderr is not a terminal.
class ProgressBar {
 public:
  ProgressBar() : enabled_(::isatty(STDERR_FILENO) == 1), start_(Clock::now()) {}
  ~ProgressBar() { Finish(); }

  void Update(uint64_t done, uint64_t total) {
    if (!enabled_ || total < kProgressMinBytes) return;
    auto now = Clock::now();
    if (drawn_ && done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    constexpr int kWidth = 20;
    double fraction = static_cast<double>(done) / static_cast<double>(total);
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kWidth - filled), '.');
    double seconds = std::chrono::duration<double>(now - start_).count();
    double mib = 1024.0 * 1024.0;
    double rate = seconds > 0 ? static_cast<double>(done) / mib / seconds : 0.0;
    std::fprintf(stderr, "\r[%s] %3d%% %.1f/%.1f MiB %.1f MiB/s   ", bar.c_str(),
                 static_cast<int>(fraction * 100), static_cast<double>(done) / mib,
                 static_cast<double>(total) / mib, rate);
    std::fflush(stderr);
  }

  // Ends the bar's line (once), if one was drawn.
  void Finish() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

  storage::ProgressFn Fn() {
    return [this](uint64_t done, uint64_t total) { Update(done, total); };
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_;
  Clock::time_point last_draw_;
};

int Fail(const char* verb, const Status& status) {
  std::fprintf(stderr, "cohort storage %s: %s\n", verb, status.ToString().c_str());
  return 1;
}

// Parses every URI argument up front: a bad one is a usage error (exit 2).
bool CheckUris(const char* verb, const std::vector<std::string>& uris) {
  for (const std::string& text : uris) {
    Result<storage::Uri> u = storage::ParseUri(text);
    if (!u.ok()) {
      std::fprintf(stderr, "cohort storage %s: %s\n", verb, u.status().ToString().c_str());
      return false;
    }
  }
  return true;
}

std::string UriOf(const storage::Uri& base, const std::string& key) {
  storage::Uri u = base;
  u.key = key;
  return u.ToString();
}

int RunCp(const StorageFlags& flags) {
  if (!CheckUris("cp", {flags.src, flags.dst})) return kExitUsage;
  ProgressBar bar;
  Status s = flags.recursive ? storage::CopyTree(flags.src, flags.dst, bar.Fn(), nullptr)
                             : storage::CopyFile(flags.src, flags.dst, bar.Fn());
  bar.Finish();
  return s.ok() ? 0 : Fail("cp", s);
}

int RunLs(const StorageFlags& flags) {
  if (!CheckUris("ls", {flags.uri})) return kExitUsage;
  storage::Uri base = *storage::ParseUri(flags.uri);
  Result<std::vector<ObjectInfo>> entries = storage::ListAll(flags.uri, flags.recursive);
  if (!entries.ok()) return Fail("ls", entries.status());
  for (const ObjectInfo& e : *entries) {
    if (!e.key.empty() && e.key.back() == '/') {
      std::printf("%12s  %-8s  %s\n", "", "", UriOf(base, e.key).c_str());
    } else {
      std::printf("%12" PRIu64 "  %-8s  %s\n", e.size_bytes,
                  e.crc32c.empty() ? "-" : e.crc32c.c_str(), UriOf(base, e.key).c_str());
    }
  }
  return 0;
}

int RunRm(const StorageFlags& flags) {
  if (!CheckUris("rm", {flags.uri})) return kExitUsage;
  if (flags.recursive) {
    Status s = storage::RemoveTree(flags.uri);
    return s.ok() ? 0 : Fail("rm", s);
  }
  storage::Uri u = *storage::ParseUri(flags.uri);
  Result<std::shared_ptr<storage::BlobStore>> store = storage::OpenStore(u);
  if (!store.ok()) return Fail("rm", store.status());
  if (u.key.empty() || u.key.back() == '/')
    return Fail("rm", Status::InvalidArgument(u.ToString() + ": is a prefix; use rm -r"));
  // Delete() of a missing object succeeds; a user asking to rm one wants to know.
  Result<ObjectInfo> info = (*store)->Stat(u.bucket, u.key);
  if (!info.ok()) {
    if (info.status().code() == StatusCode::kNotFound) {
      storage::ListOptions probe;
      probe.prefix = u.key + "/";
      probe.max_results = 1;
      Result<storage::ListResult> under = (*store)->List(u.bucket, probe);
      if (under.ok() && !under->objects.empty())
        return Fail("rm", Status::InvalidArgument(u.ToString() +
                                                  ": is a directory or prefix; use rm -r"));
    }
    return Fail("rm", info.status());
  }
  Status s = (*store)->Delete(u.bucket, u.key);
  return s.ok() ? 0 : Fail("rm", s);
}

int RunCat(const StorageFlags& flags) {
  if (!CheckUris("cat", {flags.uri})) return kExitUsage;
  storage::Uri u = *storage::ParseUri(flags.uri);
  Result<std::shared_ptr<storage::BlobStore>> store = storage::OpenStore(u);
  if (!store.ok()) return Fail("cat", store.status());
  Result<ObjectInfo> info = (*store)->Stat(u.bucket, u.key);
  if (!info.ok()) return Fail("cat", info.status());
  // Ranged reads keep memory bounded for big objects.
  for (uint64_t offset = 0; offset < info->size_bytes; offset += kCatChunkBytes) {
    storage::GetOptions options;
    options.offset = offset;
    options.length = kCatChunkBytes;
    Result<std::string> data = (*store)->GetToBuffer(u.bucket, u.key, options);
    if (!data.ok()) return Fail("cat", data.status());
    if (std::fwrite(data->data(), 1, data->size(), stdout) != data->size())
      return Fail("cat", Status::IoError("writing to stdout failed"));
  }
  if (std::fflush(stdout) != 0) return Fail("cat", Status::IoError("writing to stdout failed"));
  return 0;
}

}  // namespace

Command AddStorageCommand(CLI::App& root) {
  auto flags = std::make_shared<StorageFlags>();
  CLI::App* sub = root.add_subcommand(
      "storage", "Copy, list, remove and print objects in gs://, s3:// and file:// (local paths)");
  sub->require_subcommand(1);

  CLI::App* cp = sub->add_subcommand("cp", "Copy a file or object; -r copies a tree");
  cp->add_flag("-r,-R,--recursive", flags->recursive,
               "Copy everything under SRC to DST/<path relative to SRC>");
  cp->add_option("SRC", flags->src, "Source URI or local path")->required();
  cp->add_option("DST", flags->dst,
                 "Destination URI or local path (ending in '/' or an existing directory: "
                 "copy into it)")
      ->required();

  CLI::App* ls = sub->add_subcommand("ls", "List objects: size, CRC32C (base64) and URI");
  ls->add_flag("-r,-R,--recursive", flags->recursive, "List every object under URI");
  ls->add_option("URI", flags->uri, "Bucket, prefix, directory or object")->required();

  CLI::App* rm = sub->add_subcommand("rm", "Remove an object; -r removes a tree");
  rm->add_flag("-r,-R,--recursive", flags->recursive,
               "Remove everything under URI (and URI itself)");
  rm->add_option("URI", flags->uri, "Object, prefix or directory")->required();

  CLI::App* cat = sub->add_subcommand("cat", "Write an object to stdout");
  cat->add_option("URI", flags->uri, "Object")->required();

  sub->footer(
      "URIs: gs://BUCKET/KEY, s3://BUCKET/KEY, file:///PATH or a plain local path.\n"
      "Examples:\n"
      "  cohort storage cp model.pt gs://bucket/runs/r1/\n"
      "  cohort storage cp -r ./checkpoints s3://bucket/runs/r1/checkpoints\n"
      "  cohort storage ls -r gs://bucket/runs/r1\n");

  return Command{sub, [sub, cp, ls, rm, cat, flags](const Passthrough& passthrough) {
                   if (passthrough) {
                     std::fprintf(stderr, "cohort storage: unexpected arguments after --\n");
                     return kExitUsage;
                   }
                   if (cp->parsed()) return RunCp(*flags);
                   if (ls->parsed()) return RunLs(*flags);
                   if (rm->parsed()) return RunRm(*flags);
                   if (cat->parsed()) return RunCat(*flags);
                   (void)sub;
                   return kExitUsage;  // unreachable: require_subcommand(1)
                 }};
}

}  // namespace cohort::cli
