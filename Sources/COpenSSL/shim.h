// OpenSSL (Debian libssl-dev) for DTLS 1.2 (RFC 6347) in WebRTC, and small functions for what
// OpenSSL exposes only as macros, which Swift cannot call.
#ifndef TRAV_COPENSSL_SHIM_H
#define TRAV_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/bio.h>
#include <string.h>

/// DTLSv1_get_timeout: 1 and the time left when a retransmission timer runs, else 0.
static inline int trav_dtls_get_timeout(SSL *ssl, long *seconds, long *microseconds) {
    struct timeval tv = {0, 0};
    int running = (int)DTLSv1_get_timeout(ssl, &tv);
    *seconds = (long)tv.tv_sec;
    *microseconds = (long)tv.tv_usec;
    return running;
}

/// DTLSv1_handle_timeout: retransmits the current flight if its timer expired.
static inline int trav_dtls_handle_timeout(SSL *ssl) { return (int)DTLSv1_handle_timeout(ssl); }

/// DTLS_set_link_mtu, with SSL_OP_NO_QUERY_MTU so OpenSSL never asks a socket it does not have.
static inline void trav_dtls_set_mtu(SSL *ssl, long mtu) {
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
    DTLS_set_link_mtu(ssl, mtu);
}

/// DTLS 1.2 only (SSL_CTX_set_min/max_proto_version are macros).
static inline int trav_ssl_ctx_dtls12_only(SSL_CTX *ctx) {
    return (int)(SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) && SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION));
}

/// BIO_ctrl_pending as a function.
static inline size_t trav_bio_pending(BIO *bio) { return BIO_ctrl_pending(bio); }

/// A memory BIO that reports "retry" instead of EOF when empty (BIO_set_mem_eof_return(bio, -1)).
static inline BIO *trav_bio_new_datagram_mem(void) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio) BIO_set_mem_eof_return(bio, -1);
    return bio;
}

/// Accepts any certificate during the handshake: the peer is checked afterwards by its SHA-256
/// fingerprint, which the signalling carried (RFC 8122 §5, RFC 8827 §6.5).
static int trav_accept_any_certificate(int preverify_ok, X509_STORE_CTX *ctx) { (void)preverify_ok; (void)ctx; return 1; }

/// Requires a peer certificate and hands it to the caller's fingerprint check.
static inline void trav_ssl_ctx_require_peer_certificate(SSL_CTX *ctx) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, trav_accept_any_certificate);
}

/// SSL_get1_peer_certificate (OpenSSL 3).
static inline X509 *trav_ssl_peer_certificate(SSL *ssl) { return SSL_get1_peer_certificate(ssl); }

/// Datagrams OpenSSL wrote, each kept whole: `u16 length (big-endian) ‖ bytes`, appended in order.
typedef struct { unsigned char *bytes; size_t count; size_t capacity; } trav_datagram_queue;

static int trav_queue_write(BIO *bio, const char *data, int length) {
    trav_datagram_queue *q = (trav_datagram_queue *)BIO_get_data(bio);
    if (!q || length < 0 || length > 65535) return -1;
    size_t need = q->count + 2 + (size_t)length;
    if (need > 4u * 1024u * 1024u) return -1;  // bounded: nobody drains a runaway writer
    if (need > q->capacity) {
        size_t cap = q->capacity ? q->capacity * 2 : 4096;
        while (cap < need) cap *= 2;
        unsigned char *grown = (unsigned char *)OPENSSL_realloc(q->bytes, cap);
        if (!grown) return -1;
        q->bytes = grown;
        q->capacity = cap;
    }
    q->bytes[q->count] = (unsigned char)(length >> 8);
    q->bytes[q->count + 1] = (unsigned char)(length & 0xFF);
    memcpy(q->bytes + q->count + 2, data, (size_t)length);
    q->count = need;
    return length;
}

static long trav_queue_ctrl(BIO *bio, int cmd, long num, void *ptr) {
    (void)bio; (void)num; (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_WPENDING: case BIO_CTRL_PENDING: return 0;
    default: return 0;  // no MTU query, no peer address: the caller sets the MTU
    }
}

static int trav_queue_create(BIO *bio) {
    trav_datagram_queue *q = (trav_datagram_queue *)OPENSSL_zalloc(sizeof(trav_datagram_queue));
    if (!q) return 0;
    BIO_set_data(bio, q);
    BIO_set_init(bio, 1);
    return 1;
}

static int trav_queue_destroy(BIO *bio) {
    trav_datagram_queue *q = (trav_datagram_queue *)BIO_get_data(bio);
    if (q) { OPENSSL_free(q->bytes); OPENSSL_free(q); }
    BIO_set_data(bio, NULL);
    return 1;
}

/// A BIO method whose writes are kept as whole datagrams (a memory BIO would run them together).
static inline BIO_METHOD *trav_datagram_queue_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "trav datagram queue");
    if (!m) return NULL;
    BIO_meth_set_write(m, trav_queue_write);
    BIO_meth_set_ctrl(m, trav_queue_ctrl);
    BIO_meth_set_create(m, trav_queue_create);
    BIO_meth_set_destroy(m, trav_queue_destroy);
    return m;
}

/// The queued bytes (`u16 length ‖ bytes` each) and their count; the caller copies them, then clears.
static inline const unsigned char *trav_queue_bytes(BIO *bio, size_t *count) {
    trav_datagram_queue *q = (trav_datagram_queue *)BIO_get_data(bio);
    *count = q ? q->count : 0;
    return q ? q->bytes : NULL;
}

/// Empties the queue.
static inline void trav_queue_clear(BIO *bio) {
    trav_datagram_queue *q = (trav_datagram_queue *)BIO_get_data(bio);
    if (q) q->count = 0;
}

#endif
