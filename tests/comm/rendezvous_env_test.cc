// Tests for RendezvousConfigFromEnv (torchrun environment parsing). Single-threaded.
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "cohort/comm/rendezvous.h"

namespace cohort::comm {
namespace {

using Env = std::map<std::string, std::string>;

Result<RendezvousConfig> Parse(const Env& env) {
  return RendezvousConfigFromEnv([&env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

Env FullEnv() {
  return {{"MASTER_ADDR", "node0.cluster"}, {"MASTER_PORT", "29500"}, {"RANK", "3"},
          {"WORLD_SIZE", "8"},              {"LOCAL_RANK", "1"},      {"LOCAL_WORLD_SIZE", "4"}};
}

// Expects InvalidArgument whose message contains `needle`.
void ExpectError(const Env& env, const std::string& needle) {
  Result<RendezvousConfig> r = Parse(env);
  ASSERT_FALSE(r.ok()) << "expected an error containing: " << needle;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << "message: " << r.status().message() << "\nexpected to contain: " << needle;
}

TEST(RendezvousEnvTest, NoVariablesGivesSingleRank) {
  Result<RendezvousConfig> r = Parse({});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->master_addr, "127.0.0.1");
  EXPECT_EQ(r->master_port, 0);
  EXPECT_EQ(r->rank, 0);
  EXPECT_EQ(r->world_size, 1);
  EXPECT_EQ(r->local_rank, 0);
  EXPECT_EQ(r->local_world_size, 1);
}

TEST(RendezvousEnvTest, WorldSizeOneWithoutMasterIsSingleRank) {
  Result<RendezvousConfig> r = Parse({{"WORLD_SIZE", "1"}, {"RANK", "0"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->world_size, 1);
  EXPECT_EQ(r->rank, 0);
  EXPECT_EQ(r->master_addr, "127.0.0.1");
  ExpectError({{"WORLD_SIZE", "1"}, {"RANK", "1"}}, "RANK=1 is out of range");
}

TEST(RendezvousEnvTest, FullEnvironmentParses) {
  Result<RendezvousConfig> r = Parse(FullEnv());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->master_addr, "node0.cluster");
  EXPECT_EQ(r->master_port, 29500);
  EXPECT_EQ(r->rank, 3);
  EXPECT_EQ(r->world_size, 8);
  EXPECT_EQ(r->local_rank, 1);
  EXPECT_EQ(r->local_world_size, 4);
}

TEST(RendezvousEnvTest, BoundaryValuesAreAccepted) {
  Env env = FullEnv();
  env["MASTER_PORT"] = "65535";
  env["RANK"] = "7";
  env["LOCAL_RANK"] = "3";
  Result<RendezvousConfig> r = Parse(env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  env["MASTER_PORT"] = "1";
  env["RANK"] = "0";
  env["LOCAL_WORLD_SIZE"] = "8";
  env["LOCAL_RANK"] = "7";
  r = Parse(env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
}

TEST(RendezvousEnvTest, EachMissingVariableIsNamed) {
  for (const char* name :
       {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) {
    SCOPED_TRACE(name);
    Env env = FullEnv();
    env.erase(name);
    ExpectError(env, std::string(name) + " is not set (torchrun-style rendezvous needs "
                                         "MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, "
                                         "LOCAL_RANK, LOCAL_WORLD_SIZE)");
  }
}

TEST(RendezvousEnvTest, PartialEnvironmentIsNotSingleRank) {
  ExpectError({{"RANK", "1"}}, "MASTER_ADDR is not set");
  ExpectError({{"WORLD_SIZE", "2"}}, "MASTER_ADDR is not set");
  ExpectError({{"MASTER_ADDR", "10.0.0.1"}}, "MASTER_PORT is not set");
}

TEST(RendezvousEnvTest, NonNumericValues) {
  Env env = FullEnv();
  env["RANK"] = "2x";
  ExpectError(env, "RANK=\"2x\" is not a decimal integer");
  env = FullEnv();
  env["WORLD_SIZE"] = "";
  ExpectError(env, "WORLD_SIZE=\"\" is not a decimal integer");
  env = FullEnv();
  env["MASTER_PORT"] = "port";
  ExpectError(env, "MASTER_PORT=\"port\" is not a decimal integer: must be a port number");
  env = FullEnv();
  env["LOCAL_RANK"] = " 1";
  ExpectError(env, "LOCAL_RANK=\" 1\" is not a decimal integer");
  env = FullEnv();
  env["LOCAL_WORLD_SIZE"] = "4.0";
  ExpectError(env, "LOCAL_WORLD_SIZE=\"4.0\" is not a decimal integer");
  env = FullEnv();
  env["RANK"] = "99999999999999999999";
  ExpectError(env, "RANK=99999999999999999999 is out of range");
}

TEST(RendezvousEnvTest, RankOutOfRange) {
  Env env = FullEnv();
  env["WORLD_SIZE"] = "2";
  env["LOCAL_WORLD_SIZE"] = "2";
  env["RANK"] = "3";
  ExpectError(env, "RANK=3 is out of range: must be in [0, WORLD_SIZE=2)");
  env["RANK"] = "2";
  ExpectError(env, "RANK=2 is out of range: must be in [0, WORLD_SIZE=2)");
  env["RANK"] = "-1";
  ExpectError(env, "RANK=-1 is out of range: must be in [0, WORLD_SIZE=2)");
}

TEST(RendezvousEnvTest, LocalRankMustBeBelowLocalWorldSize) {
  Env env = FullEnv();
  env["LOCAL_RANK"] = "4";
  ExpectError(env, "LOCAL_RANK=4 is out of range: must be in [0, LOCAL_WORLD_SIZE=4)");
  env["LOCAL_RANK"] = "-2";
  ExpectError(env, "LOCAL_RANK=-2 is out of range");
}

TEST(RendezvousEnvTest, LocalWorldSizeMustFitWorldSize) {
  Env env = FullEnv();
  env["LOCAL_WORLD_SIZE"] = "9";
  ExpectError(env, "LOCAL_WORLD_SIZE=9 is out of range: must be in [1, WORLD_SIZE=8]");
  env["LOCAL_WORLD_SIZE"] = "0";
  ExpectError(env, "LOCAL_WORLD_SIZE=0 is out of range");
}

TEST(RendezvousEnvTest, WorldSizeAndPortRanges) {
  Env env = FullEnv();
  env["WORLD_SIZE"] = "0";
  ExpectError(env, "WORLD_SIZE=0 is out of range: must be >= 1");
  env = FullEnv();
  env["MASTER_PORT"] = "0";
  ExpectError(env, "MASTER_PORT=0 is out of range: must be in [1, 65535]");
  env["MASTER_PORT"] = "65536";
  ExpectError(env, "MASTER_PORT=65536 is out of range: must be in [1, 65535]");
}

TEST(RendezvousEnvTest, EmptyMasterAddrIsAnError) {
  Env env = FullEnv();
  env["MASTER_ADDR"] = "";
  ExpectError(env, "MASTER_ADDR is empty");
}

// The default lookup reads the process environment.
TEST(RendezvousEnvTest, DefaultLookupUsesGetenv) {
  const char* names[] = {"MASTER_ADDR", "MASTER_PORT", "RANK",
                         "WORLD_SIZE",  "LOCAL_RANK",  "LOCAL_WORLD_SIZE"};
  std::map<std::string, std::optional<std::string>> saved;
  for (const char* name : names) {
    const char* v = std::getenv(name);
    saved[name] = v ? std::optional<std::string>(v) : std::nullopt;
  }
  for (const auto& [name, value] : FullEnv()) setenv(name.c_str(), value.c_str(), 1);
  Result<RendezvousConfig> r = RendezvousConfigFromEnv();
  setenv("RANK", "8", 1);
  Result<RendezvousConfig> bad = RendezvousConfigFromEnv();
  for (const auto& [name, value] : saved) {
    if (value) {
      setenv(name.c_str(), value->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->rank, 3);
  EXPECT_EQ(r->master_port, 29500);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("RANK=8 is out of range"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace cohort::comm
