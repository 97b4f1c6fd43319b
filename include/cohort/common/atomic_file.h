// WriteFileAtomically: replaces a whole file so that a reader, or the file
// system after a crash or power loss, sees either the old contents or the
// new, never a mix or a truncated file.
//
// How: the contents go to a new file "<path>.tmp.<pid>.XXXXXX" in the same
// directory (mkostemp: a unique name, O_CLOEXEC, so concurrent writers and
// children forked meanwhile do not share it), which gets `mode`, is fsynced,
// closed and renamed over `path`; then the directory is fsynced so that the
// rename itself is durable.
//
// Contract:
//  - On success `path` is a regular file holding exactly `contents`, with
//    permissions exactly `mode` (the umask does not apply) and the caller's
//    ownership. A symlink at `path` is replaced, not followed.
//  - On failure the temporary file is removed and `path` is untouched, except
//    when only the final directory fsync failed: the new file is then in
//    place but maybe not durable, and the message says so. Errors are
//    IoError "cannot <step> <path>...: <errno text>" (the directory not
//    existing included); InvalidArgument for an empty path or one ending in
//    '/'.
//  - Several writers of one path (threads or processes) do not disturb each
//    other: the last rename wins and readers see one whole version.
//  - Thread-safe; blocks on disk I/O (two fsyncs), so not for event loops.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "cohort/common/status.h"

namespace cohort {

Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode = 0644);

}  // namespace cohort
