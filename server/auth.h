// File: server/auth.h
//
// Who may talk to the server and as whom (issue #8 item 5; docs/security.md):
//
//   * Transport: plaintext, TLS (--tls_cert/--tls_key) or mutual TLS
//     (--tls_client_ca: every client must present a certificate signed by
//     that CA). MakeServerCredentials checks the files up front (PEM parses,
//     key matches certificate) so a bad file is a clear error at start rather
//     than a failed bind.
//   * Identity: optional bearer tokens (--auth_tokens_file). Every Attention
//     RPC must carry `authorization: Bearer <token>`; the token names a
//     tenant, and a tenant's sessions live in their own namespace in the
//     SessionManager. Health and reflection stay open (they reveal no
//     session data), so load balancers and grpcurl keep working.
//
// Tokens never appear in error messages or logs: a rejected call says what
// was wrong (missing, wrong scheme, unknown token) without echoing it.
#ifndef KVSKETCH_SERVER_AUTH_H_
#define KVSKETCH_SERVER_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"

namespace kvsketch::server {

inline constexpr char kAuthorizationMetadataKey[] = "authorization";
// Tokens shorter than this are refused when the file is loaded: a bearer
// token is a password that cannot be rate-limited per user, so it must carry
// enough entropy by itself (16 hex digits = 64 bits at the very least;
// docs/security.md recommends `openssl rand -hex 32`).
inline constexpr size_t kMinTokenLength = 16;
inline constexpr size_t kMaxTokenLength = 4096;
inline constexpr size_t kMaxTenantLength = 64;

// 1-64 characters of [A-Za-z0-9._-] (tenant names appear in snapshot file
// names under --data_dir, so they are restricted like session ids).
absl::Status ValidateTenantName(absl::string_view tenant);

// The token table of --auth_tokens_file. Immutable after Parse; safe for
// concurrent Authenticate calls.
class TokenAuthenticator {
 public:
  // One `token tenant` pair per line, separated by spaces or tabs; blank
  // lines and lines starting with '#' are ignored. Several tokens may name
  // one tenant (rotation); a token may appear only once. InvalidArgument
  // naming `source` and the line for anything else, and for a table without
  // tokens (which would lock every client out).
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Parse(
      absl::string_view text, absl::string_view source);
  // Reads the file and Parse()s it; NotFound if it cannot be read.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> LoadFile(
      const std::string& path);

  // `authorization` is the metadata value ("" when absent). The tenant of
  // the token, or Unauthenticated. Every configured token is compared in
  // full on every call, without early exit, so the time taken depends on
  // the presented token's length and the table size but not on how many
  // leading characters match: O(#tokens * token length), a few hundred
  // nanoseconds for a handful of tokens (once per call; a Decode stream
  // pays it once).
  absl::StatusOr<std::string> Authenticate(
      absl::string_view authorization) const;

  int num_tokens() const { return static_cast<int>(entries_.size()); }
  int num_tenants() const { return num_tenants_; }

 private:
  struct Entry {
    std::string token;
    std::string tenant;
  };
  std::vector<Entry> entries_;
  int num_tenants_ = 0;
};

// The tenant a call acts as: "" when auth is null (no tokens configured:
// one shared namespace), else the token's tenant or Unauthenticated.
absl::StatusOr<std::string> CallTenant(const TokenAuthenticator* auth,
                                       const grpc::ServerContextBase& ctx);

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain, server's first
  std::string key_file;        // PEM private key of that certificate
  std::string client_ca_file;  // PEM CA bundle: clients must present a
                               // certificate it signed ("" = no mTLS)
};

// Insecure credentials when every file is ""; else TLS (and, with
// client_ca_file, mutual TLS: GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE
// _AND_VERIFY). InvalidArgument for a certificate without key or the
// reverse, a CA without certificate, a file that is not the PEM it should
// be, or a key that does not match the certificate; NotFound for a file
// that cannot be read. Messages name the flag.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// True if `listen` ("host:port") binds only a loopback interface:
// 127.0.0.0/8, [::1] or localhost. Wildcards (0.0.0.0, [::], "") and
// other hosts are false.
bool IsLoopbackListenAddress(absl::string_view listen);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_AUTH_H_
