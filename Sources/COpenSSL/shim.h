#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/opensslv.h>

/* OpenSSL turns much of its API into macros; Swift cannot call those, so each one used gets a
   static inline function here, named cossl_ plus the exact C name. */

static inline long cossl_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline int cossl_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline const char *cossl_OPENSSL_VERSION_TEXT(void) { return OPENSSL_VERSION_TEXT; }

static const uint64_t cossl_SSL_OP_NO_RENEGOTIATION = SSL_OP_NO_RENEGOTIATION;
static const uint64_t cossl_SSL_OP_NO_COMPRESSION = SSL_OP_NO_COMPRESSION;
static const int cossl_TLS1_2_VERSION = TLS1_2_VERSION;

#endif
