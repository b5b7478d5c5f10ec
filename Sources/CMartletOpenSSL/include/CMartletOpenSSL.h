#ifndef C_MARTLET_OPENSSL_H
#define C_MARTLET_OPENSSL_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

/* One-line wrappers for OpenSSL 3 function-like macros Swift cannot import. */

long CMartletOpenSSL_SSL_set_mode(SSL *ssl, long mode);
long CMartletOpenSSL_SSL_CTX_set_mode(SSL_CTX *ctx, long mode);
int CMartletOpenSSL_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
int CMartletOpenSSL_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);
int CMartletOpenSSL_SSL_set_tlsext_host_name(SSL *ssl, const char *name);
long CMartletOpenSSL_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode);
X509 *CMartletOpenSSL_SSL_get_peer_certificate(const SSL *ssl);
void CMartletOpenSSL_OPENSSL_free(void *ptr);
unsigned long CMartletOpenSSL_OpenSSL_version_num(void);
uint64_t CMartletOpenSSL_SSL_OP_NO_COMPRESSION(void);
uint64_t CMartletOpenSSL_SSL_OP_NO_RENEGOTIATION(void);
uint64_t CMartletOpenSSL_SSL_OP_CIPHER_SERVER_PREFERENCE(void);
uint64_t CMartletOpenSSL_SSL_OP_NO_TICKET(void);

int CMartletOpenSSL_SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t n);
int CMartletOpenSSL_SSL_FILETYPE_PEM(void);
int CMartletOpenSSL_sk_GENERAL_NAME_num(const GENERAL_NAMES *names);
GENERAL_NAME *CMartletOpenSSL_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i);
void CMartletOpenSSL_GENERAL_NAMES_free(GENERAL_NAMES *names);

#endif
