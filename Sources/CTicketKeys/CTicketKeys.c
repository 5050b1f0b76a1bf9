/* TLS session ticket keys shared by the workers: the supervisor makes them and sends them to every
   worker, so a ticket one worker issued resumes on another. Apart from CSystemShims, so the listener's
   and the manager's executable (webserver-core) does not link OpenSSL. */
#include "CTicketKeys.h"
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>

static unsigned char cs_ticket_keys[2][CS_TICKET_KEY_SIZE];
static int cs_ticket_key_count = 0;

void cs_set_ticket_keys(const unsigned char *keys, int count) {
    if (count < 0) count = 0;
    if (count > 2) count = 2;
    memcpy(cs_ticket_keys, keys, (size_t)count * CS_TICKET_KEY_SIZE);
    cs_ticket_key_count = count;
}

static int cs_ticket_mac(EVP_MAC_CTX *hctx, const unsigned char *key) {
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(key + 16), 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

static int cs_ticket_callback(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cipher,
                              EVP_MAC_CTX *hctx, int encrypt) {
    (void)ssl;
    if (encrypt) {
        if (cs_ticket_key_count == 0) return 0;  /* no keys yet: no ticket */
        const unsigned char *key = cs_ticket_keys[0];
        if (RAND_bytes(iv, 16) <= 0) return -1;
        memcpy(name, key, 16);
        if (!EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key + 48, iv)) return -1;
        return cs_ticket_mac(hctx, key) ? 1 : -1;
    }
    for (int index = 0; index < cs_ticket_key_count; index++) {
        const unsigned char *key = cs_ticket_keys[index];
        if (memcmp(name, key, 16) != 0) continue;
        if (!cs_ticket_mac(hctx, key)) return -1;
        if (!EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key + 48, iv)) return -1;
        return index == 0 ? 1 : 2;  /* 2: good, but issue a new ticket under the current key */
    }
    return 0;  /* unknown key: a full handshake */
}

void cs_use_shared_ticket_keys(void *context) {
    SSL_CTX_set_tlsext_ticket_key_evp_cb((SSL_CTX *)context, cs_ticket_callback);
}
