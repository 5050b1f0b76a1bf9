#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/opensslv.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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

/* ACME (RFC 8555, RFC 8737). */

/* A certificate signing request's extensions (the names, as subjectAltName) go in as a stack. */
static inline int cossl_X509_REQ_add_extension(X509_REQ *request, X509_EXTENSION *extension) {
    STACK_OF(X509_EXTENSION) *extensions = sk_X509_EXTENSION_new_null();
    if (extensions == NULL) return 0;
    sk_X509_EXTENSION_push(extensions, extension);
    int ok = X509_REQ_add_extensions(request, extensions);
    sk_X509_EXTENSION_free(extensions);
    return ok;
}

/* The critical id-pe-acmeIdentifier extension (1.3.6.1.5.5.7.1.31) of a TLS-ALPN-01 certificate: an
   OCTET STRING holding the SHA-256 of the key authorization (RFC 8737 section 3). */
static inline X509_EXTENSION *cossl_acme_identifier_extension(const unsigned char *digest) {
    X509_EXTENSION *extension = NULL;
    ASN1_OCTET_STRING *inner = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    unsigned char *der = NULL;
    int length;
    if (inner == NULL || value == NULL || oid == NULL || !ASN1_OCTET_STRING_set(inner, digest, 32)) goto done;
    length = i2d_ASN1_OCTET_STRING(inner, &der);
    if (length <= 0 || !ASN1_OCTET_STRING_set(value, der, length)) goto done;
    extension = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value);
done:
    OPENSSL_free(der);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    return extension;
}

/* TLS-ALPN-01: a validator's ClientHello offers the ALPN protocol acme-tls/1 and names the host being
   validated. The worker's ClientHello callback (TLSSites) reads both with these two before the name
   chooses a certificate, and switches the handshake to that name's challenge context. */
static inline int cossl_offers_acme_tls(SSL *ssl) {
    const unsigned char *data = NULL;
    size_t length = 0;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &length) || length < 2)
        return 0;
    size_t list = ((size_t)data[0] << 8) | data[1];
    if (list + 2 != length) return 0;
    for (size_t at = 2; at < length;) {
        size_t item = data[at];
        if (at + 1 + item > length) return 0;
        if (item == 10 && memcmp(data + at + 1, "acme-tls/1", 10) == 0) return 1;
        at += 1 + item;
    }
    return 0;
}
/* The host_name of the server_name extension, lowercased, into `name`; 0 when there is none. */
static inline int cossl_client_hello_server_name(SSL *ssl, char *name, size_t capacity) {
    const unsigned char *data = NULL;
    size_t length = 0;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &data, &length) || length < 5) return 0;
    size_t list = ((size_t)data[0] << 8) | data[1];
    if (list + 2 != length || data[2] != TLSEXT_NAMETYPE_host_name) return 0;
    size_t size = ((size_t)data[3] << 8) | data[4];
    if (size == 0 || 5 + size > length || size + 1 > capacity) return 0;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = data[5 + i];
        if (c == 0) return 0;
        name[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    name[size] = 0;
    return 1;
}
static int cossl_acme_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                  const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    static const unsigned char acme[] = "\x0a" "acme-tls/1";
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, acme, sizeof(acme) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}
/* A challenge context chooses acme-tls/1, and nothing else. */
static inline void cossl_use_acme_alpn(SSL_CTX *ctx) { SSL_CTX_set_alpn_select_cb(ctx, cossl_acme_alpn_select, NULL); }
/* Whether the handshake chose acme-tls/1 (the validator closes once it is done). */
static inline int cossl_alpn_is_acme(const SSL *ssl) {
    const unsigned char *protocol = NULL;
    unsigned int length = 0;
    SSL_get0_alpn_selected(ssl, &protocol, &length);
    return length == 10 && memcmp(protocol, "acme-tls/1", 10) == 0;
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

/* The connection's socket as OpenSSL's BIO, with a response's records gathered into one send.

   A socket BIO sends each TLS record (16 KiB at most) as it is made: one send(2) per record, and on
   loopback or with segmentation offload each send is also a segment to push. While the server writes
   (between cossl_out_gather_begin and _end) this one appends the records to the worker's gather buffer
   instead, and _end sends them together. Records the socket does not take then wait in the
   connection's own `pending` (allocated then, freed once sent): OpenSSL has counted them written, so
   they go before anything else (cossl_out_flush), and the server treats them as queued output.
   Outside a gathered write (handshake, alerts, close_notify) it behaves as OpenSSL's socket BIO, except
   that what it writes goes after any pending records. Reading is recv(2), as the socket BIO's. */
typedef struct {
    int fd;
    int gathering;
    int failed;              /* a send failed other than EAGAIN: the connection is over */
    int eof;                 /* recv saw the end of the stream (BIO_eof) */
    unsigned char *gather;   /* the worker's buffer, shared by its connections: one writes at a time */
    size_t gatherCapacity;
    size_t gathered;
    unsigned char *pending;  /* records the socket has not taken yet, from pendingOffset to pendingSize */
    size_t pendingOffset;
    size_t pendingSize;
    size_t pendingCapacity;
} cossl_out;

/* Sends as much of `data` as the socket takes: the count, or -1 after an error (`failed` set). */
static long cossl_out_send(cossl_out *out, const unsigned char *data, size_t length) {
    size_t sent = 0;
    while (sent < length) {
        ssize_t count = send(out->fd, data + sent, length - sent, MSG_NOSIGNAL);
        if (count > 0) { sent += (size_t)count; continue; }
        if (count < 0 && errno == EINTR) continue;
        if (count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        out->failed = 1;
        return -1;
    }
    return (long)sent;
}

/* Appends to `pending`: 0, or -1 when memory runs out (`failed` set). */
static int cossl_out_keep(cossl_out *out, const unsigned char *data, size_t length) {
    if (length == 0) return 0;
    if (out->pendingOffset > 0 && out->pendingOffset == out->pendingSize) out->pendingOffset = out->pendingSize = 0;
    if (out->pendingSize + length > out->pendingCapacity) {
        if (out->pendingOffset > 0) {
            memmove(out->pending, out->pending + out->pendingOffset, out->pendingSize - out->pendingOffset);
            out->pendingSize -= out->pendingOffset;
            out->pendingOffset = 0;
        }
        if (out->pendingSize + length > out->pendingCapacity) {
            size_t capacity = out->pendingSize + length;
            unsigned char *grown = realloc(out->pending, capacity);
            if (grown == NULL) { out->failed = 1; return -1; }
            out->pending = grown;
            out->pendingCapacity = capacity;
        }
    }
    memcpy(out->pending + out->pendingSize, data, length);
    out->pendingSize += length;
    return 0;
}

static inline int cossl_out_has_pending(const cossl_out *out) { return out->pendingSize > out->pendingOffset; }

/* Sends pending records: 1 when none is left (the buffer is freed), 0 when the socket is full, -1 on an
   error. */
static int cossl_out_flush(cossl_out *out) {
    if (out->failed) return -1;
    if (cossl_out_has_pending(out)) {
        long sent = cossl_out_send(out, out->pending + out->pendingOffset, out->pendingSize - out->pendingOffset);
        if (sent < 0) return -1;
        out->pendingOffset += (size_t)sent;
        if (cossl_out_has_pending(out)) return 0;
    }
    free(out->pending);
    out->pending = NULL;
    out->pendingOffset = out->pendingSize = out->pendingCapacity = 0;
    return 1;
}

/* Sends the gathered records; what the socket does not take is kept. 0, or -1 on an error. */
static int cossl_out_push(cossl_out *out) {
    size_t gathered = out->gathered;
    out->gathered = 0;
    if (gathered == 0) return 0;
    if (cossl_out_has_pending(out)) return cossl_out_keep(out, out->gather, gathered);
    long sent = cossl_out_send(out, out->gather, gathered);
    if (sent < 0) return -1;
    return cossl_out_keep(out, out->gather + sent, gathered - (size_t)sent);
}

static inline void cossl_out_gather_begin(cossl_out *out) {
    out->gathering = 1;
    out->gathered = 0;
}

static inline int cossl_out_gather_end(cossl_out *out) {
    out->gathering = 0;
    return cossl_out_push(out);
}

static int cossl_out_bio_write(BIO *bio, const char *bytes, int length) {
    cossl_out *out = BIO_get_data(bio);
    const unsigned char *data = (const unsigned char *)bytes;
    BIO_clear_retry_flags(bio);
    if (out->failed || length < 0) return -1;
    if (out->gathering) {
        if (out->gathered + (size_t)length > out->gatherCapacity && cossl_out_push(out) < 0) return -1;
        if (cossl_out_has_pending(out)) return cossl_out_keep(out, data, (size_t)length) < 0 ? -1 : length;
        if ((size_t)length <= out->gatherCapacity) {
            memcpy(out->gather + out->gathered, data, (size_t)length);
            out->gathered += (size_t)length;
            return length;
        }
        long sent = cossl_out_send(out, data, (size_t)length);
        if (sent < 0 || cossl_out_keep(out, data + sent, (size_t)length - (size_t)sent) < 0) return -1;
        return length;
    }
    /* After records that wait, in order; else as a socket BIO: what the socket takes, or a retry. */
    if (cossl_out_has_pending(out)) {
        int flushed = cossl_out_flush(out);
        if (flushed < 0) return -1;
        if (flushed == 0) return cossl_out_keep(out, data, (size_t)length) < 0 ? -1 : length;
    }
    while (1) {
        ssize_t count = send(out->fd, data, (size_t)length, MSG_NOSIGNAL);
        if (count >= 0) return (int)count;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio); else out->failed = 1;
        return -1;
    }
}

static int cossl_out_bio_read(BIO *bio, char *buffer, int length) {
    cossl_out *out = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    while (1) {
        ssize_t count = recv(out->fd, buffer, (size_t)length, 0);
        if (count > 0) return (int)count;
        if (count == 0) { out->eof = 1; return 0; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
        return -1;
    }
}

static long cossl_out_bio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)number; (void)pointer;
    cossl_out *out = BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_EOF: return out != NULL && out->eof;
    case BIO_CTRL_WPENDING: return out != NULL ? (long)(out->pendingSize - out->pendingOffset) : 0;
    default: return 0;
    }
}

static int cossl_out_bio_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

/* The method, made once per process (a worker's TLS runs on one thread). */
static BIO_METHOD *cossl_out_method(void) {
    static BIO_METHOD *method = NULL;
    if (method == NULL) {
        BIO_METHOD *made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "webserver socket");
        if (made == NULL) return NULL;
        BIO_meth_set_write(made, cossl_out_bio_write);
        BIO_meth_set_read(made, cossl_out_bio_read);
        BIO_meth_set_ctrl(made, cossl_out_bio_ctrl);
        BIO_meth_set_create(made, cossl_out_bio_create);
        method = made;
    }
    return method;
}

/* Gives `ssl` the BIO over `out` for both directions: 1, or 0 when it cannot be made. */
static int cossl_out_attach(SSL *ssl, cossl_out *out) {
    BIO_METHOD *method = cossl_out_method();
    BIO *bio = method != NULL ? BIO_new(method) : NULL;
    if (bio == NULL) return 0;
    BIO_set_data(bio, out);
    SSL_set_bio(ssl, bio, bio);
    return 1;
}

/* Frees what `out` holds (after SSL_free, which freed the BIO). */
static inline void cossl_out_release(cossl_out *out) {
    free(out->pending);
    out->pending = NULL;
    out->pendingOffset = out->pendingSize = out->pendingCapacity = 0;
}

#endif
