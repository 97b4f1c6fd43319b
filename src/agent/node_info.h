// What the agent tells the head about its machine: detected resources (the
// public DetectResources/DetectGpuDevices in cohort/agent/agent.h), the
// hostname, and the local IP address that routes to the head.
//
// Stateless; thread-safe.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "cohort/agent/agent.h"
#include "cohort/common/status.h"

namespace cohort::agent {

// `given` with "CPU", "GPU" and "memory" filled in from DetectResources()
// where absent. InvalidArgument for a negative or non-finite amount.
Result<Resources> CompleteResources(const Resources& given);

// The local IP address of the route to `head_address` ("host:port",
// "[v6]:port"), found by connecting a UDP socket (no packet is sent);
// NotFound when the host does not resolve or no route exists.
Result<std::string> LocalAddressToward(const std::string& head_address);

// The name of the local interface that holds IP `address` ("10.0.0.2",
// "::1"); NotFound when none does.
Result<std::string> InterfaceWithAddress(const std::string& address);

// The socket-interface variables of the collective libraries (gloo, NCCL,
// TensorPipe), all naming `iface`, for those `env` does not set already: a
// DDP script then talks over the interface that reaches the head, also on a
// host with several (a container's, a namespace's), as torchrun users set
// them by hand.
void AddSocketInterfaceEnv(const std::string& iface, std::map<std::string, std::string>* env);

std::string Hostname();

// Resident memory of the processes in each of the process groups `pgids`,
// summed per group, from /proc/<pid>/stat (one pass over /proc). Groups with
// no process readable are absent.
std::map<int64_t, int64_t> ProcessGroupRss(const std::set<int64_t>& pgids);

// The device names for GPU indices `gpu_ids` (StartWorker.gpu_ids), joined
// with ',' for CUDA_VISIBLE_DEVICES: the agent's own devices when it has a
// name for that index, else the index itself.
std::string CudaVisibleDevicesFor(const std::vector<int>& gpu_ids,
                                  const std::vector<std::string>& devices);

}  // namespace cohort::agent
