// File: tests/server/crash_driver.cc
//
// The client half of scripts/crash-test.sh (issue #8 item 2).
//
//   crash_driver run --target=127.0.0.1:PORT --record=FILE --sessions=N
//       Creates sessions crash-0..crash-<N-1> if missing (kinds cycle through
//       exact, evict, exact:store=f16), checks that the server holds at least
//       every token FILE says was acknowledged (exit 4 otherwise: a loss),
//       then streams Decode steps -- each appends one token to every
//       session and asks one causal query -- and appends "<session> <token
//       index>" to FILE, fsynced, for every entry the server acknowledged.
//       Runs until the server goes away (exit 0) or --max_steps.
//   crash_driver verify --target=... --record=FILE --sessions=N
//       For every session: token count >= acknowledged (else exit 4); then a
//       SessionState in this process is fed the same steps (token i's keys,
//       values and query are a function of (seed, session, i) only) and a
//       probe query must give bit-identical outputs on the server and here
//       (else exit 5). Prints the totals.
//
// Token contents depend only on (seed, session, index), so a token the server
// had durably logged but never acknowledged before the kill is simply not
// sent again: after a restart the driver continues at the server's count.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/session_state.h"
#include "grpcpp/grpcpp.h"
#include "kvsketch/v1/attention.grpc.pb.h"
#include "wire/tensor_codec.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "server address");
ABSL_FLAG(std::string, record, "", "file of acknowledged tokens");
ABSL_FLAG(int, sessions, 4, "sessions");
ABSL_FLAG(uint64_t, seed, 1, "token contents seed");
ABSL_FLAG(int64_t, max_steps, 0, "run: stop after this many steps (0: never)");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(20),
          "how long to wait for the server");

namespace {

using kvsketch::SessionConfig;
using kvsketch::SessionState;
namespace v1 = kvsketch::v1;

constexpr int kHkv = 2, kHq = 4, kD = 16;

std::string SessionId(int s) { return absl::StrCat("crash-", s); }

std::string SessionSpec(int s) {
  switch (s % 3) {
    case 0:
      return "exact";
    case 1:
      return "evict:budget=24,sinks=2,window=4";
    default:
      return "exact:store=f16";
  }
}

// splitmix64 -> floats in [-1, 1): a function of (seed, session, index,
// stream) only.
std::vector<float> Floats(size_t n, uint64_t seed, int s, int64_t i,
                          int stream) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t(s) << 48) ^
               (uint64_t(i) << 8) ^ uint64_t(stream);
  std::vector<float> out(n);
  for (float& f : out) {
    x += 0x9E3779B97F4A7C15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    f = static_cast<float>(static_cast<double>(z >> 11) * 0x1.0p-53 * 2 - 1);
  }
  return out;
}

struct Token {
  std::vector<float> keys, values, query;
};

Token TokenOf(uint64_t seed, int s, int64_t i) {
  return {Floats(kHkv * kD, seed, s, i, 1), Floats(kHkv * kD, seed, s, i, 2),
          Floats(kHq * kD, seed, s, i, 3)};
}

std::vector<float> Probe(uint64_t seed, int s) {
  return Floats(kHq * kD, seed, s, -1, 4);
}

v1::Tensor Tensor(std::vector<int64_t> shape, const std::vector<float>& data) {
  v1::Tensor t;
  kvsketch::EncodeTensor(shape, data, v1::F32, &t);
  return t;
}

// Acknowledged tokens per session, from the record.
std::vector<int64_t> ReadAcked(const std::string& path, int sessions) {
  std::vector<int64_t> acked(sessions, 0);
  std::ifstream in(path);
  int s;
  int64_t i;
  while (in >> s >> i) {
    if (s >= 0 && s < sessions) acked[s] = std::max(acked[s], i + 1);
  }
  return acked;
}

std::unique_ptr<v1::Attention::Stub> Connect() {
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_target),
                                     grpc::InsecureChannelCredentials());
  const auto deadline =
      std::chrono::system_clock::now() +
      absl::ToChronoSeconds(absl::GetFlag(FLAGS_connect_timeout));
  if (!channel->WaitForConnected(deadline)) {
    std::fprintf(stderr, "crash_driver: cannot connect to %s\n",
                 absl::GetFlag(FLAGS_target).c_str());
    std::exit(2);
  }
  return v1::Attention::NewStub(channel);
}

grpc::StatusCode last_code = grpc::StatusCode::OK;

int64_t ServerTokens(v1::Attention::Stub& stub, int s, bool* ok) {
  grpc::ClientContext ctx;
  v1::GetSessionRequest req;
  req.set_session_id(SessionId(s));
  v1::GetSessionResponse resp;
  grpc::Status st = stub.GetSession(&ctx, req, &resp);
  *ok = st.ok();
  last_code = st.error_code();
  if (!st.ok()) {
    if (st.error_code() != grpc::StatusCode::NOT_FOUND) {
      std::fprintf(stderr, "crash_driver: GetSession %s: %s\n",
                   SessionId(s).c_str(), st.error_message().c_str());
    }
    return -1;
  }
  return resp.session().tokens_per_layer(0);
}

// Exit 4 if the server lost an acknowledged token.
void CheckNoLoss(v1::Attention::Stub& stub, const std::vector<int64_t>& acked,
                 std::vector<int64_t>* have, bool server_gone_ok) {
  for (int s = 0; s < static_cast<int>(acked.size()); ++s) {
    bool ok = false;
    (*have)[s] = ServerTokens(stub, s, &ok);
    if (!ok && server_gone_ok && last_code == grpc::StatusCode::UNAVAILABLE) {
      std::printf("crash_driver: server went away before streaming\n");
      std::exit(0);  // killed during this round's start: nothing to check
    }
    if (!ok && acked[s] == 0) {
      (*have)[s] = 0;  // never created
      continue;
    }
    if (!ok || (*have)[s] < acked[s]) {
      std::fprintf(stderr,
                   "crash_driver: LOSS: session %s has %lld tokens, %lld "
                   "were acknowledged\n",
                   SessionId(s).c_str(), static_cast<long long>((*have)[s]),
                   static_cast<long long>(acked[s]));
      std::exit(4);
    }
  }
}

int Run() {
  const int sessions = absl::GetFlag(FLAGS_sessions);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const std::string record = absl::GetFlag(FLAGS_record);
  auto stub = Connect();
  std::vector<int64_t> acked = ReadAcked(record, sessions);
  std::vector<int64_t> next(sessions, 0);
  CheckNoLoss(*stub, acked, &next, /*server_gone_ok=*/true);
  for (int s = 0; s < sessions; ++s) {
    grpc::ClientContext ctx;
    v1::CreateSessionRequest req;
    req.set_session_id(SessionId(s));
    v1::SessionConfig* c = req.mutable_config();
    c->set_num_layers(1);
    c->set_num_kv_heads(kHkv);
    c->set_num_query_heads(kHq);
    c->set_head_dim(kD);
    c->set_value_dim(kD);
    c->set_spec(SessionSpec(s));
    v1::CreateSessionResponse resp;
    grpc::Status st = stub->CreateSession(&ctx, req, &resp);
    if (!st.ok() && st.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      std::fprintf(stderr, "crash_driver: CreateSession: %s\n",
                   st.error_message().c_str());
      return st.error_code() == grpc::StatusCode::UNAVAILABLE ? 0 : 3;
    }
  }
  const int fd = ::open(record.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) {
    std::perror("crash_driver: open record");
    return 2;
  }
  grpc::ClientContext ctx;
  auto stream = stub->Decode(&ctx);
  const int64_t max_steps = absl::GetFlag(FLAGS_max_steps);
  int64_t steps = 0, acks = 0;
  while (max_steps == 0 || steps < max_steps) {
    v1::DecodeRequest req;
    req.set_step_id(steps);
    for (int s = 0; s < sessions; ++s) {
      const Token t = TokenOf(seed, s, next[s]);
      v1::DecodeEntry* e = req.add_entries();
      e->set_session_id(SessionId(s));
      e->set_layer(0);
      *e->mutable_keys() = Tensor({kHkv, 1, kD}, t.keys);
      *e->mutable_values() = Tensor({kHkv, 1, kD}, t.values);
      *e->mutable_queries() = Tensor({kHq, 1, kD}, t.query);
    }
    v1::DecodeResponse resp;
    if (!stream->Write(req) || !stream->Read(&resp)) break;  // server gone
    std::string lines;
    for (int s = 0; s < resp.results_size() && s < sessions; ++s) {
      const v1::DecodeResult& r = resp.results(s);
      if (r.code() != 0) {
        std::fprintf(stderr, "crash_driver: entry %d failed: %s\n", s,
                     r.message().c_str());
        ::close(fd);
        return 3;
      }
      if (r.num_tokens() != next[s] + 1) {
        std::fprintf(stderr,
                     "crash_driver: session %d: %lld tokens after "
                     "token %lld\n",
                     s, static_cast<long long>(r.num_tokens()),
                     static_cast<long long>(next[s]));
        ::close(fd);
        return 3;
      }
      absl::StrAppend(&lines, s, " ", next[s], "\n");
      ++next[s];
      ++acks;
    }
    if (::write(fd, lines.data(), lines.size()) !=
            static_cast<ssize_t>(lines.size()) ||
        ::fsync(fd) != 0) {
      std::perror("crash_driver: write record");
      return 2;
    }
    ++steps;
  }
  ::close(fd);
  ctx.TryCancel();
  std::printf("crash_driver: %lld steps, %lld acknowledged tokens\n",
              static_cast<long long>(steps), static_cast<long long>(acks));
  return 0;
}

int Verify() {
  const int sessions = absl::GetFlag(FLAGS_sessions);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  auto stub = Connect();
  const std::vector<int64_t> acked =
      ReadAcked(absl::GetFlag(FLAGS_record), sessions);
  std::vector<int64_t> have(sessions, 0);
  CheckNoLoss(*stub, acked, &have, /*server_gone_ok=*/false);
  int64_t total_acked = 0, total_have = 0;
  for (int s = 0; s < sessions; ++s) {
    SessionConfig config;
    config.num_layers = 1;
    config.num_kv_heads = kHkv;
    config.num_query_heads = kHq;
    config.head_dim = kD;
    config.value_dim = kD;
    config.spec = SessionSpec(s);
    auto state = SessionState::Create(config);
    if (!state.ok()) {
      std::fprintf(stderr, "crash_driver: %s\n",
                   state.status().ToString().c_str());
      return 2;
    }
    std::vector<float> out(kHq * kD);
    for (int64_t i = 0; i < have[s]; ++i) {
      const Token t = TokenOf(seed, s, i);
      absl::Status st = (*state)->Step(0, 1, t.keys, t.values, 1, t.query,
                                       absl::MakeSpan(out));
      if (!st.ok()) {
        std::fprintf(stderr, "crash_driver: reference: %s\n",
                     st.ToString().c_str());
        return 2;
      }
    }
    const std::vector<float> probe = Probe(seed, s);
    std::vector<float> want(kHq * kD);
    if (have[s] > 0) {
      absl::Status st =
          (*state)->Step(0, 0, {}, {}, 1, probe, absl::MakeSpan(want));
      if (!st.ok()) return 2;
      grpc::ClientContext ctx;
      v1::AttendRequest req;
      req.set_session_id(SessionId(s));
      req.set_layer(0);
      *req.mutable_queries() = Tensor({kHq, 1, kD}, probe);
      v1::AttendResponse resp;
      grpc::Status gs = stub->Attend(&ctx, req, &resp);
      if (!gs.ok()) {
        std::fprintf(stderr, "crash_driver: Attend: %s\n",
                     gs.error_message().c_str());
        return 2;
      }
      auto got = kvsketch::DecodeTensor(resp.output(), "output");
      if (!got.ok() || got->data.size() != want.size() ||
          std::memcmp(got->data.data(), want.data(),
                      want.size() * sizeof(float)) != 0) {
        std::fprintf(stderr,
                     "crash_driver: MISMATCH: session %s (%s) attention "
                     "output differs from the uninterrupted reference\n",
                     SessionId(s).c_str(), SessionSpec(s).c_str());
        return 5;
      }
    }
    std::printf(
        "crash_driver: session %s (%s): %lld tokens on the server, "
        "%lld acknowledged, output bit-exact\n",
        SessionId(s).c_str(), SessionSpec(s).c_str(),
        static_cast<long long>(have[s]), static_cast<long long>(acked[s]));
    total_acked += acked[s];
    total_have += have[s];
  }
  std::printf(
      "crash_driver: verified %lld acknowledged tokens (%lld on the "
      "server) in %d sessions: none lost, outputs bit-exact\n",
      static_cast<long long>(total_acked), static_cast<long long>(total_have),
      sessions);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2 || absl::GetFlag(FLAGS_record).empty()) {
    std::fprintf(stderr,
                 "usage: crash_driver run|verify --target=HOST:PORT "
                 "--record=FILE [--sessions=N --seed=S]\n");
    return 2;
  }
  const std::string mode = args[1];
  if (mode == "run") return Run();
  if (mode == "verify") return Verify();
  std::fprintf(stderr, "crash_driver: unknown mode %s\n", mode.c_str());
  return 2;
}
