// File: client/attention_client.h
//
// The C++ client of the kvsketch Attention service (proto/kvsketch/v1), used
// by the `kvsketch` CLI, the load generator, tests and benchmarks.
//
//   auto client = AttentionClient::Connect("127.0.0.1:50051");
//   v1::SessionConfig config;  // num_layers, num_kv_heads, head_dim, ...
//   KVSKETCH_ASSIGN_OR_RETURN(v1::SessionInfo info,
//                             (*client)->CreateSession(config));
//   KVSKETCH_RETURN_IF_ERROR((*client)->AppendTokens(
//       info.session_id(), /*layer=*/0, keys, values, {}).status());
//   KVSKETCH_ASSIGN_OR_RETURN(AttendResult r,
//       (*client)->Attend(info.session_id(), 0, {}, {}, queries));
//
// Every call carries the session id as `x-session-id` metadata (DESIGN §3:
// proxies hash it to keep a session on one replica) and a deadline of
// ClientOptions::timeout. gRPC errors come back as absl::Status with the same
// code and message (FromGrpcStatus). All unary and client-stream calls go
// through the private Invoke* helpers, the one place where retries can later
// be added.
//
// Thread safety: an AttentionClient is safe for concurrent use by multiple
// threads (the stub and channel are). A DecodeStream allows one receiving
// thread alongside any sending thread (see the class).
#ifndef KVSKETCH_CLIENT_ATTENTION_CLIENT_H_
#define KVSKETCH_CLIENT_ATTENTION_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/tensor_ref.h"
#include "kvsketch/v1/attention.grpc.pb.h"
#include "kvsketch/v1/attention.pb.h"
#include "wire/tensor_codec.h"

namespace kvsketch::client {

// The metadata key carrying the session id on every call.
inline constexpr char kSessionIdMetadataKey[] = "x-session-id";
// The metadata key carrying ClientOptions::bearer_token.
inline constexpr char kAuthorizationMetadataKey[] = "authorization";

// grpc::Status -> absl::Status, same numeric code and message. The one
// conversion point of the client.
absl::Status FromGrpcStatus(const grpc::Status& status);

// Retries of unary calls (issue #8 item 4). A call is retried only when
// repeating it cannot apply anything twice (IsRetryable): UNAVAILABLE for
// calls that change nothing (Get, List, query-only Attend), and the
// server's "server busy" RESOURCE_EXHAUSTED -- the worker queue refused the
// call before any of its work ran (server/attention_service.h BusyError) --
// for every unary call. Other RESOURCE_EXHAUSTED (session limit, memory
// budget) are answers, not transient failures, and are returned at once.
// Waits are exponential with full jitter (uniform in [backoff/2, backoff]),
// and never past the call's deadline: the whole call, retries included,
// gets ClientOptions::timeout.
struct RetryPolicy {
  // Attempts per call, the first included; 1 disables retries.
  int max_attempts = 1;
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  double multiplier = 2.0;
};

struct ClientOptions {
  // Deadline of every unary and client-streaming call (Append, Import,
  // Export included). absl::InfiniteDuration() for none.
  absl::Duration timeout = absl::Seconds(30);
  // Deadline of a Decode stream, which usually lives for a whole generation.
  absl::Duration stream_timeout = absl::InfiniteDuration();
  // Largest message received (the server's limit is a flag too).
  int max_receive_message_bytes = 64 << 20;
  // Off by default (one attempt): load tests want to see every refusal.
  RetryPolicy retry;

  // --- Security (docs/security.md); read by Open, ignored by Connect ---
  // Connect over TLS. Implied by any tls_* file below; with tls_ca_file ""
  // the server certificate is checked against the system roots.
  bool tls = false;
  // PEM CA bundle that signed the server's certificate.
  std::string tls_ca_file;
  // PEM client certificate chain and key, for a server with mutual TLS.
  // Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Name checked against the server certificate instead of the target's
  // host (e.g. "localhost" when dialing 127.0.0.1 through a tunnel).
  std::string tls_server_name;
  // Sent as `authorization: Bearer <token>` on every Attention call (also
  // over plaintext: fine on loopback, see docs/security.md). Never printed:
  // no error or log message of the client contains it.
  std::string bearer_token;
};

struct AttendResult {
  DecodedTensor output;    // [num_query_heads, M, value_dim]
  int64_t num_tokens = 0;  // tokens of the layer after the call
  // With AttendOptions::want_diagnostics: one per query row, [q_heads, M].
  std::vector<v1::QueryDiagnostic> diagnostics;
};

struct AttendOptions {
  v1::DType dtype = v1::F32;
  // Ask for the dropped softmax mass tau and the bound 2 tau max||v|| per
  // query row (topk layers only: FailedPrecondition from other kinds; costs
  // the server a full O(n d) scan per row). On a Decode stream set
  // DecodeEntry.want_diagnostics and read DecodeResult.diagnostics.
  bool want_diagnostics = false;
};

struct AppendOptions {
  v1::DType dtype = v1::F32;
  // Tokens per streamed message; 0 sends everything in one message.
  int64_t chunk_tokens = 0;
  // Called after each message is written with (tokens sent, tokens total).
  std::function<void(int64_t, int64_t)> progress;
};

class DecodeStream;

class AttentionClient {
 public:
  explicit AttentionClient(std::shared_ptr<grpc::Channel> channel,
                           ClientOptions options = {});
  // Plaintext channel to `target` ("host:port"); sends options.bearer_token
  // but ignores the TLS fields (use Open). Does not contact the server.
  static std::unique_ptr<AttentionClient> Connect(const std::string& target,
                                                  ClientOptions options = {});
  // Channel to `target` with the transport options asks for: TLS (and a
  // client certificate) when any TLS field is set, else plaintext as
  // Connect. Reads the PEM files now: NotFound for an unreadable one,
  // InvalidArgument for a certificate without key (or the reverse) or a
  // bearer token with characters a header cannot carry. Does not contact
  // the server (a TLS handshake failure shows up as UNAVAILABLE on the
  // first call).
  static absl::StatusOr<std::unique_ptr<AttentionClient>> Open(
      const std::string& target, ClientOptions options = {});

  AttentionClient(const AttentionClient&) = delete;
  AttentionClient& operator=(const AttentionClient&) = delete;

  const ClientOptions& options() const { return options_; }

  // Whether a unary call that failed with `status` may be sent again (see
  // RetryPolicy); `idempotent`: the call changes no session state.
  static bool IsRetryable(const absl::Status& status, bool idempotent);
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // --- Lifecycle ---
  // session_id "" lets the server choose one.
  absl::StatusOr<v1::SessionInfo> CreateSession(
      const v1::SessionConfig& config, absl::string_view session_id = "");
  absl::StatusOr<v1::SessionInfo> GetSession(absl::string_view session_id);
  // Follows next_page_token until the listing is complete. page_size 0 ->
  // the server's default.
  absl::StatusOr<std::vector<v1::SessionInfo>> ListSessions(int page_size = 0);
  absl::Status DeleteSession(absl::string_view session_id);

  // --- Ingest ---
  // Streams `messages` in order as one Append call. The first message should
  // carry the session id; `session_id` is also the routing metadata.
  absl::StatusOr<v1::AppendResponse> Append(
      absl::string_view session_id,
      absl::Span<const v1::AppendRequest> messages);

  // Appends keys [kv_heads, T, d] / values [kv_heads, T, dv] to `layer`, or,
  // with layer == kAllLayers, keys [layers, kv_heads, T, d] to every layer.
  // Splits along T into messages of options.chunk_tokens tokens; only one
  // message is materialised at a time (memory O(chunk)).
  // InvalidArgument (naming "keys"/"values") for inconsistent shapes,
  // before anything is sent.
  static constexpr int kAllLayers = -1;
  absl::StatusOr<v1::AppendResponse> AppendTokens(absl::string_view session_id,
                                                  int layer,
                                                  const TensorRef& keys,
                                                  const TensorRef& values,
                                                  const AppendOptions& options);

  // --- Attention ---
  // keys/values may be empty (shape {}) to query only.
  absl::StatusOr<AttendResult> Attend(absl::string_view session_id, int layer,
                                      const TensorRef& keys,
                                      const TensorRef& values,
                                      const TensorRef& queries,
                                      v1::DType dtype = v1::F32);
  absl::StatusOr<AttendResult> Attend(absl::string_view session_id, int layer,
                                      const TensorRef& keys,
                                      const TensorRef& values,
                                      const TensorRef& queries,
                                      const AttendOptions& options);
  absl::StatusOr<AttendResult> Prefill(absl::string_view session_id, int layer,
                                       const TensorRef& queries,
                                       const TensorRef& keys,
                                       const TensorRef& values,
                                       v1::DType dtype = v1::F32);

  // --- Snapshots ---
  // The whole snapshot blob (core/io/snapshot.h envelope). DataLoss if the
  // chunks do not add up to the announced total.
  absl::StatusOr<std::string> ExportSession(absl::string_view session_id);
  // Sends `snapshot` in chunks of chunk_bytes. new_session_id "" keeps the
  // id stored in the snapshot.
  absl::StatusOr<v1::SessionInfo> ImportSession(
      absl::string_view snapshot, absl::string_view new_session_id = "",
      int64_t chunk_bytes = 1 << 20);

  // --- Decode (bidi) ---
  // Opens a stream. `routing_session_id` is sent as x-session-id (a stream
  // may carry entries of several sessions; name the one that routes it).
  std::unique_ptr<DecodeStream> OpenDecodeStream(
      absl::string_view routing_session_id);

 private:
  // Fills deadline and metadata; every call site goes through this.
  // `deadline` InfiniteFuture: now + the options' timeout for the kind.
  void PrepareContext(grpc::ClientContext* context,
                      absl::string_view session_id, bool stream,
                      absl::Time deadline = absl::InfiniteFuture()) const;

  // The unary call site, with the retries of options().retry.
  // `method` is a stub member function; `idempotent` as in IsRetryable.
  template <typename Request, typename Response>
  absl::Status InvokeUnary(grpc::Status (v1::Attention::Stub::*method)(
                               grpc::ClientContext*, const Request&, Response*),
                           absl::string_view session_id, const Request& request,
                           Response* response, bool idempotent);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Attention::Stub> stub_;
  ClientOptions options_;
};

// One Decode bidi stream. Steps are answered in order. Several steps may be
// in flight: call Send repeatedly before Receive, or Send from one thread
// while another Receives (the loadgen does). Send, WritesDone and Finish
// are serialized internally, so the receiving thread may hit the end of
// the stream (and Finish it) while another thread is sending; Receive
// itself must be called from one thread at a time.
class DecodeStream {
 public:
  ~DecodeStream();  // cancels the call if it was not finished

  // Writes one step. Unavailable if the stream is broken (the reason then
  // comes from Receive or Finish); FailedPrecondition after WritesDone.
  absl::Status Send(const v1::DecodeRequest& request);
  // Next response. When the server has ended the stream: OutOfRange
  // ("decode stream ended") if it ended cleanly, else the call's status.
  absl::StatusOr<v1::DecodeResponse> Receive();
  // Half-closes the sending side. Idempotent.
  absl::Status WritesDone();
  // Half-closes if needed and returns the call's final status (cached:
  // later calls return the same).
  // REQUIRES: every response has been Received (gRPC's Finish blocks until
  // the server ends the stream), or Cancel() was called.
  absl::Status Finish();
  // Aborts the call (e.g. on Ctrl-C); pending and later Send/Receive fail.
  void Cancel();

 private:
  friend class AttentionClient;
  DecodeStream() = default;
  absl::Status WritesDoneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::DecodeRequest, v1::DecodeResponse>>
      stream_;
  // Guards the writing side and Finish (gRPC allows one Write/WritesDone/
  // Finish at a time, concurrent with one Read).
  absl::Mutex mu_;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvsketch::client

#endif  // KVSKETCH_CLIENT_ATTENTION_CLIENT_H_
