// Tests for ParseSubmitRequest (Ray's submit validation, spec §2.2, and
// cohort's extension fields), NewSubmissionId and the spec's JSON round trip.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

#include "cohort/jobs/job.h"

namespace cohort::jobs {
namespace {

using nlohmann::json;

// The error text of a body that must be refused.
std::string Error(std::string_view body) {
  auto r = ParseSubmitRequest(body);
  EXPECT_FALSE(r.ok()) << "accepted: " << body;
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

JobSpec Parse(std::string_view body) {
  auto r = ParseSubmitRequest(body);
  EXPECT_TRUE(r.ok()) << body << " -> " << r.status().ToString();
  return r.ok() ? r.value() : JobSpec{};
}

const std::regex kGeneratedId("^raysubmit_[A-HJ-NP-Za-kmnp-z1-9]{16}$");

// ---- step 1: not JSON / not an object ---------------------------------------

TEST(ParseSubmitRequestTest, NotJsonIsAClearError) {
  std::string e = Error("{not json");
  EXPECT_EQ(e.rfind("request body is not a JSON object: ", 0), 0u) << e;
  EXPECT_NE(e.find("parse error"), std::string::npos) << e;
  EXPECT_EQ(Error("").rfind("request body is not a JSON object: ", 0), 0u);
}

TEST(ParseSubmitRequestTest, NonObjectJsonIsRefused) {
  EXPECT_EQ(Error("[]"), "request body is not a JSON object: got array");
  EXPECT_EQ(Error("null"), "request body is not a JSON object: got null");
  EXPECT_EQ(Error("\"echo\""), "request body is not a JSON object: got string");
  EXPECT_EQ(Error("3"), "request body is not a JSON object: got number");
}

// ---- steps 2-3: nulls, unknown keys, the required argument ----------------------

TEST(ParseSubmitRequestTest, MinimalBodyGetsAGeneratedId) {
  JobSpec s = Parse(R"({"entrypoint":"echo hello"})");
  EXPECT_EQ(s.entrypoint, "echo hello");
  EXPECT_TRUE(std::regex_match(s.submission_id, kGeneratedId)) << s.submission_id;
  EXPECT_TRUE(s.runtime_env.is_null());
  EXPECT_FALSE(s.metadata.has_value());
  EXPECT_FALSE(s.entrypoint_resources.AnyRequested());
  EXPECT_FALSE(s.scaling.has_value());
  EXPECT_FALSE(s.failure.has_value());
  EXPECT_EQ(s.MaxFailures(), 0);
  EXPECT_EQ(s.results_uri, "");
}

TEST(ParseSubmitRequestTest, NullValuedKeysAreDropped) {  // spec §9.1 S8
  JobSpec s = Parse(
      R"({"entrypoint":"true","submission_id":null,"runtime_env":null,"metadata":null,)"
      R"("entrypoint_num_cpus":null,"entrypoint_memory":null,"scaling":null,"failure":null,)"
      R"("results_uri":null,"bogus":null})");
  EXPECT_TRUE(std::regex_match(s.submission_id, kGeneratedId));
  EXPECT_TRUE(s.runtime_env.is_null());
  EXPECT_FALSE(s.metadata.has_value());
  EXPECT_FALSE(s.entrypoint_resources.num_cpus.has_value());
  EXPECT_FALSE(s.scaling.has_value());
}

TEST(ParseSubmitRequestTest, UnknownKeyIsATypeError) {  // §9.3 E3
  EXPECT_EQ(Error(R"({"entrypoint":"true","bogus":1})"),
            "TypeError: __init__() got an unexpected keyword argument 'bogus'");
  // The first unknown key in body order, as Python binds keywords.
  EXPECT_EQ(Error(R"({"zzz":1,"aaa":2,"entrypoint":"true"})"),
            "TypeError: __init__() got an unexpected keyword argument 'zzz'");
  // Master-only retry_policy is unknown to the Ray 2.54 we claim to be.
  EXPECT_EQ(Error(R"({"entrypoint":"true","retry_policy":{}})"),
            "TypeError: __init__() got an unexpected keyword argument 'retry_policy'");
}

TEST(ParseSubmitRequestTest, UnknownKeyWinsOverMissingEntrypoint) {
  EXPECT_EQ(Error(R"({"bogus":1})"), "TypeError: __init__() got an unexpected keyword argument 'bogus'");
}

TEST(ParseSubmitRequestTest, MissingEntrypoint) {  // §9.3 E1
  const std::string want = "TypeError: __init__() missing 1 required positional argument: 'entrypoint'";
  EXPECT_EQ(Error("{}"), want);
  EXPECT_EQ(Error(R"({"entrypoint":null})"), want);
  EXPECT_EQ(Error(R"({"submission_id":"x"})"), want);
}

// ---- step 4: Ray's type checks, exact texts ---------------------------------------

TEST(ParseSubmitRequestTest, RayTypeErrorsExactText) {
  struct Case {
    const char* body;
    const char* message;
  } cases[] = {
      {R"({"entrypoint":123})", "TypeError: entrypoint must be a string, got <class 'int'>"},
      {R"({"entrypoint":["ls"]})", "TypeError: entrypoint must be a string, got <class 'list'>"},
      {R"({"entrypoint":"true","submission_id":5})",
       "TypeError: submission_id must be a string if provided, got <class 'int'>"},
      {R"({"entrypoint":"true","job_id":{}})", "TypeError: job_id must be a string if provided, got <class 'dict'>"},
      {R"({"entrypoint":"true","runtime_env":"x"})", "TypeError: runtime_env must be a dict, got <class 'str'>"},
      {R"({"entrypoint":"true","metadata":[]})", "TypeError: metadata must be a dict, got <class 'list'>"},
      {R"({"entrypoint":"true","metadata":{"k":1}})", "TypeError: metadata values must be strings, got <class 'int'>"},
      {R"({"entrypoint":"true","metadata":{"k":null}})",
       "TypeError: metadata values must be strings, got <class 'NoneType'>"},
      {R"({"entrypoint":"true","entrypoint_num_cpus":"1"})",
       "TypeError: entrypoint_num_cpus must be a number, got <class 'str'>"},
      {R"({"entrypoint":"true","entrypoint_num_gpus":[1]})",
       "TypeError: entrypoint_num_gpus must be a number, got <class 'list'>"},
      {R"({"entrypoint":"true","entrypoint_memory":1.5})",
       "TypeError: entrypoint_memory must be an integer, got <class 'float'>"},
      {R"({"entrypoint":"true","entrypoint_memory":"1"})",
       "TypeError: entrypoint_memory must be an integer, got <class 'str'>"},
      {R"({"entrypoint":"true","entrypoint_resources":5})",
       "TypeError: entrypoint_resources must be a dict, got <class 'int'>"},
      {R"({"entrypoint":"true","entrypoint_resources":{"Custom":"1"}})",
       "TypeError: entrypoint_resources values must be numbers, got <class 'str'>"},
      {R"({"entrypoint":"true","entrypoint_label_selector":"a=b"})",
       "TypeError: entrypoint_label_selector must be a dict, got <class 'str'>"},
      {R"({"entrypoint":"true","entrypoint_label_selector":{"zone":1.5}})",
       "TypeError: entrypoint_label_selector values must be strings, got <class 'float'>"},
  };
  for (const Case& c : cases) EXPECT_EQ(Error(c.body), c.message) << c.body;
}

TEST(ParseSubmitRequestTest, TypeChecksRunInRayOrder) {
  // entrypoint is checked before submission_id, metadata before the numbers...
  EXPECT_EQ(Error(R"({"submission_id":1,"entrypoint":2})"),
            "TypeError: entrypoint must be a string, got <class 'int'>");
  EXPECT_EQ(Error(R"({"entrypoint_num_cpus":"x","metadata":{"a":1},"entrypoint":"t"})"),
            "TypeError: metadata values must be strings, got <class 'int'>");
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_memory":0.5,"entrypoint_num_gpus":"x"})"),
            "TypeError: entrypoint_num_gpus must be a number, got <class 'str'>");
}

TEST(ParseSubmitRequestTest, BooleansPassNumberChecksAsInPython) {
  JobSpec s = Parse(R"({"entrypoint":"true","entrypoint_num_cpus":true,"entrypoint_memory":false})");
  EXPECT_EQ(s.entrypoint_resources.num_cpus, 1.0);
  EXPECT_EQ(s.entrypoint_resources.memory_bytes, 0);
}

TEST(ParseSubmitRequestTest, EntrypointResourcesAreKept) {  // §9.1 S9 and more
  JobSpec s = Parse(R"({"entrypoint":"true","entrypoint_num_cpus":0.5,"entrypoint_resources":{}})");
  EXPECT_EQ(s.entrypoint_resources.num_cpus, 0.5);
  ASSERT_TRUE(s.entrypoint_resources.custom.has_value());
  EXPECT_TRUE(s.entrypoint_resources.custom->empty());

  s = Parse(R"({"entrypoint":"true","entrypoint_num_cpus":2,"entrypoint_num_gpus":1,)"
            R"("entrypoint_memory":1073741824,"entrypoint_resources":{"special":2,"zero":0}})");
  EXPECT_EQ(s.entrypoint_resources.ToDemand(),
            (Resources{{"CPU", 2}, {"GPU", 1}, {"memory", 1073741824.0}, {"special", 2}}));
  EXPECT_TRUE(s.entrypoint_resources.AnyRequested());
}

TEST(ParseSubmitRequestTest, MetadataRuntimeEnvAndSelectorAsSubmitted) {  // §9.1 S6
  JobSpec s = Parse(
      R"({"entrypoint":"echo $A","submission_id":"conf-env-1","runtime_env":{"env_vars":{"A":"xyz"},)"
      R"("working_dir":"gcs://_ray_pkg_0123456789abcdef.zip"},"metadata":{"k":"v"},)"
      R"x("entrypoint_label_selector":{"zone":"in(a,b)","gpu":"!none"}})x");
  EXPECT_EQ(s.submission_id, "conf-env-1");
  EXPECT_EQ(s.runtime_env, json::parse(R"({"env_vars":{"A":"xyz"},"working_dir":"gcs://_ray_pkg_0123456789abcdef.zip"})"));
  ASSERT_TRUE(s.metadata.has_value());
  EXPECT_EQ(*s.metadata, (std::map<std::string, std::string>{{"k", "v"}}));
  ASSERT_TRUE(s.label_selector.has_value());
  EXPECT_EQ(s.label_selector->at("zone"), "in(a,b)");
  // Empty objects stay objects (and are not "absent").
  s = Parse(R"({"entrypoint":"x","metadata":{},"runtime_env":{}})");
  EXPECT_TRUE(s.metadata.has_value() && s.metadata->empty());
  EXPECT_TRUE(s.runtime_env.is_object() && s.runtime_env.empty());
}

// ---- submission id and the job_id alias ---------------------------------------

TEST(ParseSubmitRequestTest, JobIdIsADeprecatedAlias) {  // §9.1 S7
  EXPECT_EQ(Parse(R"({"entrypoint":"true","job_id":"conf-legacy-1"})").submission_id, "conf-legacy-1");
  EXPECT_EQ(Parse(R"({"entrypoint":"true","job_id":"old","submission_id":"new"})").submission_id, "new");
  // An empty string counts as absent (Python's `submission_id or job_id`).
  EXPECT_EQ(Parse(R"({"entrypoint":"true","job_id":"old","submission_id":""})").submission_id, "old");
  EXPECT_TRUE(std::regex_match(Parse(R"({"entrypoint":"true","submission_id":""})").submission_id, kGeneratedId));
}

TEST(ParseSubmitRequestTest, SubmissionIdMustBeUsableAsAFileName) {
  EXPECT_NE(Error(R"({"entrypoint":"true","submission_id":"../etc"})").find("must not contain '/'"),
            std::string::npos);
  EXPECT_NE(Error(R"({"entrypoint":"true","submission_id":".."})").find("'.' or '..'"), std::string::npos);
  EXPECT_NE(Error(R"({"entrypoint":"true","submission_id":"a\nb"})").find("control characters"),
            std::string::npos);
  EXPECT_NE(Error(R"({"entrypoint":"true","job_id":"a\\b"})").find("submission_id"), std::string::npos);
  std::string long_id(201, 'x');
  EXPECT_NE(Error(R"({"entrypoint":"true","submission_id":")" + long_id + "\"}").find("longer than 200"),
            std::string::npos);
  // Anything else is accepted as Ray does (KubeRay's names, dots, unicode).
  EXPECT_EQ(Parse(R"({"entrypoint":"true","submission_id":"rayjob-sample.v1_Ü"})").submission_id,
            "rayjob-sample.v1_Ü");
}

TEST(NewSubmissionIdTest, FormatAndUniqueness) {
  std::set<std::string> seen;
  std::set<char> chars;
  for (int i = 0; i < 2000; ++i) {
    std::string id = NewSubmissionId();
    ASSERT_TRUE(std::regex_match(id, kGeneratedId)) << id;
    seen.insert(id);
    chars.insert(id.begin() + 10, id.end());
  }
  EXPECT_EQ(seen.size(), 2000u);
  // 32000 draws from 57 symbols: every symbol shows up, none of I l o O 0 does.
  EXPECT_EQ(chars.size(), 57u);
  for (char c : std::string("IloO0")) EXPECT_EQ(chars.count(c), 0u) << c;
}

// ---- step 5: cohort's rules -----------------------------------------------------

TEST(ParseSubmitRequestTest, EmptyEntrypointIsRefused) {
  EXPECT_EQ(Error(R"({"entrypoint":""})"), "entrypoint must not be empty");
  EXPECT_EQ(Error(R"({"entrypoint":"  \n"})"), "entrypoint must not be empty");
}

TEST(ParseSubmitRequestTest, NegativeEntrypointResourcesAreRefused) {
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_num_cpus":-1})"), "entrypoint_num_cpus must be >= 0, got -1");
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_num_gpus":-0.5})"),
            "entrypoint_num_gpus must be >= 0, got -0.5");
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_memory":-4})"), "entrypoint_memory must be >= 0, got -4");
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_resources":{"x":-1}})"),
            "entrypoint_resources['x'] must be >= 0, got -1");
  EXPECT_NE(Error(R"({"entrypoint":"t","entrypoint_memory":18446744073709551615})").find("too large"),
            std::string::npos);
}

TEST(ParseSubmitRequestTest, EntrypointResourcesMustNotNameBuiltins) {
  EXPECT_EQ(Error(R"({"entrypoint":"t","entrypoint_resources":{"GPU":1}})"),
            "entrypoint_resources must not contain 'GPU'; use entrypoint_num_cpus, entrypoint_num_gpus or "
            "entrypoint_memory");
}

TEST(ParseSubmitRequestTest, MalformedLabelSelector) {
  EXPECT_NE(Error(R"({"entrypoint":"t","entrypoint_label_selector":{"zone":"in(a"}})").find("malformed"),
            std::string::npos);
  EXPECT_NE(Error(R"({"entrypoint":"t","entrypoint_label_selector":{"zone":""}})").find("malformed"),
            std::string::npos);
  EXPECT_NE(Error(R"x({"entrypoint":"t","entrypoint_label_selector":{"zone":"!in()"}})x").find("malformed"),
            std::string::npos);
}

TEST(ParseSubmitRequestTest, ScalingDefaultsAndFields) {
  JobSpec s = Parse(R"({"entrypoint":"python train.py","scaling":{"num_workers":4}})");
  ASSERT_TRUE(s.scaling.has_value());
  EXPECT_EQ(s.scaling->num_workers, 4);
  EXPECT_EQ(s.scaling->resources_per_worker, (Resources{{"CPU", 1}}));
  EXPECT_EQ(s.scaling->placement_strategy, "PACK");

  s = Parse(R"({"entrypoint":"x","scaling":{"num_workers":2,"resources_per_worker":{"CPU":2,"GPU":1,"TPU":0},)"
            R"("placement_strategy":"STRICT_SPREAD"}})");
  EXPECT_EQ(s.scaling->resources_per_worker, (Resources{{"CPU", 2}, {"GPU", 1}}));
  EXPECT_EQ(s.scaling->placement_strategy, "STRICT_SPREAD");
  for (const char* strategy : {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}) {
    EXPECT_EQ(Parse(std::string(R"({"entrypoint":"x","scaling":{"num_workers":1,"placement_strategy":")") +
                    strategy + "\"}}")
                  .scaling->placement_strategy,
              strategy);
  }
}

TEST(ParseSubmitRequestTest, ScalingErrors) {
  const std::string nw = "scaling.num_workers must be a positive integer (at most 4096), got ";
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":0}})"), nw + "0");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":-2}})"), nw + "-2");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1.5}})"), nw + "1.5");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":"2"}})"), nw + "\"2\"");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":true}})"), nw + "true");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":4097}})"), nw + "4097");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{}})"), "scaling.num_workers is required");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":3})"),
            "scaling must be an object like {\"num_workers\": 2}, got <class 'int'>");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1,"use_gpu":true}})"),
            "scaling has an unknown key 'use_gpu' (expected num_workers, resources_per_worker, placement_strategy)");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1,"placement_strategy":"pack"}})"),
            "scaling.placement_strategy must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, got \"pack\"");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1,"resources_per_worker":{"GPU":-1}}})"),
            "scaling.resources_per_worker values must be numbers >= 0, got -1 for 'GPU'");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1,"resources_per_worker":{"GPU":"1"}}})"),
            "scaling.resources_per_worker values must be numbers >= 0, got \"1\" for 'GPU'");
  EXPECT_EQ(Error(R"({"entrypoint":"x","scaling":{"num_workers":1,"resources_per_worker":[1]}})"),
            "scaling.resources_per_worker must be an object, got <class 'list'>");
  EXPECT_EQ(Error(R"({"entrypoint":"x","entrypoint_num_gpus":1,"scaling":{"num_workers":2}})"),
            "entrypoint_num_gpus cannot be combined with scaling; give per-worker resources in "
            "scaling.resources_per_worker");
}

TEST(ParseSubmitRequestTest, ScalingWithLabelSelectorIsAllowed) {
  JobSpec s = Parse(R"({"entrypoint":"x","entrypoint_label_selector":{"zone":"a"},"scaling":{"num_workers":2}})");
  EXPECT_TRUE(s.scaling.has_value());
  EXPECT_TRUE(s.label_selector.has_value());
}

TEST(ParseSubmitRequestTest, Failure) {
  EXPECT_EQ(Parse(R"({"entrypoint":"x","failure":{"max_failures":3}})").MaxFailures(), 3);
  EXPECT_EQ(Parse(R"({"entrypoint":"x","failure":{"max_failures":-1}})").MaxFailures(), -1);
  EXPECT_EQ(Parse(R"({"entrypoint":"x","failure":{}})").MaxFailures(), 0);
  const std::string mf = "failure.max_failures must be an integer >= -1 (-1 = unlimited), got ";
  EXPECT_EQ(Error(R"({"entrypoint":"x","failure":{"max_failures":-2}})"), mf + "-2");
  EXPECT_EQ(Error(R"({"entrypoint":"x","failure":{"max_failures":0.5}})"), mf + "0.5");
  EXPECT_EQ(Error(R"({"entrypoint":"x","failure":{"max_failures":4294967296}})"), mf + "4294967296");
  EXPECT_EQ(Error(R"({"entrypoint":"x","failure":{"max_retries":1}})"),
            "failure has an unknown key 'max_retries' (expected max_failures)");
  EXPECT_EQ(Error(R"({"entrypoint":"x","failure":1})"),
            "failure must be an object like {\"max_failures\": 2}, got <class 'int'>");
}

TEST(ParseSubmitRequestTest, ResultsUri) {
  for (const char* ok : {"file:///tmp/results", "gs://bucket/runs/a", "s3://bucket", "gs://b/"}) {
    EXPECT_EQ(Parse(std::string(R"({"entrypoint":"x","results_uri":")") + ok + "\"}").results_uri, ok);
  }
  EXPECT_EQ(Error(R"({"entrypoint":"x","results_uri":"http://host/x"})"),
            "results_uri must start with file://, gs:// or s3://, got 'http://host/x'");
  EXPECT_EQ(Error(R"({"entrypoint":"x","results_uri":"/tmp/x"})"),
            "results_uri must start with file://, gs:// or s3://, got '/tmp/x'");
  EXPECT_NE(Error(R"({"entrypoint":"x","results_uri":"file://relative"})").find("absolute path"),
            std::string::npos);
  EXPECT_NE(Error(R"({"entrypoint":"x","results_uri":"gs://"})").find("bucket"), std::string::npos);
  EXPECT_EQ(Error(R"({"entrypoint":"x","results_uri":5})"), "results_uri must be a string, got <class 'int'>");
}

// ---- JSON form --------------------------------------------------------------------

TEST(JobSpecJsonTest, RoundTripThroughASubmitBody) {
  for (const char* body : {
           R"({"entrypoint":"echo hi"})",
           R"({"entrypoint":"e","submission_id":"s1","runtime_env":{"env_vars":{"A":"1"},"pip":["x"]},)"
           R"("metadata":{"a":"b"},"entrypoint_num_cpus":0.25,"entrypoint_num_gpus":1,)"
           R"("entrypoint_memory":123456789012,"entrypoint_resources":{"r":1.5},)"
           R"x("entrypoint_label_selector":{"zone":"!in(a, b)"},"failure":{"max_failures":-1},)x"
           R"("results_uri":"s3://bkt/p"})",
           R"({"entrypoint":"t","scaling":{"num_workers":3,"resources_per_worker":{"CPU":0.5,"GPU":1},)"
           R"("placement_strategy":"SPREAD"},"metadata":{},"runtime_env":{}})",
       }) {
    JobSpec s = Parse(body);
    json j = JobSpecToJson(s);
    // Every submit key is present (null when absent), and nothing else.
    EXPECT_EQ(j.size(), 13u) << j.dump();
    auto again = ParseSubmitRequest(j.dump());
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(again.value(), s) << j.dump();
    auto from_json = JobSpecFromJson(j);
    ASSERT_TRUE(from_json.ok());
    EXPECT_EQ(from_json.value(), s);
  }
}

TEST(JobSpecJsonTest, IntegralAmountsStayIntegers) {
  JobSpec s = Parse(R"({"entrypoint":"t","scaling":{"num_workers":2,"resources_per_worker":{"CPU":2,"GPU":0.5}}})");
  EXPECT_EQ(JobSpecToJson(s)["scaling"].dump(),
            R"({"num_workers":2,"placement_strategy":"PACK","resources_per_worker":{"CPU":2,"GPU":0.5}})");
}

}  // namespace
}  // namespace cohort::jobs
