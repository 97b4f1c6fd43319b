// LogStore: each job's log as one append-only file, <root>/<job_id>.log.
//
// The head roots it at <state-dir>/logs. Logs are files, not memory: they
// survive a head restart (kill -9 included, for everything that reached
// write(2)) and are kept when a job is deleted, as Ray keeps them.
//
// Who calls it: the head's RPC side appends what agents stream in; the HTTP side
// reads (GET /api/jobs/{id}/logs, the logs/tail WebSocket, failure messages).
// Thread-safe: appends to the same job are serialized by an internal mutex, so
// each Append's text lands contiguously (two threads appending whole lines
// never interleave inside a line). Reads take no lock and may run alongside an
// append; they can see the tail of an append in progress (a partial last line),
// which ReadLines can hold back.
//
// Durability: Append is one write(2) (looped on short writes) into the page
// cache, no fsync; Sync(job_id) fsyncs when a caller needs more.
//
// Job ids become file names, so every method first checks the id
// (ValidateJobId): non-empty, at most kMaxJobIdBytes, no '/', '\\', NUL or other
// control characters, no "..", not ".". A job that has no log file yet reads as
// empty (size 0), since a job may simply not have printed anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::head {

struct LogChunk {
  std::string data;
  uint64_t next_offset = 0;  // byte offset to pass to the next Read
};

class LogStore {
 public:
  static constexpr size_t kMaxJobIdBytes = 200;
  // ReadAll's default cap; bigger logs come back as their last 64 MiB.
  static constexpr size_t kReadAllMaxBytes = size_t{64} << 20;
  // Append file descriptors kept open at once; opening one more closes another.
  static constexpr size_t kMaxOpenFiles = 128;

  // Creates `root` (and parents) if missing.
  static Result<std::unique_ptr<LogStore>> Open(const std::string& root);
  ~LogStore();
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  const std::string& root() const { return root_; }
  // <root>/<job_id>.log; InvalidArgument for a bad id.
  Result<std::string> PathFor(std::string_view job_id) const;
  static Status ValidateJobId(std::string_view job_id);

  // Appends `text` as is (the caller supplies newlines). Creates the file (and
  // the root, if someone removed it) on first use.
  Status Append(std::string_view job_id, std::string_view text);
  // fsync of the job's log file (no-op if it does not exist).
  Status Sync(std::string_view job_id);
  // Closes the cached append descriptor (e.g. when the job ends); a later
  // Append reopens it.
  void Close(std::string_view job_id);

  // Up to max_bytes starting at byte `offset`. At or past the end: empty data,
  // next_offset = offset.
  Result<LogChunk> Read(std::string_view job_id, uint64_t offset, size_t max_bytes);
  // Whole lines from `offset`: at most max_lines lines and max_bytes bytes. A
  // final line without '\n' is returned only if include_partial_line (e.g. the
  // job is terminal and its log drained). A single line longer than max_bytes
  // is returned in pieces cut at a UTF-8 character boundary, so every chunk is
  // valid for a WebSocket TEXT frame if the log is UTF-8.
  Result<LogChunk> ReadLines(std::string_view job_id, uint64_t offset, size_t max_lines, size_t max_bytes,
                             bool include_partial_line);
  // The whole log. If it is bigger than max_bytes, the last max_bytes (cut
  // forward to the next line start) preceded by one line
  // "[cohort: log truncated: showing the last N of M bytes]\n".
  Result<std::string> ReadAll(std::string_view job_id, size_t max_bytes = kReadAllMaxBytes);
  // The last n_lines lines (a trailing '\n' does not count as an empty line),
  // scanning at most max_bytes back from the end.
  Result<std::string> Tail(std::string_view job_id, size_t n_lines, size_t max_bytes = size_t{1} << 20);
  // Bytes in the log; 0 if it does not exist.
  Result<uint64_t> Size(std::string_view job_id);
  // Deletes the log file (and its marks); OK if they do not exist. (DELETE
  // /api/jobs keeps logs.)
  Status Remove(std::string_view job_id);

  // Marks: how much of each worker's output stream (LogChunk.offset) the log
  // holds, so that chunks an agent sends again are not written twice, also
  // after a head restart. <root>/<job_id>.marks: 16-byte records (attempt,
  // rank: int32; offset: uint64; little-endian), record i at byte 16 i. A
  // record is one pwrite(2) that never crosses a page, so a killed head
  // leaves each record old or new, never torn.
  struct Mark {
    int32_t attempt = 0;
    int32_t rank = 0;
    uint64_t offset = 0;
  };
  // Every record, in slot order; empty if there is no marks file.
  Result<std::vector<Mark>> ReadMarks(std::string_view job_id);
  Status WriteMark(std::string_view job_id, size_t slot, const Mark& mark);

 private:
  explicit LogStore(std::string root);
  // REQUIRES: mu_ held. The append fd for the job, opening it if needed.
  Result<int> AppendFdLocked(const std::string& job_id, const std::string& path);

  const std::string root_;
  std::mutex mu_;
  std::unordered_map<std::string, int> append_fds_;  // GUARDED_BY(mu_); job_id -> O_APPEND fd
};

}  // namespace cohort::head
