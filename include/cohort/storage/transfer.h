// Whole-file and whole-tree transfers between local paths and object stores,
// on top of BlobStore: what `cohort storage` and the trainer use to copy
// checkpoints and results.
//
// Every argument is a URI or a local path (ParseUri: a plain path is a
// file:// URI). file:// URIs are local paths, so local -> remote is one
// PutFile, remote -> local one GetToFile (atomic: temp file + rename), local
// -> local a PutFile into the file store (also atomic), and remote -> remote
// a download to a temp file followed by an upload. Stores come from
// OpenStore(), so SetStoreForScheme() redirects these helpers too (a file://
// store must stay rooted at "/").
//
// A "tree" is everything under a prefix: for URI u with key k, the objects
// whose keys start with k + "/" (k itself when it is empty or ends in '/');
// for a local directory, the files below it (temp files skipped).
// Thread-safe (stateless); the ProgressFn runs on the calling thread.
#pragma once

#include <string_view>
#include <vector>

#include "cohort/common/status.h"
#include "cohort/storage/blob_store.h"

namespace cohort::storage {

// Copies one object or file. When dst's key is empty or ends in '/', or dst
// is an existing local directory, the copy goes inside it under src's base
// name (like cp). InvalidArgument if src is a directory or prefix (use
// CopyTree); NotFound naming src if it does not exist. progress gets
// (bytes done, total bytes) of the copy.
Status CopyFile(std::string_view src, std::string_view dst, const ProgressFn& progress = nullptr);

// Copies every object of the tree at src to dst + its path relative to src
// (the contents, like rsync src/ dst/): dst/a/b for src/a/b. Lists with
// paging; progress covers the whole tree. Appends the written objects (dst
// keys) to *copied when it is not null. If src is a single object rather than
// a tree, copies it like CopyFile. NotFound if src has neither.
Status CopyTree(std::string_view src, std::string_view dst, const ProgressFn& progress,
                std::vector<ObjectInfo>* copied);

// Deletes the tree at uri and the object uri itself if there is one. For
// file:// it also removes the directories left empty (and refuses the root,
// file:///). NotFound if there was nothing to remove.
Status RemoveTree(std::string_view uri);

// The entries under uri (the tree; or just the object uri names when there is
// no tree there), sorted by key, across all pages. recursive: every object;
// otherwise one level, with sub-prefixes returned as entries whose key ends in
// '/' (size 0). NotFound when uri names neither an object nor a non-empty tree
// (an existing empty local directory or a bucket's root list as empty).
Result<std::vector<ObjectInfo>> ListAll(std::string_view uri, bool recursive);

}  // namespace cohort::storage
