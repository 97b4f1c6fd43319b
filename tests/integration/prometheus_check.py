"""Scrapes a cohort head's and a node agent's GET /metrics and checks them
with a real Prometheus text-format parser (prometheus_client, Debian's
python3-prometheus-client). Run by tests/integration/metrics_test.cc:

    /usr/bin/python3 prometheus_check.py HEAD_URL AGENT_URL JOB_ID

Exit 0 when every check passes, 77 when prometheus_client is missing, 1
otherwise (the failures are printed).
"""

import math
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover
    print("SKIP: prometheus_client is not installed (apt-get install python3-prometheus-client)")
    sys.exit(77)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def scrape(url):
    # No Authorization header: /metrics is public, as Prometheus scrapes it.
    with urllib.request.urlopen(url, timeout=30) as r:
        ctype = r.headers.get("Content-Type", "")
        check(r.status == 200, "%s: status %s" % (url, r.status))
        check(ctype.startswith("text/plain") and "version=0.0.4" in ctype,
              "%s: Content-Type %r" % (url, ctype))
        text = r.read().decode("utf-8")
    families = {}
    for f in text_string_to_metric_families(text):  # raises on malformed text
        check(f.name not in families, "%s: family %s twice" % (url, f.name))
        families[f.name] = f
    # Every family has HELP and TYPE lines (the parser accepts their absence).
    for name, f in families.items():
        check(f.documentation != "", "%s: %s has no HELP" % (url, name))
    return text, families


def samples(families, family, sample=None, **labels):
    f = families.get(family)
    if f is None:
        failures.append("missing family " + family)
        return []
    out = []
    for s in f.samples:
        if sample is not None and s.name != sample:
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            out.append(s)
    return out


def value(families, family, sample=None, **labels):
    found = samples(families, family, sample, **labels)
    if len(found) != 1:
        failures.append("%s%s %s: %d samples" % (family, "/" + sample if sample else "", labels, len(found)))
        return float("nan")
    return found[0].value


def check_histogram(families, name):
    f = families.get(name)
    if f is None:
        failures.append("missing histogram " + name)
        return
    check(f.type == "histogram", "%s is a %s" % (name, f.type))
    buckets = [(float(s.labels["le"]), s.value) for s in f.samples if s.name == name + "_bucket"]
    check(buckets and buckets[-1][0] == math.inf, name + ": no +Inf bucket")
    check(all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(buckets, buckets[1:])),
          name + ": buckets not ascending and cumulative: %s" % buckets)
    count = value(families, name, name + "_count")
    check(count >= 1, "%s_count = %s" % (name, count))
    check(buckets and buckets[-1][1] == count, name + ": +Inf bucket != _count")
    check(value(families, name, name + "_sum") >= 0, name + "_sum < 0")


def check_process(families, who):
    check(value(families, "process_resident_memory_bytes") > 0, who + ": RSS")
    check(value(families, "process_open_fds") > 0, who + ": open fds")
    check(value(families, "process_start_time_seconds") > 1e9, who + ": start time")
    check(families.get("process_cpu_seconds") is not None and families["process_cpu_seconds"].type == "counter",
          who + ": process_cpu_seconds_total is not a counter")


def main():
    head_url, agent_url, job = sys.argv[1:4]

    _, head = scrape(head_url)
    check(value(head, "cohort_nodes", state="alive") >= 1, "cohort_nodes{state=alive} < 1")
    check(value(head, "cohort_nodes", state="dead") == 0, "cohort_nodes{state=dead} != 0")
    for status in ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"):
        samples(head, "cohort_jobs", status=status) or failures.append("cohort_jobs{status=%s} missing" % status)
    check(value(head, "cohort_jobs", status="SUCCEEDED") >= 1, "cohort_jobs{status=SUCCEEDED} < 1")
    check(head.get("cohort_jobs_submitted") is not None and head["cohort_jobs_submitted"].type == "counter",
          "cohort_jobs_submitted_total is not a counter")
    check(value(head, "cohort_jobs_submitted", "cohort_jobs_submitted_total") >= 1, "no submission counted")
    check(value(head, "cohort_job_restarts", "cohort_job_restarts_total") == 0, "restarts counted")
    check_histogram(head, "cohort_job_submit_to_running_seconds")
    check_histogram(head, "cohort_job_placement_wait_seconds")
    check(value(head, "cohort_pending_demand_bundles") == 0, "pending demand")
    check(value(head, "cohort_job_metric", job=job, rank="0", name="train_loss") == 0.5,
          "cohort_job_metric{name=train_loss} != 0.5")
    check(value(head, "cohort_job_metric", job=job, rank="0", name="epoch") == 1, "cohort_job_metric{name=epoch} != 1")
    cpu_total = [s for s in samples(head, "cohort_node_resources", resource="CPU", kind="total")]
    check(len(cpu_total) == 1 and cpu_total[0].value == 2, "cohort_node_resources CPU total: %s" % cpu_total)
    check(head.get("cohort_api_requests") is not None and head["cohort_api_requests"].type == "counter",
          "cohort_api_requests_total is not a counter")
    check(value(head, "cohort_api_requests", method="POST", route="/api/jobs/", code="200") >= 1,
          "POST /api/jobs/ 200 not counted")
    check(sum(s.value for s in samples(head, "cohort_api_requests", route="/api/jobs/{id}")) >= 1,
          "GET /api/jobs/{id} not counted by pattern")
    check_process(head, "head")

    _, agent = scrape(agent_url)
    check(value(agent, "cohort_node_connected") == 1, "agent not connected")
    check(value(agent, "cohort_node_workers_running") >= 0, "workers running")
    check(value(agent, "cohort_node_resources", resource="CPU") == 2, "agent CPU resource")
    check(value(agent, "cohort_node_cpu_cores") >= 1, "cpu cores")
    busy = value(agent, "cohort_node_cpu_usage_ratio")
    check(math.isnan(busy) or 0 <= busy <= 1, "cpu usage ratio %s" % busy)
    check(agent.get("cohort_node_cpu_seconds") is not None and agent["cohort_node_cpu_seconds"].type == "counter",
          "cohort_node_cpu_seconds_total is not a counter")
    check(value(agent, "cohort_node_cpu_seconds", mode="idle") > 0, "idle cpu seconds")
    total = value(agent, "cohort_node_memory_total_bytes")
    used = value(agent, "cohort_node_memory_used_bytes")
    check(total > 0 and 0 < used <= total, "memory used %s of %s" % (used, total))
    check(value(agent, "cohort_node_gpus") >= 0, "gpus")
    check_process(agent, "agent")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: head %d families, agent %d families" % (len(head), len(agent)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
