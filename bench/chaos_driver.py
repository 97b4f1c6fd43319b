#!/usr/bin/env python3
"""Helper of bench/chaos.sh (Python 3 standard library only).

bench/chaos.sh starts and kills the processes; this file talks to the head's
HTTP API, walks /proc, and checks what survived a kill:

  ports N                         N free TCP ports on 127.0.0.1
  wait-head                       until GET /api/health answers 200
  wait-cluster NODE_ID_FILE...    until those nodes are ALIVE with no CPU in use
  workers ROOT_PID...             "PID ROOT" of every fashion_mnist process under the roots
  snapshot JOB --out F            the job, its log and every job record, just before a kill
  finish JOB --out F ...          waits for the job to end, then compares with the snapshot,
                                  verifies the checkpoints and results; prints one table row
  plan --trials N --seed S         the victims and kill moments of every trial
  report F...                     the table of all trials and the summary line; exit 1 when
                                  anything was lost, corrupt or did not end

Common options: --url http://127.0.0.1:PORT --token-file <head-state>/token.
"""
import argparse
import base64
import json
import os
import random
import re
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import zipfile

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


# --- HTTP ---------------------------------------------------------------------------------

class Api:
    def __init__(self, url, token_file):
        self.url = url.rstrip("/")
        self.token_file = token_file

    def token(self):
        try:
            with open(self.token_file) as f:
                return f.read().strip()
        except OSError:
            return ""

    def request(self, method, path, body=None, timeout=10.0):
        """(status, bytes); status 0 when the head did not answer."""
        headers = {"Authorization": "Bearer " + self.token()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with OPENER.open(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError, ValueError):
            return 0, b""

    def get_json(self, path, deadline_s=30.0):
        """The JSON of a 200 answer, retried (the head may be restarting) until the deadline."""
        end = time.monotonic() + deadline_s
        last = None
        while True:
            status, body = self.request("GET", path)
            if status == 200:
                try:
                    return json.loads(body)
                except ValueError:
                    last = "unparsable body"
            else:
                last = "status %s %r" % (status, body[:200])
            if time.monotonic() >= end:
                raise RuntimeError("GET %s: %s" % (path, last))
            time.sleep(0.2)


# --- /proc ----------------------------------------------------------------------------------

def proc_table():
    """{pid: (ppid, comm)} of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        lp, rp = stat.find("("), stat.rfind(")")
        rest = stat[rp + 2:].split()
        if len(rest) < 2 or rest[0] == "Z":
            continue
        out[int(name)] = (int(rest[1]), stat[lp + 1:rp])
    return out


def trainer_pids(roots):
    """[(pid, root)] of the fashion_mnist processes below the root pids."""
    table = proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = []
    for root in roots:
        todo = list(children.get(root, []))
        while todo:
            pid = todo.pop()
            if table.get(pid, (0, ""))[1] == "fashion_mnist":
                found.append((pid, root))
            todo.extend(children.get(pid, []))
    return sorted(found)


def is_trainer(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"fashion_mnist" in cmd


# --- CRC32C (Castagnoli), as the storage layer records it: base64 of 4 big-endian bytes ------

def _crc_tables():
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t0.append(c)
    return t0


CRC_TABLE = _crc_tables()
_CRC_CACHE = {}


def crc32c_file(path):
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _CRC_CACHE:
        return _CRC_CACHE[key]
    t = CRC_TABLE
    crc = 0xFFFFFFFF
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            for b in chunk:
                crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    value = base64.b64encode(struct.pack(">I", crc ^ 0xFFFFFFFF)).decode()
    _CRC_CACHE[key] = value
    return value


def uri_path(uri):
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        return None  # a bucket: not checked here
    return uri


def check_zip(path):
    """'' when path is a readable zip whose every member matches its CRC-32 (torch archives are zips)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                return "member %s fails its CRC-32" % bad
            if not z.namelist():
                return "empty archive"
    except (zipfile.BadZipFile, OSError, RuntimeError) as e:
        return "not a readable zip archive: %s" % e
    return ""


def check_checkpoints(root, epochs_wanted=None):
    """Verifies every checkpoint directory under root (docs/training.md, remote layout:
    checkpoint_<epoch>/{model.pt,optimizer.pt,state.json} plus MANIFEST.json written last
    with each file's size and CRC32C). Returns a dict of counts and problems."""
    res = {"committed": 0, "partial": 0, "corrupt": 0, "latest": 0, "problems": [], "notes": []}
    if root is None or not os.path.isdir(root):
        res["notes"].append("no checkpoint directory %s" % root)
        return res
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not (name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit() and os.path.isdir(path)):
            res["notes"].append("stray entry %s" % name)
            continue
        epoch = int(name[len("checkpoint_"):])
        manifest_path = os.path.join(path, "MANIFEST.json")
        if not os.path.exists(manifest_path):
            # Not committed (a kill mid-upload): resume never picks it. Not corruption.
            res["partial"] += 1
            res["notes"].append("%s: no MANIFEST.json (uncommitted: %s)" % (name, ", ".join(sorted(os.listdir(path)))))
            continue
        errors = []
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            manifest = None
            errors.append("MANIFEST.json unreadable: %s" % e)
        listed = set()
        if manifest is not None:
            if manifest.get("epoch") != epoch:
                errors.append("MANIFEST.json says epoch %r" % manifest.get("epoch"))
            files = manifest.get("files")
            if not isinstance(files, list) or not files:
                errors.append("MANIFEST.json lists no files")
                files = []
            for entry in files:
                fname = entry.get("name", "")
                listed.add(fname)
                fpath = os.path.join(path, fname)
                if not os.path.isfile(fpath):
                    errors.append("%s missing" % fname)
                    continue
                size = os.path.getsize(fpath)
                if size != entry.get("size_bytes"):
                    errors.append("%s has %d bytes, manifest %r" % (fname, size, entry.get("size_bytes")))
                    continue
                want = entry.get("crc32c", "")
                if want:
                    got = crc32c_file(fpath)
                    if got != want:
                        errors.append("%s CRC32C %s, manifest %s" % (fname, got, want))
            for required in ("model.pt", "optimizer.pt", "state.json"):
                if required not in listed:
                    errors.append("MANIFEST.json does not list %s" % required)
        # Loadable: state.json as resume reads it, and the two torch archives.
        try:
            with open(os.path.join(path, "state.json")) as f:
                state = json.load(f)
            if state.get("epoch") != epoch or state.get("format") != 1:
                errors.append("state.json: epoch %r format %r" % (state.get("epoch"), state.get("format")))
        except (OSError, ValueError) as e:
            errors.append("state.json unreadable: %s" % e)
        for archive in ("model.pt", "optimizer.pt"):
            apath = os.path.join(path, archive)
            if os.path.isfile(apath):
                why = check_zip(apath)
                if why:
                    errors.append("%s %s" % (archive, why))
        extra = sorted(set(os.listdir(path)) - listed - {"MANIFEST.json"})
        if extra:
            res["notes"].append("%s: files not in the manifest: %s" % (name, ", ".join(extra)))
        if errors:
            res["corrupt"] += 1
            res["problems"].append("%s: %s" % (name, "; ".join(errors)))
        else:
            res["committed"] += 1
            res["latest"] = max(res["latest"], epoch)
    if epochs_wanted is not None and res["latest"] != epochs_wanted:
        res["notes"].append("newest complete checkpoint is epoch %d, the job trains %d" % (res["latest"], epochs_wanted))
    return res


def check_results(job):
    """For a SUCCEEDED job with a file:// results_uri: every object the head listed in
    `results` exists with the listed size and CRC32C, and model.pt / metrics.json are there."""
    problems = []
    listing = job.get("results")
    if not isinstance(listing, list):
        return ["no results listing in the job record"]
    names = set()
    for obj in listing:
        path = uri_path(obj.get("uri", ""))
        if path is None:
            continue
        names.add(path)
        if not os.path.isfile(path):
            problems.append("%s listed but missing" % obj.get("uri"))
            continue
        if os.path.getsize(path) != obj.get("size_bytes"):
            problems.append("%s has %d bytes, listed %r" % (obj.get("uri"), os.path.getsize(path), obj.get("size_bytes")))
            continue
        if obj.get("crc32c") and crc32c_file(path) != obj["crc32c"]:
            problems.append("%s CRC32C differs from the listing" % obj.get("uri"))
    rdir = uri_path(job.get("results_dir") or "")
    if rdir:
        for required in ("model.pt", "metrics.json"):
            if os.path.join(rdir, required) not in names:
                problems.append("%s not among the listed results" % required)
        mpath = os.path.join(rdir, "model.pt")
        if os.path.isfile(mpath):
            why = check_zip(mpath)
            if why:
                problems.append("results model.pt " + why)
        try:
            with open(os.path.join(rdir, "metrics.json")) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            problems.append("results metrics.json unreadable: %s" % e)
    return problems


# --- logs -----------------------------------------------------------------------------------

def lines_lost(before, after):
    """How many lines of `before` are not found in `after` in order (a trailing line without
    its newline only needs to start the matching line)."""
    b_lines = before.split("\n")
    partial = b_lines.pop()  # "" when before ends with a newline
    a_lines = after.split("\n")
    lost, j = 0, 0
    missing = []
    for i, line in enumerate(b_lines + ([partial] if partial else [])):
        is_partial = partial and i == len(b_lines)
        k = j
        while k < len(a_lines):
            if a_lines[k] == line or (is_partial and a_lines[k].startswith(line)):
                break
            k += 1
        if k < len(a_lines):
            j = k + 1
        else:
            lost += 1
            missing.append(line)
    return len(b_lines) + (1 if partial else 0), lost, missing


TICK = re.compile(r"^\[rank (\d+)\] tick rank=(\d+) attempt=(\d+) n=(\d+)$")


def tick_gaps(log):
    """The entrypoint's ticker prints `tick rank=R attempt=A n=1, 2, ...`: each (rank, attempt)
    series must arrive whole (a hole in the middle or at the start is a lost line). Returns
    (ticks, missing, duplicated, examples)."""
    series = {}
    total = 0
    for line in log.split("\n"):
        m = TICK.match(line)
        if m:
            total += 1
            series.setdefault((int(m.group(2)), int(m.group(3))), []).append(int(m.group(4)))
    missing = dups = 0
    examples = []
    for (rank, attempt), ns in sorted(series.items()):
        distinct = set(ns)
        dups += len(ns) - len(distinct)
        holes = [n for n in range(1, max(distinct) + 1) if n not in distinct]
        missing += len(holes)
        if holes:
            examples.append("rank %d attempt %d lacks tick(s) %s of 1..%d" % (
                rank, attempt, compress(holes), max(distinct)))
        if len(ns) != len(distinct):
            examples.append("rank %d attempt %d has %d duplicated tick line(s)" % (rank, attempt, len(ns) - len(distinct)))
    return total, missing, dups, examples


def compress(ns):
    """[1,2,3,7] -> '1-3,7'."""
    out, start, prev = [], None, None
    for n in ns + [None]:
        if start is None:
            start = prev = n
        elif n is not None and n == prev + 1:
            prev = n
        else:
            out.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = prev = n
    return ",".join(out)


def phase_at(snap):
    """Where the job was at the kill: 'pend', 'a<attempt>e<epochs done in that attempt>' or 'ended'."""
    status = snap["job"].get("status")
    if status in TERMINAL:
        return "ended"
    if status == "PENDING":
        return "pend"
    attempt_log = snap["logs"].rsplit("cohort: running entrypoint", 1)[-1]
    epochs = sum(1 for l in attempt_log.split("\n") if l.startswith("[rank 0] epoch="))
    return "a%de%d" % (snap["job"].get("attempt") or 0, epochs)


# --- commands -------------------------------------------------------------------------------

def cmd_ports(args, _api):
    socks, ports = [], []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def cmd_wait_head(args, api):
    end = time.monotonic() + args.timeout
    while time.monotonic() < end:
        status, _ = api.request("GET", "/api/health", timeout=2)
        if status == 200:
            return 0
        time.sleep(0.05)
    print("the head did not answer /api/health within %ss" % args.timeout, file=sys.stderr)
    return 1


def cmd_wait_cluster(args, api):
    end = time.monotonic() + args.timeout
    why = ""
    while time.monotonic() < end:
        ids = []
        for f in args.node_id_files:
            try:
                with open(f) as fh:
                    ids.append(fh.read().strip())
            except OSError:
                ids.append("")
        status, body = api.request("GET", "/api/cluster/status", timeout=5)
        if status == 200:
            nodes = {n.get("node_id"): n for n in json.loads(body).get("nodes", [])}
            bad = []
            for node_id, f in zip(ids, args.node_id_files):
                n = nodes.get(node_id)
                if not node_id or n is None:
                    bad.append("%s: not registered" % f)
                elif n.get("state") != "ALIVE":
                    bad.append("%s: %s" % (node_id[:8], n.get("state")))
                elif (n.get("resources_used") or {}).get("CPU", 0):
                    bad.append("%s: CPU in use %s" % (node_id[:8], n["resources_used"]))
            if not bad:
                return 0
            why = "; ".join(bad)
        else:
            why = "cluster status: HTTP %s" % status
        time.sleep(0.1)
    print("cluster not ready within %ss: %s" % (args.timeout, why), file=sys.stderr)
    return 1


def cmd_workers(args, api):
    end = time.monotonic() + args.wait
    polls = 0
    while True:
        found = trainer_pids(args.roots)
        if len(found) >= args.min or time.monotonic() >= end:
            break
        polls += 1
        if args.job and polls % 5 == 0:  # no trainer will come once the job ended
            status, body = api.request("GET", "/api/jobs/%s" % args.job, timeout=2)
            if status == 200 and json.loads(body).get("status") in TERMINAL:
                break
        time.sleep(0.05)
    for pid, root in found:
        print(pid, root)
    return 0 if found else 1


def cmd_snapshot(args, api):
    t = time.time()
    job = api.get_json("/api/jobs/%s" % args.job, deadline_s=10)
    logs = api.get_json("/api/jobs/%s/logs" % args.job, deadline_s=10).get("logs", "")
    records = api.get_json("/api/jobs/", deadline_s=10)
    snap = {
        "time": t,
        "job": job,
        "logs": logs,
        "records": {r["submission_id"]: {"status": r.get("status"), "end_time": r.get("end_time"),
                                         "message": r.get("message")} for r in records},
        "trainers": [pid for pid, _ in trainer_pids(args.roots)] if args.roots else [],
    }
    with open(args.out, "w") as f:
        json.dump(snap, f)
    # The status at the kill, and for a job that had already ended its run time (s).
    ran = ""
    if job.get("status") in TERMINAL and job.get("end_time") and job.get("start_time"):
        ran = "%.1f" % ((job["end_time"] - job["start_time"]) / 1000.0)
    print(job.get("status", "?"), ran)
    return 0


def cmd_finish(args, api):
    with open(args.before) as f:
        before = json.load(f) if os.path.getsize(args.before) else None
    row = {"trial": args.trial, "victim": args.victim, "kill_s": args.kill_s, "at": "-", "job": args.job,
           "status": "?", "message": "", "attempts": 0, "lines_before": 0, "lines_lost": 0,
           "ticks": 0, "tick_lost": 0, "tick_dups": 0, "reattach_failed": 0, "unnoticed": 0,
           "log_prefix_ok": True, "records_before": 0, "records_lost": 0, "records_changed": 0,
           "checkpoints": 0, "partial": 0, "corrupt": 0, "results_bad": 0, "orphans": 0,
           "ended": False, "clean": False, "end_s": None, "notes": [], "problems": []}
    t_end = time.monotonic() + args.bound
    job, seen_error = None, ""
    while True:
        status, body = api.request("GET", "/api/jobs/%s" % args.job, timeout=5)
        if status == 200:
            job = json.loads(body)
            if job.get("status") in TERMINAL:
                row["ended"] = True
                break
        elif status != 0:
            seen_error = "GET job: HTTP %s %r" % (status, body[:200])
        if time.monotonic() >= t_end:
            break
        time.sleep(0.25)
    row["end_s"] = round(time.time() - args.submitted_at, 1) if args.submitted_at else None
    if job is None:
        row["problems"].append("the job record could not be read: %s" % (seen_error or "head down"))
        job = {}
    if not row["ended"]:
        row["problems"].append("job still %s after %ss (attempt %s, message %r, pending_reason %r)" % (
            job.get("status"), args.bound, job.get("attempt"), job.get("message"), job.get("pending_reason")))
        # Stop it so the next trial has the nodes; what it turns into is not counted.
        api.request("POST", "/api/jobs/%s/stop" % args.job)
        stop_end = time.monotonic() + 20
        while time.monotonic() < stop_end:
            status, body = api.request("GET", "/api/jobs/%s" % args.job, timeout=5)
            if status == 200 and json.loads(body).get("status") in TERMINAL:
                break
            time.sleep(0.25)
    row["status"] = job.get("status", "?")
    row["message"] = job.get("message") or ""
    row["attempts"] = (job.get("attempt") or 0) + 1
    row["clean"] = row["ended"] and (row["status"] == "SUCCEEDED" or (row["status"] == "FAILED" and row["message"].strip() != ""))
    if row["ended"] and not row["clean"]:
        row["problems"].append("ended %s without a message" % row["status"])

    try:
        final_logs = api.get_json("/api/jobs/%s/logs" % args.job, deadline_s=20).get("logs", "")
        records_after = api.get_json("/api/jobs/", deadline_s=20)
    except RuntimeError as e:
        row["problems"].append(str(e))
        final_logs, records_after = "", None

    # A head restart must not cost an attempt: the agents re-register and report their
    # workers (running ones re-attach, exited ones report their exit). The head writes this
    # line when a worker of a RUNNING job was never heard of again.
    lost_workers = [l for l in final_logs.split("\n") if "did not re-attach within" in l and l.startswith("cohort: attempt")]
    row["reattach_failed"] = len(lost_workers)
    for l in lost_workers:
        row["problems"].append("after the head restart a worker was never reported again: %r" % l)
    # An agent restarted on its state dir re-registers under the same node id at once, so
    # the node never times out: the head must notice from the registration that the worker
    # it placed there is gone. When it does not, the attempt only fails once a surviving
    # rank gives up on its dead peer (the 60 s rendezvous deadline), or never.
    if args.victim.startswith("agent"):
        slow = [l for l in final_logs.split("\n")
                if "DeadlineExceeded" in l and "rendezvous" in l and l.startswith("[rank")]
        if slow or not row["ended"]:
            row["unnoticed"] = 1
            row["notes"].append("the head did not notice that the restarted agent's worker was gone%s" % (
                "; the attempt failed on a survivor's rendezvous deadline: %r" % slow[0] if slow else ""))
    ticks, holes, dups, examples = tick_gaps(final_logs)
    row["ticks"], row["tick_lost"], row["tick_dups"] = ticks, holes, dups
    if holes:
        row["problems"].extend(examples)
    elif dups:
        row["notes"].extend(examples)
    if before is not None:
        row["at"] = phase_at(before)
        n, lost, missing = lines_lost(before["logs"], final_logs)
        row["lines_before"], row["lines_lost"] = n, lost
        row["log_prefix_ok"] = final_logs.startswith(before["logs"])
        if lost:
            row["problems"].append("%d log line(s) seen before the kill are gone: %s" % (
                lost, " | ".join(repr(m) for m in missing[:5])))
        elif not row["log_prefix_ok"]:
            row["notes"].append("the log before the kill is not a byte prefix of the final log "
                                "(no line lost: lines were inserted between them)")
        row["records_before"] = len(before["records"])
        if records_after is not None:
            after = {r["submission_id"]: r for r in records_after}
            gone = [i for i in before["records"] if i not in after]
            row["records_lost"] = len(gone)
            if gone:
                row["problems"].append("job records gone after the kill: %s" % ", ".join(gone))
            for i, old in before["records"].items():
                new = after.get(i)
                if new is not None and old["status"] in TERMINAL and (
                        new.get("status") != old["status"] or new.get("end_time") != old["end_time"]):
                    row["records_changed"] += 1
                    row["problems"].append("finished job %s changed: %s -> %s" % (i, old["status"], new.get("status")))
        # Trainers seen before the kill must all be gone once the job ended.
        grace_end = time.monotonic() + 10
        alive = [p for p in before.get("trainers", []) if is_trainer(p)]
        while alive and time.monotonic() < grace_end:
            time.sleep(0.2)
            alive = [p for p in alive if is_trainer(p)]
        row["orphans"] = len(alive)
        if alive:
            row["problems"].append("trainer process(es) %s of before the kill still run after the job ended" % alive)
            with open(args.orphans_file, "a") as f:
                for p in alive:
                    f.write("%d\n" % p)

    ck = check_checkpoints(uri_path(job.get("checkpoint_dir") or ""),
                           args.epochs if row["status"] == "SUCCEEDED" else None)
    row["checkpoints"], row["partial"], row["corrupt"] = ck["committed"], ck["partial"], ck["corrupt"]
    row["problems"].extend(ck["problems"])
    row["notes"].extend(ck["notes"])
    if row["status"] == "SUCCEEDED":
        bad = check_results(job)
        row["results_bad"] = len(bad)
        row["problems"].extend(bad)

    with open(args.out, "w") as f:
        json.dump(row, f)
    # Details for the raw log.
    with open(args.details, "a") as f:
        f.write("==== trial %s: victim %s killed at %ss, job %s\n" % (args.trial, args.victim, args.kill_s, args.job))
        f.write("---- row: %s\n" % json.dumps(row))
        if before is not None:
            f.write("---- job before the kill: %s\n" % json.dumps(before["job"]))
            f.write("---- log before the kill (%d bytes):\n%s\n" % (len(before["logs"]), before["logs"]))
        f.write("---- job after: %s\n" % json.dumps(job))
        f.write("---- final log (%d bytes):\n%s\n" % (len(final_logs), final_logs))
    print_row(row)
    return 0


COLUMNS = [("trial", 5), ("victim", 7), ("kill_s", 6), ("at", 5), ("status", 9), ("attempts", 8), ("lines_before", 12),
           ("lines_lost", 10), ("ticks", 5), ("tick_lost", 9), ("records_lost", 12), ("checkpoints", 11), ("partial", 7), ("corrupt", 7),
           ("orphans", 7), ("end_s", 6)]


def header():
    return "  ".join(name.rjust(w) if i else name.ljust(w) for i, (name, w) in enumerate(COLUMNS))


def print_row(row):
    cells = []
    for i, (name, w) in enumerate(COLUMNS):
        v = row.get(name)
        if name == "status" and not row.get("ended"):
            v = "%s!" % v
        cells.append(("-" if v is None else str(v)).rjust(w) if i else str(v).ljust(w))
    print("  ".join(cells))
    for p in row.get("problems", []):
        print("    PROBLEM: %s" % p)
    if row.get("unnoticed"):
        print("    note: the head did not notice that the restarted agent's worker was gone")
    if row.get("status") == "FAILED":
        print("    message: %s" % row.get("message"))
    sys.stdout.flush()


def cmd_header(_args, _api):
    print(header())


def cmd_report(args, _api):
    rows = []
    for path in args.files:
        with open(path) as f:
            rows.append(json.load(f))
    print(header())
    for r in rows:
        print_row(r)
    total = len(rows)
    clean = sum(1 for r in rows if r["clean"])
    s = lambda k: sum(int(r.get(k) or 0) for r in rows)
    print()
    for victim in ("head", "agent", "worker"):
        vs = [r for r in rows if r["victim"].startswith(victim)]
        if vs:
            print("# victim=%s trials=%d succeeded=%d failed=%d not_ended=%d mean_end_s=%.1f" % (
                victim, len(vs), sum(r["status"] == "SUCCEEDED" for r in vs), sum(r["status"] == "FAILED" for r in vs),
                sum(not r["ended"] for r in vs),
                sum(r["end_s"] or 0 for r in vs) / len(vs)))
    crashes = args.head_crashes + args.agent_crashes
    print("trials=%d finished_or_cleanly_failed=%d records_lost=%d log_lines_lost=%d corrupt_checkpoints=%d" % (
        total, clean, s("records_lost"), s("lines_lost"), s("corrupt")))
    print("succeeded=%d failed=%d not_ended=%d tick_lines_lost=%d tick_lines_duplicated=%d reattach_failed=%d "
          "agent_restart_unnoticed=%d "
          "records_changed=%d partial_checkpoints=%d results_bad=%d orphan_trainers=%d head_crashes=%d "
          "agent_crashes=%d" % (
              sum(r["status"] == "SUCCEEDED" for r in rows), sum(r["status"] == "FAILED" for r in rows),
              sum(not r["ended"] for r in rows), s("tick_lost"), s("tick_dups"), s("reattach_failed"), s("unnoticed"),
              s("records_changed"),
              s("partial"), s("results_bad"),
              s("orphans"), args.head_crashes, args.agent_crashes))
    bad = (clean < total or s("records_lost") or s("lines_lost") or s("tick_lost") or s("reattach_failed")
           or s("corrupt") or s("records_changed")
           or s("results_bad") or s("orphans") or crashes or total < args.expected)
    if total < args.expected:
        print("# only %d of %d trials ran" % (total, args.expected))
    return 1 if bad else 0


def cmd_plan(args, _api):
    """One line per trial: VICTIM AGENT_INDEX(1..2) RANK(0..1) DELAY_FRACTION. Victims are dealt
    from shuffled rounds of the kinds, so every kind comes up about equally often."""
    rng = random.Random(args.seed)
    kinds = args.victims.split(",")
    deck = []
    for t in range(args.trials):
        if not deck:
            deck = kinds[:]
            rng.shuffle(deck)
        print(deck.pop(), rng.randint(1, 2), rng.randint(0, 1), "%.4f" % rng.random())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8265")
    p.add_argument("--token-file", default="")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s = sub.add_parser("wait-head")
    s.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("wait-cluster")
    s.add_argument("node_id_files", nargs="+")
    s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("workers")
    s.add_argument("roots", nargs="+", type=int)
    s.add_argument("--wait", type=float, default=0)
    s.add_argument("--min", type=int, default=1)
    s.add_argument("--job", default="")
    s = sub.add_parser("snapshot")
    s.add_argument("job")
    s.add_argument("--out", required=True)
    s.add_argument("--roots", nargs="*", type=int, default=[])
    s = sub.add_parser("finish")
    s.add_argument("job")
    s.add_argument("--before", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--details", required=True)
    s.add_argument("--orphans-file", required=True)
    s.add_argument("--bound", type=float, default=180)
    s.add_argument("--trial", default="")
    s.add_argument("--victim", default="")
    s.add_argument("--kill-s", default="")
    s.add_argument("--submitted-at", type=float, default=0)
    s.add_argument("--epochs", type=int, default=0)
    s = sub.add_parser("report")
    s.add_argument("files", nargs="*")
    s.add_argument("--expected", type=int, default=0)
    s.add_argument("--head-crashes", type=int, default=0)
    s.add_argument("--agent-crashes", type=int, default=0)
    sub.add_parser("header")
    s = sub.add_parser("plan")
    s.add_argument("--trials", type=int, required=True)
    s.add_argument("--seed", required=True)
    s.add_argument("--victims", default="head,agent,worker")
    args = p.parse_args()
    api = Api(args.url, args.token_file)
    fn = {"ports": cmd_ports, "wait-head": cmd_wait_head, "wait-cluster": cmd_wait_cluster,
          "workers": cmd_workers, "snapshot": cmd_snapshot, "finish": cmd_finish,
          "report": cmd_report, "plan": cmd_plan, "header": cmd_header}[args.cmd]
    sys.exit(fn(args, api) or 0)


if __name__ == "__main__":
    main()
