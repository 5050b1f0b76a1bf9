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

static inline long cossl_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) { return SSL_CTX_set1_groups_list(ctx, list); }
static inline long cossl_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_session_cache_mode(ctx, mode); }
static inline uint64_t cossl_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options) { return SSL_CTX_set_options(ctx, options); }

/* ALPN: h2 (when the server's HTTP/2 is on) before http/1.1, in the server's order of preference
   whatever the client's order. A client that offers ALPN without either (say, spdy/3 alone) gets the
   no_application_protocol alert, as RFC 7301 section 3.2 asks; one that offers no ALPN at all is fine
   (it speaks HTTP/1.1). The callback's argument is non-NULL when h2 is offered. */
static int cossl_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                             const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    static const unsigned char http11[] = "\x08http/1.1";
    const unsigned char *ours = arg != NULL ? both : http11;
    unsigned int length = arg != NULL ? sizeof(both) - 1 : sizeof(http11) - 1;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, ours, length, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}
static inline void cossl_use_alpn(SSL_CTX *ctx, int h2) {
    SSL_CTX_set_alpn_select_cb(ctx, cossl_alpn_select, h2 ? (void *)1 : NULL);
}
/* Whether the handshake chose h2. */
static inline int cossl_alpn_is_h2(const SSL *ssl) {
    const unsigned char *protocol = NULL;
    unsigned int length = 0;
    SSL_get0_alpn_selected(ssl, &protocol, &length);
    return length == 2 && protocol[0] == 'h' && protocol[1] == '2';
}

/* SNI: the callback and its argument are set through SSL_CTX_ctrl macros. */
typedef int (*cossl_servername_cb)(SSL *ssl, int *alert, void *arg);
static inline void cossl_SSL_CTX_set_servername_callback(SSL_CTX *ctx, cossl_servername_cb cb, void *arg) {
    SSL_CTX_set_tlsext_servername_callback(ctx, cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}
static const int cossl_SSL_TLSEXT_ERR_OK = SSL_TLSEXT_ERR_OK;
static const int cossl_SSL_TLSEXT_ERR_NOACK = SSL_TLSEXT_ERR_NOACK;
static const int cossl_SSL_TLSEXT_ERR_ALERT_FATAL = SSL_TLSEXT_ERR_ALERT_FATAL;
static const int cossl_SSL_AD_UNRECOGNIZED_NAME = SSL_AD_UNRECOGNIZED_NAME;

/* OCSP stapling: a DER OCSP response the operator supplies, attached to handshakes that ask for one.
   OpenSSL frees the response it is given, so each handshake gets its own copy. */
#include <openssl/ocsp.h>
#include <string.h>
typedef struct { unsigned char *der; long length; } cossl_ocsp_staple;
static int cossl_ocsp_status_cb(SSL *ssl, void *arg) {
    cossl_ocsp_staple *staple = (cossl_ocsp_staple *)arg;
    if (staple == NULL || staple->der == NULL || staple->length <= 0) return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = (unsigned char *)OPENSSL_malloc((size_t)staple->length);
    if (copy == NULL) return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, staple->der, (size_t)staple->length);
    SSL_set_tlsext_status_ocsp_resp(ssl, copy, staple->length);
    return SSL_TLSEXT_ERR_OK;
}
static inline void cossl_use_ocsp_staple(SSL_CTX *ctx, cossl_ocsp_staple *staple) {
    SSL_CTX_set_tlsext_status_cb(ctx, cossl_ocsp_status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, staple);
}

/* EVP_EC_gen is a macro over a variadic function. */
static inline EVP_PKEY *cossl_EVP_EC_gen_P256(void) { return EVP_EC_gen("P-256"); }

static const uint64_t cossl_SSL_OP_NO_RENEGOTIATION = SSL_OP_NO_RENEGOTIATION;
static const uint64_t cossl_SSL_OP_CIPHER_SERVER_PREFERENCE = SSL_OP_CIPHER_SERVER_PREFERENCE;
static const uint64_t cossl_SSL_OP_NO_TICKET = SSL_OP_NO_TICKET;
static const long cossl_SSL_MODE_ENABLE_PARTIAL_WRITE = SSL_MODE_ENABLE_PARTIAL_WRITE;
static const long cossl_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const long cossl_SSL_MODE_RELEASE_BUFFERS = SSL_MODE_RELEASE_BUFFERS;
static const long cossl_SSL_SESS_CACHE_SERVER = SSL_SESS_CACHE_SERVER;
static const int cossl_TLS1_3_VERSION = TLS1_3_VERSION;
static const uint64_t cossl_SSL_OP_NO_COMPRESSION = SSL_OP_NO_COMPRESSION;
static const int cossl_TLS1_2_VERSION = TLS1_2_VERSION;

#endif
