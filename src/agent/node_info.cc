// Node facts; see node_info.h and cohort/agent/agent.h.
#include "node_info.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cohort::agent {

std::vector<std::string> DetectGpuDevices() {
  std::vector<std::string> devices;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ',')) {
      size_t b = item.find_first_not_of(" \t");
      size_t e = item.find_last_not_of(" \t");
      if (b == std::string::npos) continue;
      item = item.substr(b, e - b + 1);
      // CUDA stops at the first invalid entry ("-1" hides everything after it).
      if (item == "-1" || item == "NoDevFiles") break;
      devices.push_back(item);
    }
    return devices;
  }
  int count = 0;
  if (DIR* dir = ::opendir("/dev")) {
    while (dirent* ent = ::readdir(dir)) {
      const char* name = ent->d_name;
      if (std::strncmp(name, "nvidia", 6) != 0 || name[6] == '\0') continue;
      bool digits = true;
      for (const char* p = name + 6; *p; ++p) digits = digits && std::isdigit(*p);
      if (digits) ++count;
    }
    ::closedir(dir);
  }
  for (int i = 0; i < count; ++i) devices.push_back(std::to_string(i));
  return devices;
}

Resources DetectResources() {
  Resources r;
  long cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  r["CPU"] = static_cast<double>(cpus > 0 ? cpus : 1);
  r["GPU"] = static_cast<double>(DetectGpuDevices().size());
  double memory = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemTotal:") {
      memory = kib * 1024.0;
      break;
    }
  }
  if (memory <= 0) {
    long pages = ::sysconf(_SC_PHYS_PAGES);
    long page = ::sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) memory = static_cast<double>(pages) * static_cast<double>(page);
  }
  r["memory"] = memory;
  return r;
}

Result<Resources> CompleteResources(const Resources& given) {
  for (const auto& [name, amount] : given) {
    if (name.empty()) return Status::InvalidArgument("a resource with an empty name");
    if (!std::isfinite(amount) || amount < 0) {
      return Status::InvalidArgument("resource " + name + " = " + std::to_string(amount) +
                                     " must be a finite number >= 0");
    }
  }
  Resources r = given;
  bool missing = !r.count("CPU") || !r.count("GPU") || !r.count("memory");
  if (missing) {
    Resources detected = DetectResources();
    for (const char* name : {"CPU", "GPU", "memory"}) r.emplace(name, detected[name]);
  }
  return r;
}

Result<std::string> InterfaceWithAddress(const std::string& address) {
  in6_addr want6{};
  in_addr want4{};
  const bool v4 = ::inet_pton(AF_INET, address.c_str(), &want4) == 1;
  const bool v6 = !v4 && ::inet_pton(AF_INET6, address.c_str(), &want6) == 1;
  if (!v4 && !v6) return Status::InvalidArgument("not an IP address: " + address);
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return Status::IoError(std::string("getifaddrs: ") + std::strerror(errno));
  std::string found;
  for (ifaddrs* a = all; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_name == nullptr) continue;
    if (v4 && a->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr == want4.s_addr) {
      found = a->ifa_name;
    }
    if (v6 && a->ifa_addr->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, &want6, sizeof(want6)) == 0) {
      found = a->ifa_name;
    }
  }
  ::freeifaddrs(all);
  if (found.empty()) return Status::NotFound("no local interface has address " + address);
  return found;
}

void AddSocketInterfaceEnv(const std::string& iface, std::map<std::string, std::string>* env) {
  if (iface.empty()) return;
  for (const char* name : {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME"}) env->try_emplace(name, iface);
}

Result<std::string> LocalAddressToward(const std::string& head_address) {
  std::string host;
  std::string port;
  if (!head_address.empty() && head_address[0] == '[') {
    size_t close = head_address.find(']');
    if (close == std::string::npos) return Status::InvalidArgument("bad address " + head_address);
    host = head_address.substr(1, close - 1);
    if (close + 1 < head_address.size() && head_address[close + 1] == ':') {
      port = head_address.substr(close + 2);
    }
  } else {
    size_t colon = head_address.rfind(':');
    host = head_address.substr(0, colon);
    if (colon != std::string::npos) port = head_address.substr(colon + 1);
  }
  if (port.empty()) port = "1";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return Status::NotFound("cannot resolve " + host + ": " + gai_strerror(rc));
  std::string found;
  for (addrinfo* ai = res; ai != nullptr && found.empty(); ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {0};
      const void* src = local.ss_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, src, buf, sizeof(buf)) != nullptr) found = buf;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (found.empty()) return Status::NotFound("no route to " + host);
  return found;
}

std::map<int64_t, int64_t> ProcessGroupRss(const std::set<int64_t>& pgids) {
  std::map<int64_t, int64_t> rss;
  if (pgids.empty()) return rss;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return rss;
  const long page = ::sysconf(_SC_PAGE_SIZE);
  while (dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;  // exited meanwhile
    // "pid (comm) state ppid pgrp ... rss ...": comm may hold spaces and
    // parentheses, so fields are counted after the last ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    std::string field;
    int64_t pgrp = -1, pages = 0;
    for (int i = 0; fields >> field && i <= 21; ++i) {
      if (i == 2) pgrp = std::atoll(field.c_str());                 // pgrp
      if (i == 21) pages = std::atoll(field.c_str());               // rss, in pages
    }
    if (pgids.count(pgrp) != 0 && pages > 0) rss[pgrp] += pages * page;
  }
  ::closedir(proc);
  return rss;
}

std::string Hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string CudaVisibleDevicesFor(const std::vector<int>& gpu_ids,
                                  const std::vector<std::string>& devices) {
  std::string out;
  for (int id : gpu_ids) {
    if (!out.empty()) out += ',';
    if (id >= 0 && static_cast<size_t>(id) < devices.size()) {
      out += devices[static_cast<size_t>(id)];
    } else {
      out += std::to_string(id);
    }
  }
  return out;
}

}  // namespace cohort::agent
