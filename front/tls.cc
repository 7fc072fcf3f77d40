// SPDX-License-Identifier: MIT
// See tls.h.
#include "tls.h"

#include "common/regular_file.h"

#include <openssl/crypto.h>
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
    return out;
}

// A PEM chain of a few certificates is a few KiB; a megabyte is no certificate file.
constexpr std::size_t kMaxPemSize = std::size_t{1} << 20;

// Cleanses a string (a private key's text) on every way out of a scope.
struct Cleanser {
    std::string& s;
    ~Cleanser() { OPENSSL_cleanse(s.data(), s.size()); }
};

TlsError cannot_load(const std::string& name, const std::string& path, const std::string& why) {
    return TlsError(name + ": cannot load '" + path + "': " + why);
}

// Reads a PEM file into `pem` (cleansing what it held before); throws TlsError naming it.
void load(const std::string& name, const std::string& path, std::string& pem) {
    OPENSSL_cleanse(pem.data(), pem.size());
    try {
        cmon::RegularFile(path).read_all(pem, kMaxPemSize);
    } catch (const cmon::FileError& e) {
        throw cannot_load(name, path, e.what());
    }
}

// OpenSSL's queued errors, else what `ec` says.
std::string reason(const boost::system::error_code& ec) {
    std::string queued = openssl_errors();
    return queued.empty() ? ec.message() : queued;
}

} // namespace

std::unique_ptr<boost::asio::ssl::context> server_tls(const std::string& cert_file,
                                                      const std::string& key_file,
                                                      const std::string& cert_name,
                                                      const std::string& key_name) {
    ERR_clear_error();
    auto context =
        std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
    SSL_CTX* ctx = context->native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
        throw TlsError("TLS 1.2 cipher list refused: " + openssl_errors());
    }
    // The files are read here, not by OpenSSL, so that only regular files are opened (a FIFO
    // would hang start-up) and at most kMaxPemSize bytes of each are read.
    std::string pem;
    Cleanser clean_pem{pem};
    boost::system::error_code ec;
    load(cert_name, cert_file, pem);
    context->use_certificate_chain(boost::asio::buffer(pem), ec);
    if (ec) {
        throw cannot_load(cert_name, cert_file, reason(ec));
    }
    load(key_name, key_file, pem);
    context->use_private_key(boost::asio::buffer(pem), boost::asio::ssl::context::pem, ec);
    if (ec) {
        throw cannot_load(key_name, key_file, reason(ec));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        throw TlsError(key_name + ": '" + key_file + "' does not match " + cert_name + " '" +
                       cert_file + "'");
    }
    return context;
}

} // namespace cmon::front
