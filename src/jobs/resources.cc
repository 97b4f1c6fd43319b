// Resources arithmetic, JSON form and label-selector matching (see
// cohort/jobs/resources.h). Pure functions; thread-compatible.
#include "cohort/jobs/resources.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "json_util.h"

namespace cohort::jobs {
namespace {

bool NearZero(double v) { return std::fabs(v) <= Resources::kTolerance; }

// Splits "a, b,c" on commas and trims spaces; empty items are kept so the
// caller can reject them.
std::vector<std::string> SplitValues(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t comma = list.find(',', start);
    std::string_view item = list.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                                : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// A parsed selector expression; `ok` false when malformed.
struct Expression {
  bool ok = false;
  bool negated = false;
  std::vector<std::string> values;  // one value for "v" / "!v"
};

Expression ParseExpression(std::string_view text) {
  Expression e;
  if (!text.empty() && text.front() == '!') {
    e.negated = true;
    text.remove_prefix(1);
  }
  if (text.substr(0, 3) == "in(") {
    if (text.back() != ')') return e;
    e.values = SplitValues(text.substr(3, text.size() - 4));
    for (const auto& v : e.values) {
      if (v.empty()) return e;
    }
  } else {
    if (text.empty()) return e;
    e.values.emplace_back(text);
  }
  e.ok = true;
  return e;
}

}  // namespace

Resources::Resources(std::initializer_list<std::pair<const std::string, double>> init) {
  for (const auto& [name, amount] : init) Set(name, amount);
}

double Resources::Get(std::string_view name) const {
  auto it = amounts.find(std::string(name));
  return it == amounts.end() ? 0.0 : it->second;
}

void Resources::Set(const std::string& name, double amount) {
  if (NearZero(amount)) {
    amounts.erase(name);
  } else {
    amounts[name] = amount;
  }
}

Resources& Resources::Add(const Resources& other) {
  for (const auto& [name, amount] : other.amounts) Set(name, Get(name) + amount);
  return *this;
}

Resources& Resources::Subtract(const Resources& other) {
  for (const auto& [name, amount] : other.amounts) Set(name, Get(name) - amount);
  return *this;
}

Resources Resources::Times(int n) const {
  Resources out;
  for (const auto& [name, amount] : amounts) out.Set(name, amount * n);
  return out;
}

Resources Resources::ClampedAtZero() const {
  Resources out;
  for (const auto& [name, amount] : amounts) {
    if (amount > 0) out.Set(name, amount);
  }
  return out;
}

bool Resources::Fits(const Resources& demand) const {
  for (const auto& [name, want] : demand.amounts) {
    if (want <= 0) continue;
    double have = Get(name);
    double slack = kTolerance + 1e-9 * std::max(std::fabs(have), std::fabs(want));
    if (want > have + slack) return false;
  }
  return true;
}

nlohmann::json Resources::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, amount] : amounts) j[name] = internal::NumberToJson(amount);
  return j;
}

Result<Resources> Resources::FromJson(const nlohmann::json& j, std::string_view what) {
  if (!j.is_object()) {
    return Status::InvalidArgument(std::string(what) + " must be an object, got " +
                                   internal::JsonTypeForMessage(j));
  }
  Resources out;
  for (const auto& [name, value] : j.items()) {
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
      return Status::InvalidArgument(std::string(what) + " values must be numbers >= 0, got " +
                                     value.dump() + " for '" + name + "'");
    }
    if (name.empty()) return Status::InvalidArgument(std::string(what) + " keys must not be empty");
    out.Set(name, value.get<double>());
  }
  return out;
}

std::string Resources::ToString() const {
  std::string s = "{";
  bool first = true;
  for (const auto& [name, amount] : amounts) {
    if (!first) s += ", ";
    first = false;
    s += name + ": " + internal::FormatNumber(amount);
  }
  return s + "}";
}

Status ValidateLabelSelector(const LabelSelector& selector, std::string_view what) {
  for (const auto& [key, expression] : selector) {
    if (key.empty()) return Status::InvalidArgument(std::string(what) + " keys must not be empty");
    if (!ParseExpression(expression).ok) {
      return Status::InvalidArgument(std::string(what) + " value for '" + key + "' is malformed: '" +
                                     expression + "' (expected v, !v, in(a,b) or !in(a,b))");
    }
  }
  return Status::Ok();
}

bool MatchesLabels(const LabelSelector& selector, const std::map<std::string, std::string>& labels) {
  for (const auto& [key, expression] : selector) {
    Expression e = ParseExpression(expression);
    if (!e.ok) return false;
    auto it = labels.find(key);
    bool in_set = it != labels.end() &&
                  std::find(e.values.begin(), e.values.end(), it->second) != e.values.end();
    if (in_set == e.negated) return false;
  }
  return true;
}

}  // namespace cohort::jobs
