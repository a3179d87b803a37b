// File: tests/server/bad_input_test.cc
//
// The bad-input table: every malformed request gets the right code and a
// message naming the field, leaves the target session exactly as it was
// (same token counts, and a follow-up query bit-identical to a control
// session fed the same data), and another session keeps working.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr int L = 2, Hkv = 2, Hq = 4, d = 8, dv = 8, T0 = 4;

v1::Tensor Keys(int64_t t, uint64_t seed = 1) {
  return MakeTensor({Hkv, t, d}, RandomFloats(Hkv * t * d, seed));
}
v1::Tensor Values(int64_t t, uint64_t seed = 2) {
  return MakeTensor({Hkv, t, dv}, RandomFloats(Hkv * t * dv, seed));
}
v1::Tensor Queries(int64_t m, uint64_t seed = 3) {
  return MakeTensor({Hq, m, d}, RandomFloats(Hq * m * d, seed));
}

struct BadCase {
  std::string name;
  std::function<grpc::Status(v1::Attention::Stub&)> call;
  grpc::StatusCode code;
  std::vector<std::string> substrings;
};

grpc::Status Attend(v1::Attention::Stub& stub, v1::AttendRequest req) {
  grpc::ClientContext ctx;
  v1::AttendResponse resp;
  return stub.Attend(&ctx, req, &resp);
}

v1::AttendRequest AttendReq(int layer = 0) {
  v1::AttendRequest r;
  r.set_session_id("s");
  r.set_layer(layer);
  *r.mutable_keys() = Keys(1);
  *r.mutable_values() = Values(1);
  *r.mutable_queries() = Queries(1);
  return r;
}

// Runs one Decode step with one entry; returns the entry's result as a
// status (and fails the test if the stream itself fails).
grpc::Status DecodeOne(v1::Attention::Stub& stub, v1::DecodeEntry entry) {
  grpc::ClientContext ctx;
  auto stream = stub.Decode(&ctx);
  v1::DecodeRequest req;
  req.set_step_id(7);
  *req.add_entries() = std::move(entry);
  stream->Write(req);
  stream->WritesDone();
  v1::DecodeResponse resp;
  const bool got = stream->Read(&resp);
  const grpc::Status s = stream->Finish();
  EXPECT_TRUE(got);
  EXPECT_TRUE(s.ok()) << StatusText(s);
  if (!got || resp.results_size() != 1) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "no decode result");
  }
  return grpc::Status(static_cast<grpc::StatusCode>(resp.results(0).code()),
                      resp.results(0).message());
}

grpc::Status Append(v1::Attention::Stub& stub,
                    std::vector<v1::AppendRequest> msgs,
                    v1::AppendResponse* resp = nullptr) {
  grpc::ClientContext ctx;
  v1::AppendResponse local;
  auto w = stub.Append(&ctx, resp ? resp : &local);
  for (const auto& m : msgs) {
    if (!w->Write(m)) break;
  }
  w->WritesDone();
  return w->Finish();
}

grpc::Status Create(v1::Attention::Stub& stub, const std::string& id,
                    v1::SessionConfig c) {
  return CreateSession(stub, id, c);
}

std::vector<BadCase> Cases() {
  std::vector<BadCase> c;
  const auto IA = grpc::StatusCode::INVALID_ARGUMENT;
  c.push_back({"query_head_dim",
               [](auto& s) {
                 auto r = AttendReq();
                 r.clear_keys();
                 r.clear_values();
                 *r.mutable_queries() =
                     MakeTensor({Hq, 1, 16}, RandomFloats(Hq * 16, 1));
                 return Attend(s, r);
               },
               IA,
               {"queries: shape [4,1,16] but session has head_dim 8"}});
  c.push_back(
      {"query_heads",
       [](auto& s) {
         auto r = AttendReq();
         *r.mutable_queries() = MakeTensor({3, 1, d}, RandomFloats(3 * d, 1));
         return Attend(s, r);
       },
       IA,
       {"queries: shape [3,1,8] but session has num_query_heads 4"}});
  c.push_back(
      {"kv_heads",
       [](auto& s) {
         auto r = AttendReq();
         *r.mutable_keys() = MakeTensor({3, 1, d}, RandomFloats(3 * d, 1));
         return Attend(s, r);
       },
       IA,
       {"keys: shape [3,1,8] but session has num_kv_heads 2"}});
  c.push_back({"value_dim",
               [](auto& s) {
                 auto r = AttendReq();
                 *r.mutable_values() =
                     MakeTensor({Hkv, 1, 5}, RandomFloats(Hkv * 5, 1));
                 return Attend(s, r);
               },
               IA,
               {"values: shape [2,1,5] but session has value_dim 8"}});
  c.push_back({"dtype_size",
               [](auto& s) {
                 auto r = AttendReq();
                 r.mutable_keys()->mutable_data()->resize(60);
                 return Attend(s, r);
               },
               IA,
               {"keys.data: 60 bytes but shape [2,1,8] of F32 needs 64"}});
  c.push_back({"half_size_mismatch",
               [](auto& s) {
                 auto r = AttendReq();
                 *r.mutable_queries() =
                     MakeTensor({Hq, 1, d}, RandomFloats(Hq * d, 1), v1::F16);
                 r.mutable_queries()->set_dtype(v1::F32);  // bytes for F16
                 return Attend(s, r);
               },
               IA,
               {"queries.data: 64 bytes", "needs 128"}});
  c.push_back({"unspecified_dtype",
               [](auto& s) {
                 auto r = AttendReq();
                 r.mutable_queries()->set_dtype(v1::DTYPE_UNSPECIFIED);
                 return Attend(s, r);
               },
               IA,
               {"queries.dtype: unspecified"}});
  c.push_back({"nan_value",
               [](auto& s) {
                 auto r = AttendReq();
                 auto v = RandomFloats(Hkv * dv, 2);
                 v[3] = std::numeric_limits<float>::quiet_NaN();
                 *r.mutable_values() = MakeTensor({Hkv, 1, dv}, v);
                 return Attend(s, r);
               },
               IA,
               {"values.data: element 3 is NaN"}});
  c.push_back({"inf_query",
               [](auto& s) {
                 auto r = AttendReq();
                 auto q = RandomFloats(Hq * d, 2);
                 q[0] = std::numeric_limits<float>::infinity();
                 *r.mutable_queries() = MakeTensor({Hq, 1, d}, q);
                 return Attend(s, r);
               },
               IA,
               {"queries.data: element 0 is Inf"}});
  c.push_back({"unknown_session",
               [](auto& s) {
                 auto r = AttendReq();
                 r.set_session_id("missing");
                 return Attend(s, r);
               },
               grpc::StatusCode::NOT_FOUND,
               {"session_id: no session 'missing'"}});
  c.push_back({"layer_out_of_range",
               [](auto& s) { return Attend(s, AttendReq(2)); },
               IA,
               {"layer: 2 out of range [0, 2)"}});
  c.push_back({"negative_layer",
               [](auto& s) { return Attend(s, AttendReq(-1)); },
               IA,
               {"layer: -1 out of range"}});
  c.push_back(
      {"causal_query_count",
       [](auto& s) {
         auto r = AttendReq();
         *r.mutable_keys() = Keys(2);
         *r.mutable_values() = Values(2);
         return Attend(s, r);
       },
       IA,
       {"queries: shape [4,1,8] has 1 queries but the entry appends 2"}});
  c.push_back({"token_count_mismatch",
               [](auto& s) {
                 auto r = AttendReq();
                 *r.mutable_values() = Values(2);
                 return Attend(s, r);
               },
               IA,
               {"values: shape [2,2,8] has 2 tokens but keys"}});
  c.push_back({"keys_without_values",
               [](auto& s) {
                 auto r = AttendReq();
                 r.clear_values();
                 return Attend(s, r);
               },
               IA,
               {"values: missing"}});
  c.push_back({"no_queries",
               [](auto& s) {
                 auto r = AttendReq();
                 r.clear_queries();
                 return Attend(s, r);
               },
               IA,
               {"queries: required"}});
  c.push_back({"bad_rank",
               [](auto& s) {
                 auto r = AttendReq();
                 *r.mutable_queries() =
                     MakeTensor({1, Hq, 1, d}, RandomFloats(Hq * d, 1));
                 return Attend(s, r);
               },
               IA,
               {"queries: shape [1,4,1,8] has rank 4"}});
  c.push_back(
      {"prefill_query_count",
       [](auto& s) {
         grpc::ClientContext ctx;
         v1::PrefillRequest r;
         r.set_session_id("s");
         *r.mutable_keys() = Keys(3);
         *r.mutable_values() = Values(3);
         *r.mutable_queries() = Queries(2);
         v1::PrefillResponse resp;
         return s.Prefill(&ctx, r, &resp);
       },
       IA,
       {"queries: shape [4,2,8] has 2 queries but the entry appends 3"}});
  c.push_back({"prefill_no_keys",
               [](auto& s) {
                 grpc::ClientContext ctx;
                 v1::PrefillRequest r;
                 r.set_session_id("s");
                 *r.mutable_queries() = Queries(2);
                 v1::PrefillResponse resp;
                 return s.Prefill(&ctx, r, &resp);
               },
               IA,
               {"keys: required by Prefill"}});
  c.push_back(
      {"decode_entry_head_dim",
       [](auto& s) {
         v1::DecodeEntry e;
         e.set_session_id("s");
         *e.mutable_keys() = Keys(1);
         *e.mutable_values() = Values(1);
         *e.mutable_queries() = MakeTensor({Hq, 1, 4}, RandomFloats(Hq * 4, 1));
         return DecodeOne(s, e);
       },
       IA,
       {"entries[0].queries: shape [4,1,4] but session has head_dim 8"}});
  c.push_back({"decode_entry_layer",
               [](auto& s) {
                 v1::DecodeEntry e;
                 e.set_session_id("s");
                 e.set_layer(9);
                 *e.mutable_queries() = Queries(1);
                 return DecodeOne(s, e);
               },
               IA,
               {"entries[0].layer: 9 out of range [0, 2)"}});
  c.push_back({"decode_entry_empty",
               [](auto& s) {
                 v1::DecodeEntry e;
                 e.set_session_id("s");
                 return DecodeOne(s, e);
               },
               IA,
               {"entries[0]: has neither keys nor queries"}});
  c.push_back(
      {"append_all_layers_count",
       [](auto& s) {
         v1::AppendRequest r;
         r.set_session_id("s");
         r.set_all_layers(true);
         *r.mutable_keys() =
             MakeTensor({3, Hkv, 1, d}, RandomFloats(3 * Hkv * d, 1));
         *r.mutable_values() =
             MakeTensor({3, Hkv, 1, dv}, RandomFloats(3 * Hkv * dv, 1));
         return Append(s, {r});
       },
       IA,
       {"messages[0].keys: shape [3,2,1,8] but session has num_layers 2"}});
  c.push_back({"append_missing_values",
               [](auto& s) {
                 v1::AppendRequest r;
                 r.set_session_id("s");
                 *r.mutable_keys() = Keys(1);
                 return Append(s, {r});
               },
               IA,
               {"messages[0].values: required"}});
  c.push_back({"append_metadata_mismatch",
               [](auto& s) {
                 grpc::ClientContext ctx;
                 ctx.AddMetadata("x-session-id", "ctl");
                 v1::AppendResponse resp;
                 auto w = s.Append(&ctx, &resp);
                 v1::AppendRequest r;
                 r.set_session_id("s");
                 *r.mutable_keys() = Keys(1);
                 *r.mutable_values() = Values(1);
                 w->Write(r);
                 w->WritesDone();
                 return w->Finish();
               },
               IA,
               {"messages[0].session_id: 's' differs from the x-session-id "
                "metadata 'ctl'"}});
  // Session creation: nothing is created, "s" is untouched.
  c.push_back(
      {"gqa_not_multiple",
       [](auto& s) { return Create(s, "new", MakeConfig(1, 2, 3, 8, 8)); },
       IA,
       {"num_query_heads"}});
  c.push_back({"unknown_spec_kind",
               [](auto& s) {
                 return Create(s, "new",
                               MakeConfig(1, 2, 2, 8, 8, "nosuchkind"));
               },
               IA,
               {"nosuchkind", "exact"}});
  c.push_back({"unknown_spec_key",
               [](auto& s) {
                 return Create(s, "new",
                               MakeConfig(1, 2, 2, 8, 8, "exact:bogus=1"));
               },
               IA,
               {"bogus", "store"}});
  c.push_back({"bad_spec_value",
               [](auto& s) {
                 return Create(s, "new",
                               MakeConfig(1, 2, 2, 8, 8, "exact:store=f64"));
               },
               IA,
               {"f64", "f16"}});
  c.push_back({"layer_spec_out_of_range",
               [](auto& s) {
                 auto cfg = MakeConfig(1, 2, 2, 8, 8);
                 (*cfg.mutable_layer_specs())[5] = "exact";
                 return Create(s, "new", cfg);
               },
               IA,
               {"layer_specs"}});
  c.push_back(
      {"zero_head_dim",
       [](auto& s) { return Create(s, "new", MakeConfig(1, 2, 2, 0, 8)); },
       IA,
       {"head_dim"}});
  c.push_back(
      {"duplicate_id",
       [](auto& s) { return Create(s, "s", MakeConfig(1, 1, 1, 4, 4)); },
       grpc::StatusCode::ALREADY_EXISTS,
       {"session_id: session 's' already exists"}});
  c.push_back({"bad_id_chars",
               [](auto& s) {
                 return Create(s, "no spaces", MakeConfig(1, 1, 1, 4, 4));
               },
               IA,
               {"session_id: character 2", "[A-Za-z0-9._-]"}});
  c.push_back({"id_too_long",
               [](auto& s) {
                 return Create(s, std::string(129, 'a'),
                               MakeConfig(1, 1, 1, 4, 4));
               },
               IA,
               {"session_id: session id must be 1-128 characters, got 129"}});
  c.push_back({"max_tokens_over_server_limit",
               [](auto& s) {
                 auto cfg = MakeConfig(1, 1, 1, 4, 4);
                 cfg.set_max_tokens(TestOptions().max_tokens_per_session + 1);
                 return Create(s, "new", cfg);
               },
               IA,
               {"config.max_tokens", "exceeds the server limit"}});
  c.push_back({"list_negative_page",
               [](auto& s) {
                 grpc::ClientContext ctx;
                 v1::ListSessionsRequest r;
                 r.set_page_size(-1);
                 v1::ListSessionsResponse resp;
                 return s.ListSessions(&ctx, r, &resp);
               },
               IA,
               {"page_size: -1"}});
  return c;
}

class BadInputTest : public ::testing::TestWithParam<BadCase> {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer(StartServer(TestOptions()));
  }
  static void TearDownTestSuite() {
    (void)server_->server->Shutdown(absl::Seconds(5));
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    // Fresh "s" and control "ctl", fed identical tokens.
    for (const char* id : {"s", "ctl"}) {
      grpc::ClientContext ctx;
      v1::DeleteSessionRequest req;
      req.set_session_id(id);
      v1::DeleteSessionResponse resp;
      (void)stub().DeleteSession(&ctx, req, &resp);
      ASSERT_TRUE(
          CreateSession(stub(), id, MakeConfig(L, Hkv, Hq, d, dv)).ok());
      for (int layer = 0; layer < L; ++layer) {
        ASSERT_TRUE(AppendTokens(stub(), id, layer, Hkv, T0, d, dv,
                                 RandomFloats(Hkv * T0 * d, 40 + layer),
                                 RandomFloats(Hkv * T0 * dv, 50 + layer))
                        .ok());
      }
    }
  }
  static v1::Attention::Stub& stub() { return *server_->stub; }

  // "s" has exactly the tokens of "ctl" and answers bit-identically.
  static void ExpectUnchanged(int64_t tokens0 = T0, int64_t tokens1 = T0) {
    v1::SessionInfo info;
    ASSERT_TRUE(GetSession(stub(), "s", &info).ok());
    EXPECT_THAT(info.tokens_per_layer(),
                ::testing::ElementsAre(tokens0, tokens1));
    auto q = RandomFloats(Hq * d, 99);
    for (int layer = 0; layer < L; ++layer) {
      std::vector<float> a, b;
      ASSERT_TRUE(AttendQueries(stub(), "s", layer, Hq, 1, d, q, &a).ok());
      ASSERT_TRUE(AttendQueries(stub(), "ctl", layer, Hq, 1, d, q, &b).ok());
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << layer;
    }
  }

  static TestServer* server_;
};

TestServer* BadInputTest::server_ = nullptr;

TEST_P(BadInputTest, RejectedWithFieldAndNothingChanges) {
  const BadCase& bc = GetParam();
  const grpc::Status s = bc.call(stub());
  EXPECT_EQ(s.error_code(), bc.code) << StatusText(s);
  for (const auto& sub : bc.substrings) {
    EXPECT_THAT(s.error_message(), HasSubstr(sub));
  }
  ExpectUnchanged();
  // Nothing was created under the ids the create cases tried.
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(stub(), "new", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Another session keeps working: a full step on the control.
  grpc::ClientContext ctx;
  v1::AttendRequest r = AttendReq();
  r.set_session_id("ctl");
  v1::AttendResponse resp;
  ASSERT_TRUE(stub().Attend(&ctx, r, &resp).ok());
  EXPECT_EQ(resp.num_tokens(), T0 + 1);
}

INSTANTIATE_TEST_SUITE_P(Table, BadInputTest, ::testing::ValuesIn(Cases()),
                         [](const auto& param_info) {
                           return param_info.param.name;
                         });

// A finite value that half-precision storage cannot hold (it would be stored
// as Inf and make every later answer NaN) is refused in a Decode entry and in
// an Attend, naming the element and the limit; the session is unchanged.
TEST_F(BadInputTest, ValueBeyondHalfStorageRangeIsRefused) {
  v1::SessionConfig config = MakeConfig(1, Hkv, Hq, d, dv);
  config.set_spec("exact:store=f16");
  grpc::ClientContext del_ctx;
  v1::DeleteSessionRequest del;
  del.set_session_id("half");
  v1::DeleteSessionResponse del_resp;
  (void)stub().DeleteSession(&del_ctx, del, &del_resp);
  ASSERT_TRUE(CreateSession(stub(), "half", config).ok());
  ASSERT_TRUE(AppendTokens(stub(), "half", 0, Hkv, T0, d, dv,
                           RandomFloats(Hkv * T0 * d, 71),
                           RandomFloats(Hkv * T0 * dv, 72))
                  .ok());
  auto v = RandomFloats(Hkv * dv, 73);
  v[9] = 1e5f;
  v1::DecodeEntry entry;
  entry.set_session_id("half");
  *entry.mutable_keys() = Keys(1, 74);
  *entry.mutable_values() = MakeTensor({Hkv, 1, dv}, v);
  *entry.mutable_queries() = Queries(1, 75);
  grpc::Status s = DecodeOne(stub(), entry);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << StatusText(s);
  EXPECT_THAT(s.error_message(), HasSubstr("values[9]"));
  EXPECT_THAT(s.error_message(), HasSubstr("65504"));
  v1::AttendRequest r = AttendReq();
  r.set_session_id("half");
  *r.mutable_values() = MakeTensor({Hkv, 1, dv}, v);
  s = Attend(stub(), r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << StatusText(s);
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "half", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(T0));
  // The session still answers, finitely.
  std::vector<float> out;
  ASSERT_TRUE(
      AttendQueries(stub(), "half", 0, Hq, 1, d, RandomFloats(Hq * d, 76), &out)
          .ok());
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

// An all_layers append is all-or-nothing: a value beyond layer 1's f16
// range refuses the whole message before layer 0 (f32) changes.
TEST_F(BadInputTest, AllLayersAppendBeyondOneLayersStorageChangesNothing) {
  v1::SessionConfig config = MakeConfig(2, Hkv, Hq, d, dv);
  (*config.mutable_layer_specs())[1] = "exact:store=f16";
  grpc::ClientContext del_ctx;
  v1::DeleteSessionRequest del;
  del.set_session_id("mixed");
  v1::DeleteSessionResponse del_resp;
  (void)stub().DeleteSession(&del_ctx, del, &del_resp);
  ASSERT_TRUE(CreateSession(stub(), "mixed", config).ok());
  auto k = RandomFloats(2 * Hkv * d, 81);
  auto v = RandomFloats(2 * Hkv * dv, 82);
  v[Hkv * dv + 3] = 7e4f;  // layer 1, within f32 but not f16
  v1::AppendRequest req;
  req.set_session_id("mixed");
  req.set_all_layers(true);
  *req.mutable_keys() = MakeTensor({2, Hkv, 1, d}, k);
  *req.mutable_values() = MakeTensor({2, Hkv, 1, dv}, v);
  grpc::Status s = Append(stub(), {req});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << StatusText(s);
  EXPECT_THAT(s.error_message(), HasSubstr("65504"));
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "mixed", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0, 0));
  // The same message within range goes to both layers.
  v[Hkv * dv + 3] = 7.0f;
  *req.mutable_values() = MakeTensor({2, Hkv, 1, dv}, v);
  s = Append(stub(), {req});
  ASSERT_TRUE(s.ok()) << StatusText(s);
  ASSERT_TRUE(GetSession(stub(), "mixed", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(1, 1));
}

// Append applies the messages before the first bad one (proto contract).
TEST_F(BadInputTest, AppendStreamStopsAtFirstBadMessage) {
  v1::AppendRequest good;
  good.set_session_id("s");
  *good.mutable_keys() = Keys(1, 61);
  *good.mutable_values() = Values(1, 62);
  v1::AppendRequest bad = good;
  bad.set_session_id("");
  *bad.mutable_keys() = MakeTensor({Hkv, 1, 4}, RandomFloats(Hkv * 4, 1));
  v1::AppendRequest after = good;  // never applied
  const grpc::Status s = Append(stub(), {good, bad, after});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("messages[1].keys: shape [2,1,4] but session has "
                        "head_dim 8"));
  // The control gets the same first message; then both must agree.
  v1::AppendRequest ctl = good;
  ctl.set_session_id("ctl");
  ASSERT_TRUE(Append(stub(), {ctl}).ok());
  ExpectUnchanged(T0 + 1, T0);
}

TEST_F(BadInputTest, AppendStreamRejectsSwitchingSessions) {
  v1::AppendRequest first;
  first.set_session_id("s");
  *first.mutable_keys() = Keys(1, 61);
  *first.mutable_values() = Values(1, 62);
  v1::AppendRequest second = first;
  second.set_session_id("ctl");
  const grpc::Status s = Append(stub(), {first, second});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("messages[1].session_id: 'ctl' differs from the "
                        "stream's session 's'"));
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "ctl", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(T0, T0));
}

TEST_F(BadInputTest, QueryOnEmptyLayerIsFailedPrecondition) {
  ASSERT_TRUE(
      CreateSession(stub(), "empty", MakeConfig(1, Hkv, Hq, d, dv)).ok());
  std::vector<float> out;
  const grpc::Status s = AttendQueries(stub(), "empty", 0, Hq, 1, d,
                                       RandomFloats(Hq * d, 1), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << StatusText(s);
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "empty", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0));
  grpc::ClientContext ctx;
  v1::DeleteSessionRequest req;
  req.set_session_id("empty");
  v1::DeleteSessionResponse resp;
  ASSERT_TRUE(stub().DeleteSession(&ctx, req, &resp).ok());
}

TEST_F(BadInputTest, CorruptImportIsDataLoss) {
  std::string blob;
  {
    grpc::ClientContext ctx;
    v1::ExportSessionRequest req;
    req.set_session_id("s");
    auto reader = stub().ExportSession(&ctx, req);
    v1::SnapshotChunk chunk;
    while (reader->Read(&chunk)) blob += chunk.data();
    ASSERT_TRUE(reader->Finish().ok());
  }
  auto import = [&](const std::string& data, const std::string& id) {
    grpc::ClientContext ctx;
    v1::ImportSessionResponse resp;
    auto w = stub().ImportSession(&ctx, &resp);
    v1::ImportSessionRequest req;
    req.set_session_id(id);
    req.set_data(data);
    w->Write(req);
    w->WritesDone();
    return w->Finish();
  };
  std::string flipped = blob;
  flipped[flipped.size() / 2] ^= 0x01;
  grpc::Status s = import(flipped, "copy");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << StatusText(s);
  s = import(blob.substr(0, blob.size() - 3), "copy");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << StatusText(s);
  s = import("not a snapshot", "copy");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << StatusText(s);
  s = import(blob, "bad id!");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("session_id"));
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(stub(), "copy", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The intact blob imports.
  EXPECT_TRUE(import(blob, "copy").ok());
  ExpectUnchanged();
}

}  // namespace
}  // namespace kvsketch::server::testing
