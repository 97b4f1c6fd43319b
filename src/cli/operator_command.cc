// `cohort operator`: runs the CohortCluster operator (cohort/k8s/operator.h)
// against the API server from --kubeconfig, $KUBECONFIG, ~/.kube/config or
// the in-cluster service account. Stops on SIGINT/SIGTERM.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <cstdlib>
#include <memory>
#include <cstdio>
#include <thread>

#include "cli/command.h"
#include "cli/package.h"
#include "cohort/common/logging.h"
#include "cohort/k8s/kube_client.h"
#include "cohort/k8s/operator.h"
#include "cohort/net/http_server.h"

namespace cohort::cli {
namespace {

struct OperatorFlags {
  std::string kubeconfig;
  std::string ns;
  bool all_namespaces = false;
  bool leader_elect = false;
  int resync_s = 300;
  std::string lease_namespace;
  std::string image = "cohort:latest";
  std::string cluster_domain = "cluster.local";
  int metrics_port = 8080;
};

int RunOperator(const OperatorFlags& f) {
  auto config = k8s::DefaultConfig(f.kubeconfig);
  if (!config.ok()) {
    std::fprintf(stderr, "cohort operator: %s\n", config.status().ToString().c_str());
    return 1;
  }
  k8s::KubeClient client(*config);
  k8s::OperatorOptions options;
  options.namespace_ = f.all_namespaces ? "" : (f.ns.empty() ? config->default_namespace : f.ns);
  options.leader_elect = f.leader_elect;
  options.lease_namespace = f.lease_namespace;
  if (options.lease_namespace.empty())
    if (const char* ns = std::getenv("POD_NAMESPACE"); ns && *ns) options.lease_namespace = ns;
  if (const char* pod = std::getenv("POD_NAME"); pod && *pod) options.identity = std::string(pod);
  options.resync_s = f.resync_s;
  options.default_image = f.image;
  if (const char* d = std::getenv("CLUSTER_DOMAIN"); d && *d) options.cluster_domain = d;
  else options.cluster_domain = f.cluster_domain;
  // A CohortJob's ConfigMap working dir: packaged as `cohort job submit
  // --working-dir` packages a directory (one file per key, content-addressed name).
  options.package_files = [](const std::map<std::string, std::string>& files)
      -> Result<std::pair<std::string, std::string>> {
    PackageContents contents;
    for (const auto& [name, bytes] : files) {
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        return Status::InvalidArgument("ConfigMap key '" + name.substr(0, 64) + "' is not a file name");
      contents.entries.push_back({name, false, false, bytes});
      contents.total_bytes += bytes.size();
    }
    std::sort(contents.entries.begin(), contents.entries.end(),
              [](const PackageEntry& a, const PackageEntry& b) { return a.path < b.path; });
    contents.name = PackageName(contents.entries);
    COHORT_ASSIGN_OR_RETURN(std::string zip, ZipPackage(contents));
    return std::make_pair(contents.name, std::move(zip));
  };

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::atomic<bool> stop{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    stop = true;
  });
  signals.detach();

  COHORT_LOG(INFO) << "cohort operator: API server " << config->server << ", namespace "
                   << (options.namespace_.empty() ? "(all)" : options.namespace_);
  k8s::Operator op(client, options);
  // GET /healthz, /readyz, /metrics (no auth) for the Deployment's probes and Prometheus.
  std::unique_ptr<net::HttpServer> health;
  if (f.metrics_port > 0) {
    net::HttpServer::Options http_options;
    http_options.port = f.metrics_port;
    auto server = net::HttpServer::Start(http_options);
    if (!server.ok()) {
      std::fprintf(stderr, "cohort operator: --metrics-port: %s\n", server.status().ToString().c_str());
      return 1;
    }
    health = std::move(server).value();
    health->Handle("GET", "/healthz", [](const net::Request&) { return net::Response::Text(200, "ok\n"); });
    health->Handle("GET", "/readyz", [&op](const net::Request&) {
      return op.Ready() ? net::Response::Text(200, "ok\n") : net::Response::Text(503, "not ready\n");
    });
    health->Handle("GET", "/metrics", [&op](const net::Request&) {
      net::Response r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = op.MetricsText();
      return r;
    });
  }
  Status s = op.Run(stop);
  if (health) health->Stop();
  if (!s.ok()) {
    std::fprintf(stderr, "cohort operator: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

Command AddOperatorCommand(CLI::App& root) {
  auto f = std::make_shared<OperatorFlags>();
  CLI::App* app = root.add_subcommand("operator", "Run the Kubernetes operator for CohortCluster resources");
  app->add_option("--kubeconfig", f->kubeconfig, "Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)");
  auto* ns = app->add_option("--namespace,--watch-namespace", f->ns, "Watch this namespace (default: the config's namespace)");
  app->add_flag("--all-namespaces", f->all_namespaces, "Watch every namespace")->excludes(ns);
  app->add_flag("--leader-elect", f->leader_elect, "Hold a coordination.k8s.io Lease so only one replica acts");
  app->add_option("--lease-namespace", f->lease_namespace, "Namespace of the leader-election Lease");
  app->add_option("--resync-s", f->resync_s, "Reconcile every cluster at least this often")->capture_default_str();
  app->add_option("--image", f->image, "Image for containers whose template names none")->capture_default_str();
  app->add_option("--metrics-port", f->metrics_port, "Serve /healthz, /readyz, /metrics here (0: off)")
      ->capture_default_str();
  app->add_option("--cluster-domain", f->cluster_domain, "DNS domain of the cluster ($CLUSTER_DOMAIN)")
      ->capture_default_str();
  return {app, [f](const Passthrough&) { return RunOperator(*f); }};
}

}  // namespace cohort::cli
