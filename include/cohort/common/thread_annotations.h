// Clang thread-safety annotations and an annotated mutex.
//
// With clang and -Wthread-safety the compiler checks that every member
// marked GUARDED_BY(mu) is touched only with mu held and that every function
// marked REQUIRES(mu) is called with it held; tests/head/thread_safety.sh
// builds the head that way (a ctest), so a broken locking contract fails the
// test suite. With g++ the macros expand to nothing.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define COHORT_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define COHORT_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) COHORT_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY COHORT_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) COHORT_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) COHORT_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) COHORT_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) COHORT_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) COHORT_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) COHORT_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RETURN_CAPABILITY(x) COHORT_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS COHORT_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace cohort {

// std::mutex with the capability attribute, so clang can check it.
class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  // For condition variables: the underlying mutex (the caller holds it).
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace cohort
