// File: server/auth.cc
#include "server/auth.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status_macros.h"
#include "grpcpp/security/server_credentials.h"

namespace kvsketch::server {
namespace {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

// Printable ASCII without space: what an HTTP/2 header value can carry
// unescaped after "Bearer ".
bool IsTokenChar(char c) { return c > 0x20 && c < 0x7f; }

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot read file '", path, "'"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": read error on '", path, "'"));
  }
  return std::move(ss).str();
}

// Constant-time in the contents: every byte of `presented` is compared
// against `expected` (cycled), differences accumulated without branching.
bool TokenEquals(absl::string_view presented, absl::string_view expected) {
  unsigned diff = presented.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i]) ^
            static_cast<unsigned char>(expected[i % expected.size()]);
  }
  return diff == 0;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

BioPtr MemBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM bundle, or InvalidArgument naming flag.
absl::StatusOr<X509Ptr> FirstCertificate(absl::string_view pem,
                                         absl::string_view flag,
                                         const std::string& path) {
  BioPtr bio = MemBio(pem);
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                   : nullptr);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' holds no PEM certificate"));
  }
  return cert;
}

}  // namespace

absl::Status ValidateTenantName(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > kMaxTenantLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant name must be 1-", kMaxTenantLength, " characters"));
  }
  for (char c : tenant) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tenant name '", tenant, "' has a character outside [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Parse(
    absl::string_view text, absl::string_view source) {
  auto auth = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  absl::flat_hash_set<std::string> tokens;
  absl::flat_hash_set<std::string> tenants;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (stripped.empty() || stripped.front() == '#') continue;
    // Messages name the line, never the token.
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": ", what));
    };
    std::vector<absl::string_view> fields =
        absl::StrSplit(stripped, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return error(absl::StrCat("want 'token tenant', got ", fields.size(),
                                " field(s)"));
    }
    const absl::string_view token = fields[0];
    const absl::string_view tenant = fields[1];
    if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
      return error(absl::StrCat("token must be ", kMinTokenLength, "-",
                                kMaxTokenLength, " characters, got ",
                                token.size()));
    }
    for (char c : token) {
      if (!IsTokenChar(c)) {
        return error("token has a character outside printable ASCII");
      }
    }
    if (absl::Status s = ValidateTenantName(tenant); !s.ok()) {
      return error(s.message());
    }
    if (!tokens.insert(std::string(token)).second) {
      return error("token repeats an earlier line's token");
    }
    tenants.insert(std::string(tenant));
    auth->entries_.push_back({std::string(token), std::string(tenant)});
  }
  if (auth->entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no tokens (want lines of 'token tenant')"));
  }
  auth->num_tenants_ = static_cast<int>(tenants.size());
  return auth;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>>
TokenAuthenticator::LoadFile(const std::string& path) {
  KVSKETCH_ASSIGN_OR_RETURN(std::string text,
                            ReadWholeFile(path, "auth_tokens_file"));
  return Parse(text, absl::StrCat("auth_tokens_file ", path));
}

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(
    absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "missing 'authorization' metadata: send 'authorization: Bearer "
        "<token>'");
  }
  // RFC 6750 §2.1: "Bearer" 1*SP b64token; the scheme is case-insensitive
  // (RFC 7235 §2.1).
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()),
                              kScheme)) {
    return absl::UnauthenticatedError(
        "'authorization' metadata: want the Bearer scheme ('Bearer <token>')");
  }
  const absl::string_view token =
      absl::StripLeadingAsciiWhitespace(authorization.substr(kScheme.size()));
  const Entry* match = nullptr;
  for (const Entry& e : entries_) {
    // No early exit: every entry is compared whatever matched before.
    if (TokenEquals(token, e.token)) match = &e;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return match->tenant;
}

absl::StatusOr<std::string> CallTenant(const TokenAuthenticator* auth,
                                       const grpc::ServerContextBase& ctx) {
  if (auth == nullptr) return std::string();
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthorizationMetadataKey);
  if (it == md.end()) return auth->Authenticate("");
  if (md.count(kAuthorizationMetadataKey) > 1) {
    return absl::UnauthenticatedError(
        "'authorization' metadata sent more than once");
  }
  return auth->Authenticate(
      absl::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  if (files.cert_file.empty() && files.key_file.empty()) {
    if (!files.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "tls_client_ca: mutual TLS needs --tls_cert and --tls_key too");
    }
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError(
        files.cert_file.empty() ? "tls_key: given without --tls_cert"
                                : "tls_cert: given without --tls_key");
  }
  KVSKETCH_ASSIGN_OR_RETURN(std::string cert_pem,
                            ReadWholeFile(files.cert_file, "tls_cert"));
  KVSKETCH_ASSIGN_OR_RETURN(std::string key_pem,
                            ReadWholeFile(files.key_file, "tls_key"));
  KVSKETCH_ASSIGN_OR_RETURN(
      X509Ptr cert, FirstCertificate(cert_pem, "tls_cert", files.cert_file));
  BioPtr key_bio = MemBio(key_pem);
  PkeyPtr key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr,
                                                nullptr)
                      : nullptr);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_key: '", files.key_file,
                     "' holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls_key: '", files.key_file, "' does not match the certificate in '",
        files.cert_file, "'"));
  }
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({key_pem, cert_pem});
  if (!files.client_ca_file.empty()) {
    KVSKETCH_ASSIGN_OR_RETURN(
        options.pem_root_certs,
        ReadWholeFile(files.client_ca_file, "tls_client_ca"));
    KVSKETCH_RETURN_IF_ERROR(FirstCertificate(options.pem_root_certs,
                                              "tls_client_ca",
                                              files.client_ca_file)
                                 .status());
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else {
    options.client_certificate_request =
        GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  }
  return grpc::SslServerCredentials(options);
}

bool IsLoopbackListenAddress(absl::string_view listen) {
  // A unix socket is reachable only through the local file system.
  if (absl::StartsWith(listen, "unix:")) return true;
  absl::string_view host;
  if (absl::StartsWith(listen, "[")) {
    const size_t close = listen.find(']');
    if (close == absl::string_view::npos) return false;
    host = listen.substr(1, close - 1);
  } else {
    const size_t colon = listen.rfind(':');
    host = colon == absl::string_view::npos ? listen : listen.substr(0, colon);
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  const std::string h(host);
  unsigned char addr[16];
  if (inet_pton(AF_INET, h.c_str(), addr) == 1) return addr[0] == 127;
  if (inet_pton(AF_INET6, h.c_str(), addr) == 1) {
    static constexpr unsigned char kLoopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                     0, 0, 0, 0, 0, 0, 0, 1};
    return std::equal(addr, addr + 16, kLoopback6);
  }
  return false;
}

}  // namespace kvsketch::server
