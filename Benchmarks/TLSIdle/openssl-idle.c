// openssl-idle.c — heap held by an idle server-side OpenSSL TLS connection (run by Scripts/bench-tls-idle.sh).
//
// Completes N TLS handshakes over memory BIOs (certificate c.pem, key k.pem in the working directory), sends one
// 4-byte record each way, frees the clients and the handshake-time BIOs, and prints the heap (mallinfo2) the N server
// connections still hold, per connection. With any argument the server context sets SSL_MODE_RELEASE_BUFFERS.
#include <malloc.h>
#include <openssl/ssl.h>
#include <stdio.h>

#define CONNECTIONS 2000
#define PUMP_ROUNDS 20

static void pump(SSL *client, BIO *clientIn, BIO *clientOut, SSL *server, BIO *serverIn, BIO *serverOut) {
    static char buffer[65536];
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        int n;
        while ((n = BIO_read(clientOut, buffer, sizeof buffer)) > 0) BIO_write(serverIn, buffer, n);
        while ((n = BIO_read(serverOut, buffer, sizeof buffer)) > 0) BIO_write(clientIn, buffer, n);
        SSL_do_handshake(client);
        SSL_do_handshake(server);
    }
}

static size_t heap(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

int main(int argc, char **argv) {
    int release = argc > 1;
    SSL_CTX *serverContext = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_file(serverContext, "c.pem", SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(serverContext, "k.pem", SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "openssl-idle: no c.pem / k.pem\n");
        return 1;
    }
    SSL_CTX_set_session_cache_mode(serverContext, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(serverContext, 0);
    if (release) SSL_CTX_set_mode(serverContext, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX *clientContext = SSL_CTX_new(TLS_client_method());
    static SSL *servers[CONNECTIONS], *clients[CONNECTIONS];
    size_t before = heap();
    for (int i = 0; i < CONNECTIONS; i++) {
        SSL *server = SSL_new(serverContext), *client = SSL_new(clientContext);
        BIO *serverIn = BIO_new(BIO_s_mem()), *serverOut = BIO_new(BIO_s_mem());
        BIO *clientIn = BIO_new(BIO_s_mem()), *clientOut = BIO_new(BIO_s_mem());
        SSL_set_bio(server, serverIn, serverOut);
        SSL_set_accept_state(server);
        SSL_set_bio(client, clientIn, clientOut);
        SSL_set_connect_state(client);
        pump(client, clientIn, clientOut, server, serverIn, serverOut);
        char record[16];
        SSL_write(client, "ping", 4);
        pump(client, clientIn, clientOut, server, serverIn, serverOut);
        SSL_read(server, record, sizeof record);
        SSL_write(server, "pong", 4);
        pump(client, clientIn, clientOut, server, serverIn, serverOut);
        SSL_read(client, record, sizeof record);
        if (!SSL_is_init_finished(server)) {
            fprintf(stderr, "openssl-idle: handshake %d did not finish\n", i);
            return 1;
        }
        // The handshake's BIOs grew to its largest flight; a connection's own I/O would hold empty ones.
        SSL_set_bio(server, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        servers[i] = server;
        clients[i] = client;
    }
    for (int i = 0; i < CONNECTIONS; i++) SSL_free(clients[i]);
    printf("%s, %s: %.0f bytes of heap per idle server connection (%d connections)\n", OpenSSL_version(OPENSSL_VERSION),
           release ? "SSL_MODE_RELEASE_BUFFERS" : "default buffers", (double)(heap() - before) / CONNECTIONS, CONNECTIONS);
    for (int i = 0; i < CONNECTIONS; i++) SSL_free(servers[i]);
    SSL_CTX_free(serverContext);
    SSL_CTX_free(clientContext);
    return 0;
}
