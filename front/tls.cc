// SPDX-License-Identifier: MIT
// See tls.h.
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace cmon::front {

namespace {

std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += out.empty() ? "" : "; ";
        out += buf;
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

} // namespace

std::unique_ptr<boost::asio::ssl::context> server_tls(const std::string& cert_file,
                                                      const std::string& key_file,
                                                      const std::string& cert_name,
                                                      const std::string& key_name) {
    ERR_clear_error();
    auto context = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
    SSL_CTX* ctx = context->native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
        throw TlsError("TLS 1.2 cipher list refused: " + openssl_errors());
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
        throw TlsError(cert_name + ": cannot load '" + cert_file + "': " + openssl_errors());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        throw TlsError(key_name + ": cannot load '" + key_file + "': " + openssl_errors());
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        throw TlsError(key_name + ": '" + key_file + "' does not match " + cert_name + " '" +
                       cert_file + "'");
    }
    return context;
}

} // namespace cmon::front
