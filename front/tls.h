// SPDX-License-Identifier: MIT
// The server's TLS context: TLS 1.2 only with ephemeral key exchange and AEAD ciphers (ECDHE
// with AES-GCM or ChaCha20-Poly1305: no static RSA, no CBC, no SHA-1 MACs), TLS 1.3 with
// OpenSSL's defaults, no renegotiation, the server's cipher order, no session tickets (a
// restart must not leave a ticket key behind, and clients here reconnect rarely).
#pragma once

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <stdexcept>
#include <string>

namespace cmon::front {

/// A certificate or key that cannot be used; what() names the file and OpenSSL's reason.
class TlsError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The TLS 1.2 cipher list (OpenSSL syntax), exposed for the tests.
inline constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Loads the PEM certificate chain and private key. `cert_name`/`key_name` label the files in
/// errors (cmond: "tls_cert", "tls_key"). Throws TlsError.
std::unique_ptr<boost::asio::ssl::context> server_tls(const std::string& cert_file,
                                                      const std::string& key_file,
                                                      const std::string& cert_name = "certificate",
                                                      const std::string& key_name = "key");

} // namespace cmon::front
