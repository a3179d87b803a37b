// File: server/request_validation.cc
#include "server/request_validation.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "wire/tensor_codec.h"

namespace kvsketch::server {
namespace {

// Checks a decoded [heads, rows, dim] or [heads, dim] tensor against the
// session; returns rows (1 for rank 2). With leading_layers > 0 the tensor
// carries an extra leading [num_layers] axis.
absl::StatusOr<int64_t> CheckHeadsRowsDim(const std::string& field,
                                          const std::vector<int64_t>& shape,
                                          int heads, const char* heads_name,
                                          int dim, const char* dim_name,
                                          const char* rows_name,
                                          int leading_layers = 0) {
  const size_t lead = leading_layers > 0 ? 1 : 0;
  const std::string want = absl::StrCat(
      lead ? "[num_layers, " : "[", heads_name, ", ", rows_name, ", ", dim_name,
      "] or ", lead ? "[num_layers, " : "[", heads_name, ", ", dim_name, "]");
  if (shape.size() != 2 + lead && shape.size() != 3 + lead) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": shape ", ShapeToString(shape), " has rank ",
                     shape.size(), "; want ", want));
  }
  if (lead && shape[0] != leading_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": shape ", ShapeToString(shape),
                     " but session has num_layers ", leading_layers));
  }
  if (shape[lead] != heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": shape ", ShapeToString(shape),
                     " but session has ", heads_name, " ", heads));
  }
  if (shape.back() != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": shape ", ShapeToString(shape),
                     " but session has ", dim_name, " ", dim));
  }
  return shape.size() == 3 + lead ? shape[lead + 1] : int64_t{1};
}

absl::Status CheckLayer(const SessionConfig& config, absl::string_view prefix,
                        int layer) {
  if (layer < 0 || layer >= config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "layer: ", layer,
                                                   " out of range [0, ",
                                                   config.num_layers, ")"));
  }
  return absl::OkStatus();
}

// Decodes keys and values (both present) into op, setting T.
absl::Status DecodeKeysValues(const SessionConfig& config,
                              absl::string_view prefix, const v1::Tensor& keys,
                              const v1::Tensor& values, int leading_layers,
                              LayerOp* op) {
  const std::string kf = absl::StrCat(prefix, "keys");
  const std::string vf = absl::StrCat(prefix, "values");
  KVSKETCH_ASSIGN_OR_RETURN(DecodedTensor k, DecodeTensor(keys, kf));
  KVSKETCH_ASSIGN_OR_RETURN(
      int64_t tk,
      CheckHeadsRowsDim(kf, k.shape, config.num_kv_heads, "num_kv_heads",
                        config.head_dim, "head_dim", "T", leading_layers));
  KVSKETCH_ASSIGN_OR_RETURN(DecodedTensor v, DecodeTensor(values, vf));
  KVSKETCH_ASSIGN_OR_RETURN(
      int64_t tv,
      CheckHeadsRowsDim(vf, v.shape, config.num_kv_heads, "num_kv_heads",
                        config.value_dim, "value_dim", "T", leading_layers));
  if (tk != tv) {
    return absl::InvalidArgumentError(absl::StrCat(
        vf, ": shape ", ShapeToString(v.shape), " has ", tv, " tokens but ", kf,
        " shape ", ShapeToString(k.shape), " has ", tk));
  }
  op->num_new_tokens = tk;
  op->keys = std::move(k.data);
  op->values = std::move(v.data);
  return absl::OkStatus();
}

}  // namespace

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string MetadataSessionId(const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kSessionIdMetadataKey);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<std::string> ResolveSessionId(absl::string_view request_id,
                                             absl::string_view metadata_id,
                                             absl::string_view field,
                                             bool required) {
  if (!request_id.empty() && !metadata_id.empty() &&
      request_id != metadata_id) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": '", request_id, "' differs from the x-session-id metadata '",
        metadata_id, "'"));
  }
  std::string id(request_id.empty() ? metadata_id : request_id);
  if (id.empty() && required) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": empty, and no x-session-id metadata was sent"));
  }
  return id;
}

absl::StatusOr<LayerOp> DecodeLayerOp(const SessionConfig& config,
                                      absl::string_view prefix, int layer,
                                      const v1::Tensor* keys,
                                      const v1::Tensor* values,
                                      const v1::Tensor* queries,
                                      QueryRule rule) {
  KVSKETCH_RETURN_IF_ERROR(CheckLayer(config, prefix, layer));
  LayerOp op;
  op.layer = layer;
  if ((keys == nullptr) != (values == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, keys == nullptr ? "keys" : "values",
                     ": missing (keys and values must be given together)"));
  }
  if (rule == QueryRule::kPrefill && keys == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "keys: required by Prefill"));
  }
  if (queries == nullptr && rule != QueryRule::kOptional) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "queries: required"));
  }
  if (queries == nullptr && keys == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix.empty() ? "request" : prefix.substr(0, prefix.size() - 1),
        ": has neither keys nor queries"));
  }
  if (keys != nullptr) {
    KVSKETCH_RETURN_IF_ERROR(
        DecodeKeysValues(config, prefix, *keys, *values, 0, &op));
  }
  if (queries != nullptr) {
    const std::string qf = absl::StrCat(prefix, "queries");
    KVSKETCH_ASSIGN_OR_RETURN(DecodedTensor q, DecodeTensor(*queries, qf));
    KVSKETCH_ASSIGN_OR_RETURN(
        op.num_queries,
        CheckHeadsRowsDim(qf, q.shape, config.num_query_heads,
                          "num_query_heads", config.head_dim, "head_dim", "M"));
    if (op.num_new_tokens > 0 && op.num_queries != op.num_new_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          qf, ": shape ", ShapeToString(q.shape), " has ", op.num_queries,
          " queries but the entry appends ", op.num_new_tokens,
          " tokens (causal steps need one query per new token)"));
    }
    op.queries = std::move(q.data);
  }
  if (rule == QueryRule::kPrefill && op.num_new_tokens == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "keys: Prefill needs at least one token"));
  }
  return op;
}

absl::StatusOr<LayerOp> DecodeAppend(const SessionConfig& config,
                                     absl::string_view prefix,
                                     const v1::AppendRequest& request) {
  if (!request.has_keys() || !request.has_values()) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, request.has_keys() ? "values" : "keys", ": required"));
  }
  LayerOp op;
  if (request.all_layers()) {
    op.layer = -1;
    KVSKETCH_RETURN_IF_ERROR(DecodeKeysValues(config, prefix, request.keys(),
                                              request.values(),
                                              config.num_layers, &op));
    return op;
  }
  KVSKETCH_RETURN_IF_ERROR(CheckLayer(config, prefix, request.layer()));
  op.layer = request.layer();
  KVSKETCH_RETURN_IF_ERROR(DecodeKeysValues(config, prefix, request.keys(),
                                            request.values(), 0, &op));
  return op;
}

}  // namespace kvsketch::server
