"""cohort: the training-side helpers for Python workers run by cohort.

One file, standard library only (Python 3.8+): copy it next to a training
script or put this directory on PYTHONPATH.

    import cohort

    w = cohort.world()              # rank, local_rank, world_size, ... from the env
    ckpt = cohort.latest_checkpoint()   # resume from here (or None)
    ...
    cohort.report(epoch=3, epochs=10, train_loss=0.41)
    with cohort.new_checkpoint(3) as tmp:   # rank 0, once per epoch
        torch.save(state, os.path.join(tmp, "checkpoint.pt"))
    ...
    out = cohort.results_dir()      # uploaded to the job's results_uri on success

The environment comes from the agent (or `cohort launch`): the torchrun
variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) and COHORT_REPORT_PATH, COHORT_CHECKPOINT_DIR,
COHORT_RESULTS_DIR (docs/api.md).

report() writes the same lines as the C++ Reporter (src/train/report.cc):
one JSON object per line, "rank" and "time" (unix seconds) first, NaN and
infinities as null, sent with one write. The destination is
COHORT_REPORT_PATH: a Unix stream socket there is connected to (and the
connection kept), any other path is appended to (created if needed), and
without it lines go to stdout. A failed write raises OSError naming the
path; the next report reconnects (reopens). Thread-safe; a forked child
opens its own connection.

Checkpoints use the C++ trainer's layout (include/cohort/train/checkpoint_dir.h):
<root>/checkpoint_000012/ holds one epoch's files plus state.json, written
last; a checkpoint appears only by renaming a finished temporary directory,
so a crash never leaves a partial one that latest_checkpoint() would pick.
"""

import contextlib
import json
import math
import os
import re
import shutil
import socket
import stat
import sys
import threading
import time

__all__ = [
    "world",
    "report",
    "checkpoint_dir",
    "results_dir",
    "latest_checkpoint",
    "checkpoint_state",
    "new_checkpoint",
]

REPORT_PATH_ENV = "COHORT_REPORT_PATH"
CHECKPOINT_DIR_ENV = "COHORT_CHECKPOINT_DIR"
RESULTS_DIR_ENV = "COHORT_RESULTS_DIR"
STATE_FILE = "state.json"

_FINAL_RE = re.compile(r"^checkpoint_(\d+)$")
_REPLACED_RE = re.compile(r"^\.replaced_checkpoint_(\d+)_")


# --- who am I ----------------------------------------------------------------

def _env_int(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError("%s=%r is not an integer" % (name, value)) from None


def world():
    """This process's place in the job, from the torchrun environment.

    Returns a dict with rank, local_rank, world_size, local_world_size,
    master_addr and master_port. Without the variables it is rank 0 of 1
    (master 127.0.0.1, port 0); without LOCAL_RANK / LOCAL_WORLD_SIZE all
    ranks are taken to share one host. Raises ValueError for values that are
    not integers or do not fit together.
    """
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    # Without the LOCAL_* variables all ranks are taken to share one host.
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if world_size < 1:
        raise ValueError("WORLD_SIZE=%d must be at least 1" % world_size)
    if not 0 <= rank < world_size:
        raise ValueError("RANK=%d must be in [0, WORLD_SIZE=%d)" % (rank, world_size))
    if not 1 <= local_world_size <= world_size:
        raise ValueError("LOCAL_WORLD_SIZE=%d must be in [1, WORLD_SIZE=%d]"
                         % (local_world_size, world_size))
    if not 0 <= local_rank < local_world_size:
        raise ValueError("LOCAL_RANK=%d must be in [0, LOCAL_WORLD_SIZE=%d)"
                         % (local_rank, local_world_size))
    return {
        "rank": rank,
        "local_rank": local_rank,
        "world_size": world_size,
        "local_world_size": local_world_size,
        "master_addr": os.environ.get("MASTER_ADDR") or "127.0.0.1",
        "master_port": _env_int("MASTER_PORT", 0),
    }


# --- reports -------------------------------------------------------------------

def _plain(name, value):
    """value as something json.dumps takes, non-finite floats as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(name, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(name, v) for v in value]
    # numpy scalars, 0-d arrays and one-element tensors; then arrays/tensors.
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _plain(name, item())
        except (ValueError, RuntimeError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _plain(name, tolist())
    raise TypeError("cohort.report: metric %r has a value of type %s, which is not a number, "
                    "string, list or dict" % (name, type(value).__name__))


class _Reporter:
    """The open destination of this process's reports."""

    def __init__(self):
        self._lock = threading.Lock()
        self._path = None   # what is open: a path, "" for stdout, None for nothing
        self._sock = None
        self._fd = None
        self._pid = None

    def _close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._sock = self._fd = self._path = None

    def _open(self, path):
        if self._pid != os.getpid():
            # A forked child: the parent's connection is not ours to use.
            self._sock = self._fd = self._path = None
            self._pid = os.getpid()
        if self._path == path:
            return
        self._close()
        if path:
            try:
                is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
            except FileNotFoundError:
                is_socket = False
            if is_socket:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                except OSError as e:
                    s.close()
                    raise OSError(e.errno, "cannot connect to report socket %s: %s"
                                  % (path, e.strerror or e)) from None
                self._sock = s
            else:
                try:
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                       | getattr(os, "O_CLOEXEC", 0), 0o644)
                except OSError as e:
                    raise OSError(e.errno, "cannot open report file %s for append: %s"
                                  % (path, e.strerror or e)) from None
        self._path = path

    def write(self, line):
        path = os.environ.get(REPORT_PATH_ENV) or ""
        with self._lock:
            self._open(path)
            try:
                if self._sock is not None:
                    self._sock.sendall(line.encode("utf-8"))
                elif self._fd is not None:
                    data = line.encode("utf-8")
                    while data:
                        n = os.write(self._fd, data)
                        data = data[n:]
                else:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            except OSError as e:
                self._close()  # reconnect (reopen) on the next report
                raise OSError(e.errno, "cannot write report to %s: %s"
                              % (path or "<stdout>", e.strerror or e)) from None


_reporter = _Reporter()


def report(metrics=None, **kwargs):
    """Reports metrics as one JSON line {"rank": R, "time": T, ...}.

    Call as report(epoch=3, train_loss=0.41) or report({"epoch": 3, ...})
    (both may be combined; keyword arguments win). Values may be numbers,
    strings, lists, dicts, numpy scalars or one-element tensors; NaN and
    infinities become null. "rank" and "time" are added and may not be given.
    """
    merged = {}
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise TypeError("cohort.report: pass a dict or keyword arguments, not %s"
                            % type(metrics).__name__)
        merged.update(metrics)
        merged.update(kwargs)
    else:
        merged = kwargs
    line = {"rank": _env_int("RANK", 0), "time": time.time()}
    for name, value in merged.items():
        if not isinstance(name, str):
            raise TypeError("cohort.report: metric names must be strings, got %r" % (name,))
        if name in ("rank", "time"):
            raise ValueError('cohort.report: metric name "%s" is reserved in reports '
                             "(rank and time are added)" % name)
        line[name] = _plain(name, value)
    text = json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    _reporter.write(text + "\n")


# --- directories ------------------------------------------------------------------

def _env_path(name):
    """$name as a local path: a file:// URI loses its scheme; unset is None."""
    path = os.environ.get(name)
    if not path:
        return None
    return path[len("file://"):] if path.startswith("file://") else path


def _dir_from_env(name):
    path = _env_path(name)
    if not path:
        return None
    os.makedirs(path, exist_ok=True)
    return path


def checkpoint_dir():
    """$COHORT_CHECKPOINT_DIR (created if missing), or None when unset."""
    return _dir_from_env(CHECKPOINT_DIR_ENV)


def results_dir():
    """$COHORT_RESULTS_DIR (created if missing), or None when unset."""
    return _dir_from_env(RESULTS_DIR_ENV)


# --- checkpoints --------------------------------------------------------------------

def checkpoint_state(path):
    """The parsed state.json of checkpoint directory `path`, or None if it is
    missing or not valid JSON."""
    try:
        with open(os.path.join(path, STATE_FILE), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def latest_checkpoint(root=None):
    """The newest complete checkpoint directory under `root` (default
    $COHORT_CHECKPOINT_DIR), or None.

    Complete means named checkpoint_NNNNNN with a state.json that parses;
    the highest epoch wins. Temporary directories are never returned.
    """
    root = root or _env_path(CHECKPOINT_DIR_ENV)
    if not root:
        return None
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return None
    candidates = []
    for name in names:
        m = _FINAL_RE.match(name)
        replaced = False
        if not m:
            # A checkpoint being replaced (where the file system lacks an
            # atomic exchange): still valid until its successor is in place.
            m = _REPLACED_RE.match(name)
            replaced = True
        if not m:
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path):
            candidates.append((-int(m.group(1)), replaced, name, path))
    for _, _, _, path in sorted(candidates):
        if checkpoint_state(path) is not None:
            return path
    return None


def _fsync_path(path, directory):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(top):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                _fsync_path(p, False)
        for name in dirnames:
            _fsync_path(os.path.join(dirpath, name), True)
    _fsync_path(top, True)


def _write_json_atomic(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"), allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def new_checkpoint(epoch, state=None, root=None):
    """Writes checkpoint_<epoch> atomically; yields a temporary directory.

        with cohort.new_checkpoint(epoch, state={"seed": 0}) as tmp:
            torch.save(..., os.path.join(tmp, "checkpoint.pt"))

    On a normal exit state.json ({"epoch": epoch, "format": 1, "extra":
    state}) is written last, everything is fsynced and the directory is
    renamed to <root>/checkpoint_<epoch:06d>, replacing one of the same epoch.
    On an exception the temporary directory is removed and nothing changes.
    root defaults to $COHORT_CHECKPOINT_DIR (RuntimeError when unset).
    """
    epoch = int(epoch)
    if epoch < 0:
        raise ValueError("checkpoint epoch must be >= 0, got %d" % epoch)
    root = root or checkpoint_dir()
    if not root:
        raise RuntimeError("no checkpoint directory: %s is not set" % CHECKPOINT_DIR_ENV)
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, ".tmp_checkpoint_%d_%d" % (epoch, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)  # a stale one from an earlier try
    os.mkdir(tmp)
    try:
        yield tmp
        doc = {"epoch": epoch, "format": 1, "extra": _plain("state", state or {})}
        _write_json_atomic(os.path.join(tmp, STATE_FILE), doc)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = os.path.join(root, "checkpoint_%06d" % epoch)
    if os.path.exists(final):
        aside = os.path.join(root, ".replaced_checkpoint_%d_%d" % (epoch, os.getpid()))
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except OSError:
            os.rename(aside, final)  # put the old one back
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_path(root, True)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final)
        _fsync_path(root, True)
