// ShmGroup implementation; see shm_group.h.
#include "transport/shm/shm_group.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "cohort/common/logging.h"

namespace cohort::comm {

struct alignas(64) RankSlot {
  std::atomic<int32_t> pid;
  std::atomic<uint64_t> arrive;  // generation of the last barrier entered
};

struct ShmGroup::Control {
  uint64_t magic;
  int32_t world_size;
  std::atomic<int32_t> abort_rank;   // -1 while healthy
  std::atomic<int32_t> reason_ready;
  char abort_reason[500];
  alignas(64) RankSlot slots[1];  // world_size of them
};

namespace {

constexpr uint64_t kControlMagic = 0xC0407C0417E5ull;
constexpr size_t kPage = 4096;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

Result<char*> MapSegment(const std::string& name, size_t size_bytes, bool create) {
  int flags = O_RDWR | (create ? O_CREAT | O_EXCL : 0);
  int fd = ::shm_open(name.c_str(), flags, 0600);
  if (fd < 0)
    return Status::IoError("shm_open(" + name + "): " + std::strerror(errno) +
                           (errno == ENOSPC || errno == ENOMEM ? " (is /dev/shm full?)" : ""));
  if (create && ::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    Status s = Status::IoError("ftruncate(" + name + ", " + std::to_string(size_bytes) +
                               "): " + std::strerror(errno) + " (is /dev/shm large enough?)");
    ::close(fd);
    ::shm_unlink(name.c_str());
    return s;
  }
  void* p = ::mmap(nullptr, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return Status::IoError("mmap(" + name + "): " + std::strerror(errno));
  return static_cast<char*>(p);
}

// True when pid no longer runs (gone, or a zombie waiting to be reaped).
bool ProcessGone(int32_t pid) {
  if (pid <= 0 || pid == getpid()) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < line.size() &&
         (line[close_paren + 2] == 'Z' || line[close_paren + 2] == 'X');
}

std::string RandomSession() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<std::unique_ptr<ShmGroup>> ShmGroup::Create(Store& store, int rank, int world_size,
                                                   size_t scratch_bytes, Deadline deadline) {
  std::unique_ptr<ShmGroup> g(new ShmGroup(rank, world_size));
  g->control_bytes_ = RoundUp(sizeof(Control) + sizeof(RankSlot) * world_size, kPage);
  std::string control_name;
  if (rank == 0) {
    g->session_ = RandomSession();
    control_name = "/cohort-" + g->session_ + "-ctl";
    COHORT_ASSIGN_OR_RETURN(char* p, MapSegment(control_name, g->control_bytes_, true));
    g->control_ = reinterpret_cast<Control*>(p);
    g->control_->magic = kControlMagic;
    g->control_->world_size = world_size;
    g->control_->abort_rank.store(-1);
    COHORT_RETURN_IF_ERROR(store.Set("shm/session", g->session_));
  } else {
    auto session = store.Get("shm/session", deadline);
    if (!session.ok()) return session.status().WithPrefix("rank 0 did not set up shared memory");
    g->session_ = *session;
    control_name = "/cohort-" + g->session_ + "-ctl";
    COHORT_ASSIGN_OR_RETURN(char* p, MapSegment(control_name, g->control_bytes_, false));
    g->control_ = reinterpret_cast<Control*>(p);
    if (g->control_->magic != kControlMagic || g->control_->world_size != world_size)
      return Status::FailedPrecondition("shared-memory control block of session " + g->session_ +
                                        " does not match world_size " + std::to_string(world_size));
  }
  g->control_->slots[rank].pid.store(getpid(), std::memory_order_release);
  g->timeout_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                       deadline.when() - Deadline::Clock::now()).count();
  // Segment 0: the staging scratch. Its first barrier also proves that every
  // rank mapped the control block, so rank 0 can unlink its name.
  auto scratch = g->AddSegment(scratch_bytes, deadline);
  if (rank == 0) ::shm_unlink(control_name.c_str());
  if (!scratch.ok()) return scratch.status();
  return g;
}

ShmGroup::~ShmGroup() {
  for (auto& seg : segments_)
    for (char* base : seg.bases)
      if (base != nullptr) ::munmap(base, seg.size_bytes);
  if (control_ != nullptr) ::munmap(control_, control_bytes_);
}

Result<int> ShmGroup::AddSegment(size_t size_bytes, Deadline deadline) {
  const int index = static_cast<int>(segments_.size());
  Segment seg;
  seg.size_bytes = RoundUp(std::max<size_t>(size_bytes, 1), kPage);
  seg.bases.assign(world_size_, nullptr);
  auto name_of = [&](int r) {
    return "/cohort-" + session_ + "-r" + std::to_string(r) + "-s" + std::to_string(index);
  };
  auto mine = MapSegment(name_of(rank_), seg.size_bytes, true);
  if (!mine.ok()) {
    Abort(mine.status().message());
    return mine.status();
  }
  seg.bases[rank_] = *mine;
  segments_.push_back(seg);  // owned now: unmapped by the destructor on any error below
  Status st = Barrier(deadline);  // every rank created its segment
  for (int p = 0; st.ok() && p < world_size_; ++p) {
    if (p == rank_) continue;
    auto peer = MapSegment(name_of(p), seg.size_bytes, false);
    if (!peer.ok()) {
      st = peer.status();
      Abort(st.message());
      break;
    }
    segments_.back().bases[p] = *peer;
  }
  if (st.ok()) st = Barrier(deadline);  // every rank mapped every segment
  ::shm_unlink(name_of(rank_).c_str());
  if (!st.ok()) return st;
  return index;
}

std::optional<std::pair<int, size_t>> ShmGroup::Locate(const void* p, size_t size_bytes) const {
  auto addr = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 1; i < segments_.size(); ++i) {  // segment 0 is internal scratch
    auto base = reinterpret_cast<uintptr_t>(segments_[i].bases[rank_]);
    if (addr >= base && addr + size_bytes <= base + segments_[i].size_bytes)
      return std::make_pair(static_cast<int>(i), static_cast<size_t>(addr - base));
  }
  return std::nullopt;
}

void ShmGroup::Abort(const std::string& reason) {
  if (control_ == nullptr) return;
  int32_t expected = -1;
  if (control_->abort_rank.compare_exchange_strong(expected, rank_)) {
    std::snprintf(control_->abort_reason, sizeof(control_->abort_reason), "%s", reason.c_str());
    control_->reason_ready.store(1, std::memory_order_release);
  }
}

Status ShmGroup::CheckAborted() const {
  int32_t who = control_->abort_rank.load(std::memory_order_acquire);
  if (who < 0 || who == rank_) return Status::Ok();
  for (int i = 0; i < 1000 && control_->reason_ready.load(std::memory_order_acquire) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::microseconds(10));
  return Status::Unavailable("rank " + std::to_string(who) + " failed: " +
                             std::string(control_->abort_reason));
}

Status ShmGroup::Barrier(Deadline deadline) {
  const uint64_t gen = ++generation_;
  control_->slots[rank_].arrive.store(gen, std::memory_order_release);
  for (int p = 0; p < world_size_; ++p) {
    if (p == rank_) continue;
    Status st = WaitArrive(p, gen, deadline);
    if (!st.ok()) {
      Abort(st.message());
      return st;
    }
  }
  return Status::Ok();
}

Status ShmGroup::WaitArrive(int peer, uint64_t generation, Deadline deadline) {
  RankSlot& slot = control_->slots[peer];
  auto reached = [&] { return slot.arrive.load(std::memory_order_acquire) >= generation; };
  if (reached()) return Status::Ok();
  using Clock = Deadline::Clock;
  const auto start = Clock::now();
  auto next_liveness_check = start + std::chrono::milliseconds(20);
  while (true) {
    for (int i = 0; i < 128; ++i) {
      if (reached()) return Status::Ok();
      CpuRelax();
    }
    COHORT_RETURN_IF_ERROR(CheckAborted());
    const auto now = Clock::now();
    const int32_t pid = slot.pid.load(std::memory_order_acquire);
    if (now >= next_liveness_check) {
      if (ProcessGone(pid)) {
        if (reached()) return Status::Ok();
        return Status::Unavailable("rank " + std::to_string(peer) + " (pid " + std::to_string(pid) +
                                   ") exited before reaching the collective");
      }
      next_liveness_check = now + std::chrono::milliseconds(20);
    }
    if (now >= deadline.when()) {
      if (reached()) return Status::Ok();
      return Status::DeadlineExceeded(
          "rank " + std::to_string(peer) + " (pid " + std::to_string(pid) +
          ") did not reach the collective within " + std::to_string(timeout_ms_) +
          " ms (stalled, or not calling the same collectives)");
    }
    const auto waited = now - start;
    if (waited < std::chrono::microseconds(50)) continue;
    if (waited < std::chrono::milliseconds(5)) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

}  // namespace cohort::comm
