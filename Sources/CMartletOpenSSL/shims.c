#include "CMartletOpenSSL.h"

long CMartletOpenSSL_SSL_set_mode(SSL *ssl, long mode) { return SSL_set_mode(ssl, mode); }
long CMartletOpenSSL_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
int CMartletOpenSSL_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int CMartletOpenSSL_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
int CMartletOpenSSL_SSL_set_tlsext_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
long CMartletOpenSSL_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_session_cache_mode(ctx, mode); }
X509 *CMartletOpenSSL_SSL_get_peer_certificate(const SSL *ssl) { return SSL_get1_peer_certificate(ssl); }
void CMartletOpenSSL_OPENSSL_free(void *ptr) { OPENSSL_free(ptr); }
unsigned long CMartletOpenSSL_OpenSSL_version_num(void) { return OpenSSL_version_num(); }
uint64_t CMartletOpenSSL_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
uint64_t CMartletOpenSSL_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
uint64_t CMartletOpenSSL_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
uint64_t CMartletOpenSSL_SSL_OP_NO_TICKET(void) { return SSL_OP_NO_TICKET; }
int CMartletOpenSSL_SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t n) { return SSL_CTX_set_num_tickets(ctx, n); }
int CMartletOpenSSL_SSL_FILETYPE_PEM(void) { return SSL_FILETYPE_PEM; }

int CMartletOpenSSL_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
GENERAL_NAME *CMartletOpenSSL_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) { return sk_GENERAL_NAME_value(names, i); }
void CMartletOpenSSL_GENERAL_NAMES_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }
