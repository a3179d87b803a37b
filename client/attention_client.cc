#include "client/attention_client.h"

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/time.h"

namespace kvsketch::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share the canonical numbering.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

AttentionClient::AttentionClient(std::shared_ptr<grpc::Channel> channel,
                                 ClientOptions options)
    : channel_(std::move(channel)),
      stub_(v1::Attention::NewStub(channel_)),
      options_(std::move(options)) {}

std::unique_ptr<AttentionClient> AttentionClient::Connect(
    const std::string& target, ClientOptions options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(
      target, grpc::InsecureChannelCredentials(), args);
  return std::make_unique<AttentionClient>(std::move(channel),
                                           std::move(options));
}

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(what, ": cannot read file '", path, "'"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat(what, ": read error on '", path, "'"));
  }
  return std::move(ss).str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionClient>> AttentionClient::Open(
    const std::string& target, ClientOptions options) {
  // The token goes into an HTTP/2 header: printable ASCII, no spaces. The
  // message describes the problem without echoing the token.
  for (char c : options.bearer_token) {
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(
          "bearer token: has a space, control or non-ASCII character");
    }
  }
  const bool tls = options.tls || !options.tls_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty() ||
                   !options.tls_server_name.empty();
  if (!tls) return Connect(target, std::move(options));
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        options.tls_cert_file.empty() ? "tls key: given without a certificate"
                                      : "tls cert: given without a key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    KVSKETCH_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                              ReadPem(options.tls_ca_file, "tls ca"));
  }
  if (!options.tls_cert_file.empty()) {
    KVSKETCH_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                              ReadPem(options.tls_cert_file, "tls cert"));
    KVSKETCH_ASSIGN_OR_RETURN(ssl.pem_private_key,
                              ReadPem(options.tls_key_file, "tls key"));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(-1);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  auto channel =
      grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
  return std::make_unique<AttentionClient>(std::move(channel),
                                           std::move(options));
}

void AttentionClient::PrepareContext(grpc::ClientContext* context,
                                     absl::string_view session_id, bool stream,
                                     absl::Time deadline) const {
  const absl::Duration timeout =
      stream ? options_.stream_timeout : options_.timeout;
  if (deadline == absl::InfiniteFuture() &&
      timeout != absl::InfiniteDuration()) {
    deadline = absl::Now() + timeout;
  }
  if (deadline != absl::InfiniteFuture()) {
    context->set_deadline(absl::ToChronoTime(deadline));
  }
  if (!session_id.empty()) {
    context->AddMetadata(kSessionIdMetadataKey, std::string(session_id));
  }
  if (!options_.bearer_token.empty()) {
    context->AddMetadata(kAuthorizationMetadataKey,
                         absl::StrCat("Bearer ", options_.bearer_token));
  }
}

bool AttentionClient::IsRetryable(const absl::Status& status, bool idempotent) {
  if (status.code() == absl::StatusCode::kUnavailable) return idempotent;
  return status.code() == absl::StatusCode::kResourceExhausted &&
         absl::StartsWith(status.message(), "server busy");
}

template <typename Request, typename Response>
absl::Status AttentionClient::InvokeUnary(
    grpc::Status (v1::Attention::Stub::*method)(grpc::ClientContext*,
                                                const Request&, Response*),
    absl::string_view session_id, const Request& request, Response* response,
    bool idempotent) {
  const RetryPolicy& retry = options_.retry;
  const absl::Time deadline = options_.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options_.timeout;
  absl::Duration backoff = retry.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    PrepareContext(&context, session_id, /*stream=*/false, deadline);
    absl::Status status =
        FromGrpcStatus(((*stub_).*method)(&context, request, response));
    if (status.ok() || attempt >= retry.max_attempts ||
        !IsRetryable(status, idempotent)) {
      return status;
    }
    // Full jitter keeps clients refused together from returning together.
    thread_local std::minstd_rand rng(std::random_device{}());
    const absl::Duration wait =
        backoff * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
    if (absl::Now() + wait >= deadline) return status;
    absl::SleepFor(wait);
    backoff = std::min(backoff * retry.multiplier, retry.max_backoff);
    response->Clear();
  }
}

absl::StatusOr<v1::SessionInfo> AttentionClient::CreateSession(
    const v1::SessionConfig& config, absl::string_view session_id) {
  v1::CreateSessionRequest request;
  request.set_session_id(std::string(session_id));
  *request.mutable_config() = config;
  v1::CreateSessionResponse response;
  KVSKETCH_RETURN_IF_ERROR(InvokeUnary(&v1::Attention::Stub::CreateSession,
                                       session_id, request, &response,
                                       /*idempotent=*/false));
  return std::move(*response.mutable_session());
}

absl::StatusOr<v1::SessionInfo> AttentionClient::GetSession(
    absl::string_view session_id) {
  v1::GetSessionRequest request;
  request.set_session_id(std::string(session_id));
  v1::GetSessionResponse response;
  KVSKETCH_RETURN_IF_ERROR(InvokeUnary(&v1::Attention::Stub::GetSession,
                                       session_id, request, &response,
                                       /*idempotent=*/true));
  return std::move(*response.mutable_session());
}

absl::StatusOr<std::vector<v1::SessionInfo>> AttentionClient::ListSessions(
    int page_size) {
  std::vector<v1::SessionInfo> all;
  v1::ListSessionsRequest request;
  request.set_page_size(page_size);
  // A server that kept returning the same token would loop forever; the
  // guard bounds the walk at a generous number of pages.
  constexpr int kMaxPages = 1 << 20;
  for (int page = 0; page < kMaxPages; ++page) {
    v1::ListSessionsResponse response;
    KVSKETCH_RETURN_IF_ERROR(InvokeUnary(&v1::Attention::Stub::ListSessions, "",
                                         request, &response,
                                         /*idempotent=*/true));
    for (auto& info : *response.mutable_sessions()) {
      all.push_back(std::move(info));
    }
    if (response.next_page_token().empty()) return all;
    if (response.next_page_token() == request.page_token()) {
      return absl::InternalError(
          "ListSessions: server repeated the same next_page_token");
    }
    request.set_page_token(response.next_page_token());
  }
  return absl::InternalError("ListSessions: too many pages");
}

absl::Status AttentionClient::DeleteSession(absl::string_view session_id) {
  v1::DeleteSessionRequest request;
  request.set_session_id(std::string(session_id));
  v1::DeleteSessionResponse response;
  // Not idempotent for retries: a lost reply to a delete that happened
  // would turn into NOT_FOUND on the retry.
  return InvokeUnary(&v1::Attention::Stub::DeleteSession, session_id, request,
                     &response, /*idempotent=*/false);
}

namespace {

// Writes messages produced by `next` (which returns false when done) on one
// client stream and returns the call's status.
template <typename Request, typename Response, typename Next>
absl::Status WriteClientStream(grpc::ClientWriter<Request>* writer,
                               Next&& next) {
  Request message;
  while (next(&message)) {
    if (!writer->Write(message)) break;  // the status says why
    message.Clear();
  }
  writer->WritesDone();
  return FromGrpcStatus(writer->Finish());
}

}  // namespace

absl::StatusOr<v1::AppendResponse> AttentionClient::Append(
    absl::string_view session_id,
    absl::Span<const v1::AppendRequest> messages) {
  grpc::ClientContext context;
  PrepareContext(&context, session_id, /*stream=*/false);
  v1::AppendResponse response;
  auto writer = stub_->Append(&context, &response);
  size_t i = 0;
  KVSKETCH_RETURN_IF_ERROR(
      (WriteClientStream<v1::AppendRequest, v1::AppendResponse>(
          writer.get(), [&](v1::AppendRequest* m) {
            if (i == messages.size()) return false;
            *m = messages[i++];
            return true;
          })));
  return response;
}

absl::StatusOr<v1::AppendResponse> AttentionClient::AppendTokens(
    absl::string_view session_id, int layer, const TensorRef& keys,
    const TensorRef& values, const AppendOptions& options) {
  const bool all_layers = layer == kAllLayers;
  const size_t rank = all_layers ? 4 : 3;
  KVSKETCH_RETURN_IF_ERROR(CheckTensorRef(keys, "keys"));
  KVSKETCH_RETURN_IF_ERROR(CheckTensorRef(values, "values"));
  if (keys.shape.size() != rank || values.shape.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keys/values: expected rank ", rank,
        all_layers ? " [layers, kv_heads, T, dim]" : " [kv_heads, T, dim]",
        ", got keys [", absl::StrJoin(keys.shape, ", "), "] and values [",
        absl::StrJoin(values.shape, ", "), "]"));
  }
  const int t_axis = static_cast<int>(rank) - 2;
  for (int a = 0; a < t_axis + 1; ++a) {
    if (keys.shape[a] != values.shape[a]) {
      return absl::InvalidArgumentError(
          absl::StrCat("values: shape [", absl::StrJoin(values.shape, ", "),
                       "] does not match keys [",
                       absl::StrJoin(keys.shape, ", "), "] on axis ", a));
    }
  }
  if (DTypeSize(options.dtype) == 0) {
    return absl::InvalidArgumentError("dtype: unsupported");
  }
  const int64_t total = keys.shape[t_axis];
  if (total == 0) {
    return absl::InvalidArgumentError("keys: no tokens to append (T = 0)");
  }
  const int64_t chunk =
      options.chunk_tokens > 0 ? std::min(options.chunk_tokens, total) : total;

  grpc::ClientContext context;
  PrepareContext(&context, session_id, /*stream=*/false);
  v1::AppendResponse response;
  auto writer = stub_->Append(&context, &response);
  int64_t sent = 0;
  auto next = [&](v1::AppendRequest* m) {
    if (sent >= total) return false;
    const int64_t count = std::min(chunk, total - sent);
    m->set_session_id(std::string(session_id));
    m->set_layer(all_layers ? 0 : layer);
    m->set_all_layers(all_layers);
    std::vector<int64_t> kshape = keys.shape, vshape = values.shape;
    kshape[t_axis] = count;
    vshape[t_axis] = count;
    // One chunk at a time: O(chunk) extra memory, not O(total).
    std::vector<float> kpart =
        SliceAxis(keys.shape, keys.data, t_axis, sent, count);
    std::vector<float> vpart =
        SliceAxis(values.shape, values.data, t_axis, sent, count);
    EncodeTensor(kshape, kpart, options.dtype, m->mutable_keys());
    EncodeTensor(vshape, vpart, options.dtype, m->mutable_values());
    sent += count;
    if (options.progress) options.progress(sent, total);
    return true;
  };
  KVSKETCH_RETURN_IF_ERROR(
      (WriteClientStream<v1::AppendRequest, v1::AppendResponse>(writer.get(),
                                                                next)));
  return response;
}

absl::StatusOr<AttendResult> AttentionClient::Attend(
    absl::string_view session_id, int layer, const TensorRef& keys,
    const TensorRef& values, const TensorRef& queries, v1::DType dtype) {
  AttendOptions options;
  options.dtype = dtype;
  return Attend(session_id, layer, keys, values, queries, options);
}

absl::StatusOr<AttendResult> AttentionClient::Attend(
    absl::string_view session_id, int layer, const TensorRef& keys,
    const TensorRef& values, const TensorRef& queries,
    const AttendOptions& options) {
  const v1::DType dtype = options.dtype;
  v1::AttendRequest request;
  request.set_session_id(std::string(session_id));
  request.set_layer(layer);
  request.set_want_diagnostics(options.want_diagnostics);
  if (!keys.empty()) {
    KVSKETCH_RETURN_IF_ERROR(
        ToWire(keys, dtype, "keys", request.mutable_keys()));
  }
  if (!values.empty()) {
    KVSKETCH_RETURN_IF_ERROR(
        ToWire(values, dtype, "values", request.mutable_values()));
  }
  KVSKETCH_RETURN_IF_ERROR(
      ToWire(queries, dtype, "queries", request.mutable_queries()));
  v1::AttendResponse response;
  // With keys the call appends: not idempotent.
  KVSKETCH_RETURN_IF_ERROR(InvokeUnary(&v1::Attention::Stub::Attend, session_id,
                                       request, &response,
                                       /*idempotent=*/keys.empty()));
  AttendResult result;
  KVSKETCH_ASSIGN_OR_RETURN(result.output,
                            DecodeTensor(response.output(), "output"));
  result.num_tokens = response.num_tokens();
  result.diagnostics.assign(response.diagnostics().begin(),
                            response.diagnostics().end());
  return result;
}

absl::StatusOr<AttendResult> AttentionClient::Prefill(
    absl::string_view session_id, int layer, const TensorRef& queries,
    const TensorRef& keys, const TensorRef& values, v1::DType dtype) {
  v1::PrefillRequest request;
  request.set_session_id(std::string(session_id));
  request.set_layer(layer);
  KVSKETCH_RETURN_IF_ERROR(
      ToWire(queries, dtype, "queries", request.mutable_queries()));
  KVSKETCH_RETURN_IF_ERROR(ToWire(keys, dtype, "keys", request.mutable_keys()));
  KVSKETCH_RETURN_IF_ERROR(
      ToWire(values, dtype, "values", request.mutable_values()));
  v1::PrefillResponse response;
  KVSKETCH_RETURN_IF_ERROR(InvokeUnary(&v1::Attention::Stub::Prefill,
                                       session_id, request, &response,
                                       /*idempotent=*/false));
  AttendResult result;
  KVSKETCH_ASSIGN_OR_RETURN(result.output,
                            DecodeTensor(response.output(), "output"));
  result.num_tokens = response.num_tokens();
  return result;
}

absl::StatusOr<std::string> AttentionClient::ExportSession(
    absl::string_view session_id) {
  grpc::ClientContext context;
  PrepareContext(&context, session_id, /*stream=*/false);
  v1::ExportSessionRequest request;
  request.set_session_id(std::string(session_id));
  auto reader = stub_->ExportSession(&context, request);
  std::string blob;
  int64_t announced = -1;
  v1::SnapshotChunk chunk;
  while (reader->Read(&chunk)) {
    if (announced < 0 && chunk.total_bytes() > 0) {
      announced = chunk.total_bytes();
      blob.reserve(announced);
    }
    blob.append(chunk.data());
  }
  KVSKETCH_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  if (announced >= 0 && announced != static_cast<int64_t>(blob.size())) {
    return absl::DataLossError(absl::StrCat(
        "ExportSession: received ", blob.size(),
        " bytes but the server announced total_bytes=", announced));
  }
  return blob;
}

absl::StatusOr<v1::SessionInfo> AttentionClient::ImportSession(
    absl::string_view snapshot, absl::string_view new_session_id,
    int64_t chunk_bytes) {
  if (chunk_bytes <= 0) {
    return absl::InvalidArgumentError("chunk_bytes: must be positive");
  }
  grpc::ClientContext context;
  PrepareContext(&context, new_session_id, /*stream=*/false);
  v1::ImportSessionResponse response;
  auto writer = stub_->ImportSession(&context, &response);
  size_t offset = 0;
  bool first = true;
  KVSKETCH_RETURN_IF_ERROR(
      (WriteClientStream<v1::ImportSessionRequest, v1::ImportSessionResponse>(
          writer.get(), [&](v1::ImportSessionRequest* m) {
            if (!first && offset >= snapshot.size()) return false;
            if (first) m->set_session_id(std::string(new_session_id));
            first = false;
            const size_t n =
                std::min<size_t>(chunk_bytes, snapshot.size() - offset);
            m->set_data(std::string(snapshot.substr(offset, n)));
            offset += n;
            return true;
          })));
  return std::move(*response.mutable_session());
}

std::unique_ptr<DecodeStream> AttentionClient::OpenDecodeStream(
    absl::string_view routing_session_id) {
  std::unique_ptr<DecodeStream> s(new DecodeStream());
  s->context_ = std::make_unique<grpc::ClientContext>();
  PrepareContext(s->context_.get(), routing_session_id, /*stream=*/true);
  s->stream_ = stub_->Decode(s->context_.get());
  return s;
}

DecodeStream::~DecodeStream() {
  if (stream_ == nullptr) return;
  absl::MutexLock l(&mu_);
  if (!finished_) {
    context_->TryCancel();
    stream_->Finish().ok();  // cancelled: the status is not interesting
  }
}

absl::Status DecodeStream::Send(const v1::DecodeRequest& request) {
  absl::MutexLock l(&mu_);
  if (writes_done_ || finished_) {
    return absl::FailedPreconditionError("decode stream: Send after close");
  }
  if (!stream_->Write(request)) {
    return absl::UnavailableError(
        "decode stream broken (see Receive/Finish for the reason)");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::DecodeResponse> DecodeStream::Receive() {
  v1::DecodeResponse response;
  if (stream_->Read(&response)) return response;
  // The server ended the stream: Finish says why (and caches it).
  KVSKETCH_RETURN_IF_ERROR(Finish());
  return absl::OutOfRangeError("decode stream ended");
}

absl::Status DecodeStream::WritesDoneLocked() {
  if (writes_done_ || finished_) return absl::OkStatus();
  writes_done_ = true;
  if (!stream_->WritesDone()) {
    return absl::UnavailableError("decode stream broken on WritesDone");
  }
  return absl::OkStatus();
}

absl::Status DecodeStream::WritesDone() {
  absl::MutexLock l(&mu_);
  return WritesDoneLocked();
}

absl::Status DecodeStream::Finish() {
  absl::MutexLock l(&mu_);
  if (finished_) return final_status_;
  WritesDoneLocked().ok();  // a broken stream shows up in Finish's status
  final_status_ = FromGrpcStatus(stream_->Finish());
  finished_ = true;
  return final_status_;
}

void DecodeStream::Cancel() { context_->TryCancel(); }

}  // namespace kvsketch::client
