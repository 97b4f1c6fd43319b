// Decoding the head's status reply (see cohort/k8s/head_status.h).
#include "cohort/k8s/head_status.h"

#include "json_fields.h"

namespace cohort::k8s {

using json = nlohmann::json;

std::optional<HeadStatus> DecodeHeadStatus(const json& reply) {
  if (!reply.is_object()) return std::nullopt;
  HeadStatus out;
  const json& pending = fields::Field(reply, "pending_demand");
  if (pending.is_array())
    for (const auto& p : pending) {
      const json& bundles = fields::Field(p, "bundles");
      if (bundles.is_array())
        for (const auto& b : bundles)
          if (b.is_object()) out.pending_bundles.push_back(b);
    }
  const json& nodes = fields::Field(reply, "nodes");
  if (nodes.is_array())
    for (const auto& n : nodes) {
      if (!n.is_object()) continue;
      HeadStatusNode hn;
      hn.address = fields::Str(n, "address");
      if (auto c = hn.address.rfind(':'); c != std::string::npos && hn.address.find(':') == c)
        hn.address = hn.address.substr(0, c);  // host:port -> host
      hn.alive = fields::Str(n, "state") == "ALIVE";
      hn.is_head = fields::Bool(n, "is_head_node");
      const json& used = fields::Field(n, "resources_used");
      if (used.is_object())
        for (const auto& v : used)
          if (v.is_number() && v.get<double>() > 0) hn.busy = true;
      out.nodes.push_back(std::move(hn));
    }
  return out;
}

}  // namespace cohort::k8s
