// Submit-request validation (Ray's JobSubmitRequest.__post_init__, spec §2.2,
// then cohort's extension fields), submission ids, and the spec's JSON form.
// Pure functions; NewSubmissionId reads the kernel CSPRNG. Called by the
// head's HTTP handler for POST /api/jobs/ and by record persistence.
#include <sys/random.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "cohort/jobs/job.h"
#include "cohort/common/json.h"
#include "json_util.h"

namespace cohort::jobs {
namespace {

using OJson = nlohmann::ordered_json;  // keeps body order: "the first unknown key" is Python's

constexpr size_t kMaxSubmissionIdBytes = 200;

// The keyword arguments of Ray's JobSubmitRequest (Ray 2.54) + cohort's.
constexpr std::string_view kKnownKeys[] = {
    "entrypoint",          "submission_id",       "job_id",
    "runtime_env",         "metadata",            "entrypoint_num_cpus",
    "entrypoint_num_gpus", "entrypoint_memory",   "entrypoint_resources",
    "entrypoint_label_selector",
    "scaling",             "failure",             "results_uri",
};

Status TypeError(std::string text) { return Status::InvalidArgument("TypeError: " + text); }

std::string Got(const OJson& j) { return ", got " + internal::JsonTypeForMessage(j); }

// Python's isinstance(x, (int, float)): bool is an int subclass.
bool IsPyNumber(const OJson& j) { return j.is_number() || j.is_boolean(); }
double PyNumber(const OJson& j) { return j.is_boolean() ? (j.get<bool>() ? 1.0 : 0.0) : j.get<double>(); }

// Ray's "<field> must be a dict" / "keys must be strings" / "values must be
// strings" trio. JSON keys are always strings, so only the values can fail.
Status CheckStringDict(const OJson& j, std::string_view field) {
  if (!j.is_object()) return TypeError(std::string(field) + " must be a dict" + Got(j));
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) return TypeError(std::string(field) + " values must be strings" + Got(v));
  }
  return Status::Ok();
}

std::map<std::string, std::string> ToStringMap(const OJson& j) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) out[k] = v.get<std::string>();
  return out;
}

Status CheckSubmissionIdUsable(const std::string& id) {
  auto bad = [&](std::string why) {
    return Status::InvalidArgument("submission_id '" + internal::SanitizeUtf8(id) +
                                   "' is not allowed: " + why +
                                   " (it names the job's files and URL paths)");
  };
  if (id.size() > kMaxSubmissionIdBytes) {
    return bad("it is longer than " + std::to_string(kMaxSubmissionIdBytes) + " bytes");
  }
  if (id == "." || id == "..") return bad("it must not be '.' or '..'");
  for (unsigned char c : id) {
    if (c == '/' || c == '\\') return bad("it must not contain '/' or '\\'");
    if (c < 0x20 || c == 0x7f) return bad("it must not contain control characters");
  }
  return Status::Ok();
}

Result<ScalingSpec> ParseScaling(const OJson& j) {
  if (!j.is_object()) {
    return Status::InvalidArgument("scaling must be an object like {\"num_workers\": 2}" + Got(j));
  }
  ScalingSpec s;
  bool have_num_workers = false;
  for (const auto& [key, value] : j.items()) {
    if (value.is_null()) continue;  // like the top level: null means "not given"
    if (key == "num_workers") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1 ||
          value.get<int64_t>() > ScalingSpec::kMaxWorkers) {
        return Status::InvalidArgument("scaling.num_workers must be a positive integer (at most " +
                                       std::to_string(ScalingSpec::kMaxWorkers) + "), got " +
                                       value.dump());
      }
      s.num_workers = static_cast<int>(value.get<int64_t>());
      have_num_workers = true;
    } else if (key == "resources_per_worker") {
      auto r = Resources::FromJson(nlohmann::json(value), "scaling.resources_per_worker");
      if (!r.ok()) return r.status();
      s.resources_per_worker = std::move(r).value();
    } else if (key == "placement_strategy") {
      if (!value.is_string() || !IsValidPlacementStrategy(value.get<std::string>())) {
        return Status::InvalidArgument(
            "scaling.placement_strategy must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, got " +
            value.dump());
      }
      s.placement_strategy = value.get<std::string>();
    } else {
      return Status::InvalidArgument("scaling has an unknown key '" + key +
                                     "' (expected num_workers, resources_per_worker, placement_strategy)");
    }
  }
  if (!have_num_workers) return Status::InvalidArgument("scaling.num_workers is required");
  return s;
}

Result<FailureSpec> ParseFailure(const OJson& j) {
  if (!j.is_object()) {
    return Status::InvalidArgument("failure must be an object like {\"max_failures\": 2}" + Got(j));
  }
  FailureSpec f;
  for (const auto& [key, value] : j.items()) {
    if (value.is_null()) continue;
    if (key != "max_failures") {
      return Status::InvalidArgument("failure has an unknown key '" + key + "' (expected max_failures)");
    }
    if (!value.is_number_integer() || value.get<int64_t>() < -1 ||
        value.get<int64_t>() > std::numeric_limits<int>::max()) {
      return Status::InvalidArgument(
          "failure.max_failures must be an integer >= -1 (-1 = unlimited), got " + value.dump());
    }
    f.max_failures = static_cast<int>(value.get<int64_t>());
  }
  return f;
}

Status CheckResultsUri(const OJson& j) {
  if (!j.is_string()) return Status::InvalidArgument("results_uri must be a string" + Got(j));
  const std::string& uri = j.get_ref<const std::string&>();
  std::string_view rest;
  bool is_file = false;
  for (std::string_view scheme : {"file://", "gs://", "s3://"}) {
    if (uri.compare(0, scheme.size(), scheme) == 0) {
      rest = std::string_view(uri).substr(scheme.size());
      is_file = scheme == "file://";
      break;
    }
  }
  if (rest.data() == nullptr) {
    return Status::InvalidArgument("results_uri must start with file://, gs:// or s3://, got '" + uri + "'");
  }
  if (is_file && (rest.empty() || rest.front() != '/')) {
    return Status::InvalidArgument("results_uri must name an absolute path after file:// (file:///dir), got '" +
                                   uri + "'");
  }
  if (!is_file && (rest.empty() || rest.front() == '/')) {
    return Status::InvalidArgument("results_uri must name a bucket (gs://bucket/prefix), got '" + uri + "'");
  }
  return Status::Ok();
}

// The validation of ParseSubmitRequest from step 2 on (see job.h).
Result<JobSpec> ParseSubmitObject(const OJson& body) {
  // 2. Drop null-valued keys.
  OJson req = OJson::object();
  for (const auto& [k, v] : body.items()) {
    if (!v.is_null()) req[k] = v;
  }
  // 3. Keyword binding: unknown keys first, then the required argument.
  for (const auto& [k, v] : req.items()) {
    bool known = false;
    for (std::string_view name : kKnownKeys) known = known || k == name;
    if (!known) return TypeError("__init__() got an unexpected keyword argument '" + k + "'");
  }
  if (!req.contains("entrypoint")) {
    return TypeError("__init__() missing 1 required positional argument: 'entrypoint'");
  }
  auto field = [&](const char* name) -> const OJson* {
    auto it = req.find(name);
    return it == req.end() ? nullptr : &*it;
  };

  // 4. Ray's __post_init__ checks, in Ray's order.
  const OJson& entrypoint = req["entrypoint"];
  if (!entrypoint.is_string()) return TypeError("entrypoint must be a string" + Got(entrypoint));
  const OJson* submission_id = field("submission_id");
  if (submission_id && !submission_id->is_string()) {
    return TypeError("submission_id must be a string if provided" + Got(*submission_id));
  }
  const OJson* job_id = field("job_id");
  if (job_id && !job_id->is_string()) return TypeError("job_id must be a string if provided" + Got(*job_id));
  const OJson* runtime_env = field("runtime_env");
  if (runtime_env && !runtime_env->is_object()) {
    return TypeError("runtime_env must be a dict" + Got(*runtime_env));
  }
  const OJson* metadata = field("metadata");
  if (metadata) COHORT_RETURN_IF_ERROR(CheckStringDict(*metadata, "metadata"));
  const OJson* num_cpus = field("entrypoint_num_cpus");
  if (num_cpus && !IsPyNumber(*num_cpus)) return TypeError("entrypoint_num_cpus must be a number" + Got(*num_cpus));
  const OJson* num_gpus = field("entrypoint_num_gpus");
  if (num_gpus && !IsPyNumber(*num_gpus)) return TypeError("entrypoint_num_gpus must be a number" + Got(*num_gpus));
  const OJson* memory = field("entrypoint_memory");
  if (memory && !(memory->is_number_integer() || memory->is_boolean())) {
    return TypeError("entrypoint_memory must be an integer" + Got(*memory));
  }
  const OJson* resources = field("entrypoint_resources");
  if (resources) {
    if (!resources->is_object()) return TypeError("entrypoint_resources must be a dict" + Got(*resources));
    for (const auto& [k, v] : resources->items()) {
      if (!IsPyNumber(v)) return TypeError("entrypoint_resources values must be numbers" + Got(v));
    }
  }
  const OJson* label_selector = field("entrypoint_label_selector");
  if (label_selector) COHORT_RETURN_IF_ERROR(CheckStringDict(*label_selector, "entrypoint_label_selector"));

  // 5. cohort's rules.
  JobSpec spec;
  spec.entrypoint = entrypoint.get<std::string>();
  if (spec.entrypoint.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Status::InvalidArgument("entrypoint must not be empty");
  }
  // Python: submission_id or job_id or generate_job_id().
  if (submission_id && !submission_id->get_ref<const std::string&>().empty()) {
    spec.submission_id = submission_id->get<std::string>();
  } else if (job_id && !job_id->get_ref<const std::string&>().empty()) {
    spec.submission_id = job_id->get<std::string>();
  } else {
    spec.submission_id = NewSubmissionId();
  }
  COHORT_RETURN_IF_ERROR(CheckSubmissionIdUsable(spec.submission_id));
  if (runtime_env) spec.runtime_env = nlohmann::json(*runtime_env);
  if (metadata) spec.metadata = ToStringMap(*metadata);

  auto non_negative = [](const char* name, double v) -> Status {
    if (std::isfinite(v) && v >= 0) return Status::Ok();
    return Status::InvalidArgument(std::string(name) + " must be >= 0, got " + internal::FormatNumber(v));
  };
  EntrypointResources& er = spec.entrypoint_resources;
  if (num_cpus) {
    er.num_cpus = PyNumber(*num_cpus);
    COHORT_RETURN_IF_ERROR(non_negative("entrypoint_num_cpus", *er.num_cpus));
  }
  if (num_gpus) {
    er.num_gpus = PyNumber(*num_gpus);
    COHORT_RETURN_IF_ERROR(non_negative("entrypoint_num_gpus", *er.num_gpus));
  }
  if (memory) {
    if (memory->is_boolean()) {
      er.memory_bytes = memory->get<bool>() ? 1 : 0;
    } else if (memory->is_number_unsigned() &&
               memory->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Status::InvalidArgument("entrypoint_memory is too large: " + memory->dump());
    } else {
      er.memory_bytes = memory->get<int64_t>();
    }
    COHORT_RETURN_IF_ERROR(non_negative("entrypoint_memory", static_cast<double>(*er.memory_bytes)));
  }
  if (resources) {
    std::map<std::string, double> custom;
    for (const auto& [k, v] : resources->items()) {
      if (k == "CPU" || k == "GPU" || k == "memory") {
        return Status::InvalidArgument("entrypoint_resources must not contain '" + k +
                                       "'; use entrypoint_num_cpus, entrypoint_num_gpus or entrypoint_memory");
      }
      if (k.empty()) return Status::InvalidArgument("entrypoint_resources keys must not be empty");
      double amount = PyNumber(v);
      COHORT_RETURN_IF_ERROR(non_negative(("entrypoint_resources['" + k + "']").c_str(), amount));
      custom[k] = amount;
    }
    er.custom = std::move(custom);
  }
  if (label_selector) {
    spec.label_selector = ToStringMap(*label_selector);
    COHORT_RETURN_IF_ERROR(ValidateLabelSelector(*spec.label_selector, "entrypoint_label_selector"));
  }

  if (const OJson* scaling = field("scaling")) {
    COHORT_ASSIGN_OR_RETURN(spec.scaling, ParseScaling(*scaling));
    for (const char* name : {"entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
                             "entrypoint_resources"}) {
      if (field(name)) {
        return Status::InvalidArgument(std::string(name) +
                                       " cannot be combined with scaling; give per-worker resources in "
                                       "scaling.resources_per_worker");
      }
    }
  }
  if (const OJson* failure = field("failure")) {
    COHORT_ASSIGN_OR_RETURN(spec.failure, ParseFailure(*failure));
  }
  if (const OJson* results_uri = field("results_uri")) {
    COHORT_RETURN_IF_ERROR(CheckResultsUri(*results_uri));
    spec.results_uri = results_uri->get<std::string>();
  }
  return spec;
}

}  // namespace

bool IsValidPlacementStrategy(std::string_view name) {
  return name == kPack || name == kSpread || name == kStrictPack || name == kStrictSpread;
}

bool EntrypointResources::AnyRequested() const {
  return (num_cpus && *num_cpus > 0) || (num_gpus && *num_gpus > 0) ||
         (memory_bytes && *memory_bytes > 0) || (custom && !custom->empty());
}

Resources EntrypointResources::ToDemand() const {
  Resources r;
  if (custom) {
    for (const auto& [name, amount] : *custom) r.Set(name, amount);
  }
  if (num_cpus) r.Set("CPU", *num_cpus);
  if (num_gpus) r.Set("GPU", *num_gpus);
  if (memory_bytes) r.Set("memory", static_cast<double>(*memory_bytes));
  return r;
}

Result<JobSpec> ParseSubmitRequest(std::string_view body) {
  auto result = ParseJson<OJson>(body);
  if (!result.ok()) return Status::InvalidArgument("request body is not a JSON object: " + result.status().message());
  OJson parsed = std::move(result).value();
  if (!parsed.is_object()) {
    return Status::InvalidArgument("request body is not a JSON object: got " +
                                   std::string(parsed.is_null() ? "null" : parsed.type_name()));
  }
  return ParseSubmitObject(parsed);
}

Result<JobSpec> JobSpecFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Status::InvalidArgument("job spec must be a JSON object");
  return ParseSubmitObject(OJson(j));
}

nlohmann::json JobSpecToJson(const JobSpec& spec) {
  using nlohmann::json;
  const EntrypointResources& er = spec.entrypoint_resources;
  json j = json::object();
  j["entrypoint"] = spec.entrypoint;
  j["submission_id"] = spec.submission_id;
  j["job_id"] = nullptr;
  j["runtime_env"] = spec.runtime_env.is_object() ? spec.runtime_env : json(nullptr);
  j["metadata"] = spec.metadata ? json(*spec.metadata) : json(nullptr);
  j["entrypoint_num_cpus"] = er.num_cpus ? internal::NumberToJson(*er.num_cpus) : json(nullptr);
  j["entrypoint_num_gpus"] = er.num_gpus ? internal::NumberToJson(*er.num_gpus) : json(nullptr);
  j["entrypoint_memory"] = er.memory_bytes ? json(*er.memory_bytes) : json(nullptr);
  if (er.custom) {
    json custom = json::object();
    for (const auto& [name, amount] : *er.custom) custom[name] = internal::NumberToJson(amount);
    j["entrypoint_resources"] = std::move(custom);
  } else {
    j["entrypoint_resources"] = nullptr;
  }
  j["entrypoint_label_selector"] = spec.label_selector ? json(*spec.label_selector) : json(nullptr);
  if (spec.scaling) {
    j["scaling"] = {{"num_workers", spec.scaling->num_workers},
                    {"resources_per_worker", spec.scaling->resources_per_worker.ToJson()},
                    {"placement_strategy", spec.scaling->placement_strategy}};
  } else {
    j["scaling"] = nullptr;
  }
  j["failure"] = spec.failure ? json{{"max_failures", spec.failure->max_failures}} : json(nullptr);
  j["results_uri"] = spec.results_uri.empty() ? json(nullptr) : json(spec.results_uri);
  return j;
}

std::string NewSubmissionId() {
  // Ray's alphabet: letters and digits without the look-alikes I l o O 0.
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz123456789";
  static_assert(kAlphabet.size() == 57);
  // Rejection sampling keeps the draw uniform: bytes >= 228 (= 4 * 57) are discarded.
  constexpr unsigned kLimit = 4 * kAlphabet.size();
  std::string id = "raysubmit_";
  unsigned char buf[64];
  size_t have = 0, pos = 0;
  while (id.size() < 10 + 16) {
    if (pos == have) {
      ssize_t n = ::getrandom(buf, sizeof(buf), 0);
      if (n <= 0) {
        // getrandom only fails on ancient kernels or EINTR; random_device is
        // the kernel CSPRNG in libstdc++ too.
        std::random_device rd;
        for (auto& b : buf) b = static_cast<unsigned char>(rd());
        n = sizeof(buf);
      }
      have = static_cast<size_t>(n);
      pos = 0;
    }
    unsigned char b = buf[pos++];
    if (b < kLimit) id += kAlphabet[b % kAlphabet.size()];
  }
  return id;
}

}  // namespace cohort::jobs
