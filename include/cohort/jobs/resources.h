// Resources and label selectors: the vocabulary of "what a job needs" shared by
// the job spec (jobs/job.h) and gang placement (scheduler/scheduler.h).
//
// A Resources value maps a resource name to an amount: "CPU" and "GPU" (counts,
// fractions allowed), "memory" (bytes) and any custom name ("TPU", "special").
// An absent key means 0, and keys whose amount is 0 are never stored, so two
// values that mean the same thing compare equal. Pure value types, no I/O;
// thread-compatible.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "cohort/common/status.h"

namespace cohort::jobs {

struct Resources {
  // Amounts compare with this slack (plus 1e-9 relative), so that 0.1 + 0.2
  // CPUs fit in 0.3 and repeated Add/Subtract of byte counts don't drift into
  // "does not fit".
  static constexpr double kTolerance = 1e-6;

  std::map<std::string, double> amounts;  // name -> amount; never holds a 0 (within kTolerance)

  Resources() = default;
  Resources(std::initializer_list<std::pair<const std::string, double>> init);

  double Get(std::string_view name) const;  // 0 when absent
  void Set(const std::string& name, double amount);  // |amount| <= kTolerance erases
  // True when no amount is stored (every resource is 0).
  bool empty() const { return amounts.empty(); }

  // Element-wise; results within kTolerance of 0 are erased. Subtract may leave
  // negative amounts (e.g. a node re-registered smaller than what is in use).
  Resources& Add(const Resources& other);
  Resources& Subtract(const Resources& other);
  // Every amount multiplied by n (n >= 0).
  Resources Times(int n) const;
  // Negative amounts dropped.
  Resources ClampedAtZero() const;

  // True when `demand` fits into *this, read as a capacity: for every key of
  // demand, demand[key] <= (*this)[key] within the tolerance. An empty demand
  // fits anywhere. Example: node_free.Fits(bundle).
  bool Fits(const Resources& demand) const;

  // {"CPU": 1, "GPU": 0.5, "memory": 8589934592}; integral amounts are
  // written as JSON integers.
  nlohmann::json ToJson() const;
  // Accepts an object of name -> number >= 0 (booleans are not numbers here);
  // 0 amounts are dropped. `what` names the field in error messages
  // ("scaling.resources_per_worker values must be numbers >= 0, got ...").
  static Result<Resources> FromJson(const nlohmann::json& j, std::string_view what = "resources");

  // "{CPU: 1, GPU: 2}" (keys in map order); "{}" when empty.
  std::string ToString() const;

  bool operator==(const Resources&) const = default;
};

// A node-label constraint, Ray's `label_selector`: key -> expression where the
// expression is one of
//   "v"            the node's label `key` equals v
//   "!v"           the label is absent or differs from v
//   "in(a,b,...)"  the label equals one of the values
//   "!in(a,b,...)" the label is absent or equals none of them
// Every key must match. An empty selector matches every node.
using LabelSelector = std::map<std::string, std::string>;

// InvalidArgument naming the key when an expression is empty or malformed
// ("in(" without ")", an empty value list).
Status ValidateLabelSelector(const LabelSelector& selector, std::string_view what = "label_selector");
// REQUIRES: ValidateLabelSelector(selector).ok(); a malformed expression never matches.
bool MatchesLabels(const LabelSelector& selector, const std::map<std::string, std::string>& labels);

}  // namespace cohort::jobs
