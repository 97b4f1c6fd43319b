// `cohort status`: the cluster at a glance from GET /api/cluster/status —
// one row per node (state, CPU/GPU/memory used of total, heartbeat age), the
// totals over alive nodes, and the resource demand of jobs waiting to be
// placed. Main thread only.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/job_client.h"

namespace cohort::cli {
namespace {

struct StatusFlags {
  std::string address;
  std::string token;
  std::string token_file;
  std::string state_dir;
  bool json = false;
};

bool IsMemoryKey(const std::string& key) {
  return key == "memory" || key == "object_store_memory" ||
         (key.size() > 6 && key.substr(key.size() - 6) == "memory");
}

std::string AmountText(const std::string& key, double v) {
  return IsMemoryKey(key) ? FormatBytes(v) : FormatAmount(v);
}

// "used/total" of one resource.
std::string UsedOfTotal(const std::string& key, double used, double total) {
  return AmountText(key, used) + "/" + AmountText(key, total);
}

std::string HeartbeatAge(const Json& node) {
  auto it = node.find("last_heartbeat_ms");
  if (it == node.end() || !it->is_number()) return "-";
  double v = it->get<double>();
  double age_ms = v;
  if (v > 1e12) {  // a unix timestamp in ms rather than an age
    const double now_ms = std::chrono::duration<double, std::milli>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    age_ms = std::max(0.0, now_ms - v);
  }
  char buf[48];
  if (age_ms < 60e3) {
    std::snprintf(buf, sizeof(buf), "%.1fs ago", age_ms / 1e3);
  } else if (age_ms < 3600e3) {
    std::snprintf(buf, sizeof(buf), "%.0fm ago", age_ms / 60e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1fh ago", age_ms / 3600e3);
  }
  return buf;
}

std::string BundleText(const Json& bundle) {
  std::string r;
  if (!bundle.is_object()) return bundle.dump();
  for (auto it = bundle.begin(); it != bundle.end(); ++it) {
    if (!r.empty()) r += ", ";
    r += it.key() + ": " + (it->is_number() ? AmountText(it.key(), it->get<double>()) : it->dump());
  }
  return "{" + r + "}";
}

std::string Field(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

int RunStatus(const StatusFlags& f) {
  Result<std::string> token = ResolveTokenFlags(f.token, f.token_file);
  if (!token.ok()) {
    std::fprintf(stderr, "cohort status: %s\n", token.status().message().c_str());
    return kExitUsage;
  }
  JobClient client(ResolveConnection(f.address, *token, f.state_dir));
  Result<Json> status = client.ClusterStatus();
  if (!status.ok()) {
    std::fprintf(stderr, "cohort status: %s\n", status.status().message().c_str());
    return 1;
  }
  if (f.json) {
    std::printf("%s\n", status->dump(2).c_str());
    return 0;
  }
  const Json empty = Json::array();
  auto nodes_it = status->find("nodes");
  const Json& nodes = nodes_it != status->end() && nodes_it->is_array() ? *nodes_it : empty;

  // Resource names: CPU, GPU, memory first, then the others alphabetically.
  std::vector<std::string> keys = {"CPU", "GPU", "memory"};
  std::map<std::string, bool> others;
  for (const Json& n : nodes) {
    auto total = n.find("resources_total");
    if (total == n.end() || !total->is_object()) continue;
    for (auto it = total->begin(); it != total->end(); ++it) {
      if (it.key() != "CPU" && it.key() != "GPU" && it.key() != "memory") others[it.key()] = true;
    }
  }

  std::map<std::string, double> sum_used, sum_total;
  int alive = 0, dead = 0;
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "ADDRESS", "STATE", "CPU", "GPU", "MEMORY", "OTHER", "HEARTBEAT"}};
  for (const Json& n : nodes) {
    if (!n.is_object()) continue;
    const std::string state = Field(n, "state");
    const bool is_alive = state == "ALIVE";
    (is_alive ? alive : dead)++;
    auto total_it = n.find("resources_total");
    auto used_it = n.find("resources_used");
    const Json& total = total_it != n.end() && total_it->is_object() ? *total_it : empty;
    const Json& used = used_it != n.end() && used_it->is_object() ? *used_it : empty;
    auto cell = [&](const std::string& key) -> std::string {
      if (!total.is_object() || !total.contains(key)) return "-";
      const double t = NumberField(total, key.c_str());
      const double u = used.is_object() ? NumberField(used, key.c_str()) : 0;
      if (is_alive) {
        sum_total[key] += t;
        sum_used[key] += u;
      }
      return UsedOfTotal(key, u, t);
    };
    std::vector<std::string> row;
    std::string id = Field(n, "node_id");
    if (id.size() > 16) id = id.substr(0, 16);
    row.push_back(id);
    row.push_back(Field(n, "address"));
    row.push_back(state);
    for (const std::string& key : keys) row.push_back(cell(key));
    std::string other;
    for (const auto& [key, unused] : others) {
      std::string c = cell(key);
      if (c == "-") continue;
      if (!other.empty()) other += ", ";
      other += key + " " + c;
    }
    row.push_back(other.empty() ? "-" : other);
    row.push_back(HeartbeatAge(n));
    rows.push_back(std::move(row));
  }

  std::string out;
  out += "Nodes: " + std::to_string(alive) + " alive" +
         (dead > 0 ? ", " + std::to_string(dead) + " dead" : "") + "\n";
  if (rows.size() > 1) out += FormatTable(rows);
  std::string totals;
  for (const std::string& key : keys) {
    if (!sum_total.count(key)) continue;
    if (!totals.empty()) totals += ", ";
    totals += key + " " + UsedOfTotal(key, sum_used[key], sum_total[key]);
  }
  for (const auto& [key, unused] : others) {
    if (!sum_total.count(key)) continue;
    if (!totals.empty()) totals += ", ";
    totals += key + " " + UsedOfTotal(key, sum_used[key], sum_total[key]);
  }
  out += "\nResources in use (alive nodes): " + (totals.empty() ? std::string("none") : totals) +
         "\n";

  auto demand_it = status->find("pending_demand");
  std::string demand;
  if (demand_it != status->end() && demand_it->is_array()) {
    for (const Json& d : *demand_it) {
      if (!d.is_object()) continue;
      // Identical bundles are counted: "2 x {CPU: 1}".
      std::vector<std::pair<std::string, int>> groups;
      auto bundles = d.find("bundles");
      if (bundles != d.end() && bundles->is_array()) {
        for (const Json& b : *bundles) {
          std::string text = BundleText(b);
          if (!groups.empty() && groups.back().first == text) {
            groups.back().second++;
          } else {
            groups.emplace_back(text, 1);
          }
        }
      }
      std::string line;
      for (const auto& [text, count] : groups) {
        if (!line.empty()) line += " + ";
        line += std::to_string(count) + " x " + text;
      }
      demand += "  " + Field(d, "job_id") + ": " + (line.empty() ? "-" : line) + "\n";
    }
  }
  out += demand.empty() ? "Pending demand: none\n" : "Pending demand:\n" + demand;
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

Command AddStatusCommand(CLI::App& root) {
  auto flags = std::make_shared<StatusFlags>();
  CLI::App* sub = root.add_subcommand(
      "status", "Show the cluster's nodes, resources in use and pending demand");
  sub->add_option("--address", flags->address,
                  "Head URL (default: $COHORT_ADDRESS, else http://127.0.0.1:8265)");
  sub->add_option("--token", flags->token,
                  "Bearer token (default: $COHORT_TOKEN, else $COHORT_TOKEN_FILE, else "
                  "<state-dir>/token)");
  sub->add_option("--token-file", flags->token_file,
                  "Read the bearer token from the first line of this file (keeps it off the "
                  "command line)");
  sub->add_option("--state-dir", flags->state_dir,
                  "Local state directory (default: $COHORT_STATE_DIR, else ~/.cohort)");
  sub->add_flag("--json", flags->json, "Print the head's answer as JSON");
  return Command{sub, [flags](const Passthrough& passthrough) {
                   if (passthrough) {
                     std::fprintf(stderr, "cohort status: unexpected arguments after --\n");
                     return kExitUsage;
                   }
                   return RunStatus(*flags);
                 }};
}

}  // namespace cohort::cli
