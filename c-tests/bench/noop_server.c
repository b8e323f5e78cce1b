/*
 * The machine's ceiling for a saslauthd-protocol daemon: answers every request
 * `OK` without deciding anything. NTHREADS threads each block in accept4(),
 * read the request (counted strings, until four fields are complete), answer
 * on the same thread and close: the stock saslauthd's shape without its work.
 * With --http it answers nginx's auth_http requests instead (read until the
 * blank line, answer a fixed `Auth-Status: OK`, wait for the client to close
 * first as saslgated does), on a UNIX socket or on 127.0.0.1:PORT: the
 * ceiling of the auth_http face (scripts/bench-http.sh).
 * Usage: noop_server [--http] SOCKET|IP:PORT [NTHREADS=5]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int four_fields(const unsigned char *buf, size_t len);
static int lfd;
static int http;

static const char http_ok[] = "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"
                              "Auth-Server: 127.0.0.1\r\nAuth-Port: 10143\r\n\r\n";

/* Whether buf holds a whole request: four fields, or an HTTP head. */
static int complete(const unsigned char *buf, size_t len)
{
    if (http) return memmem(buf, len, "\r\n\r\n", 4) != NULL;
    return four_fields(buf, len);
}

/* Bytes of complete fields at the start of buf, or 0 when four are not there yet. */
static int four_fields(const unsigned char *buf, size_t len)
{
    size_t pos = 0;
    for (int i = 0; i < 4; i++) {
        if (pos + 2 > len) return 0;
        size_t n = ((size_t)buf[pos] << 8) | buf[pos + 1];
        pos += 2 + n;
        if (pos > len) return 0;
    }
    return 1;
}

static void *serve(void *arg)
{
    (void)arg;
    static const unsigned char ok[] = {0, 2, 'O', 'K'};
    unsigned char buf[4096];
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept4");
            exit(1);
        }
        size_t have = 0;
        while (have < sizeof buf) {
            ssize_t n = read(fd, buf + have, sizeof buf - have);
            if (n <= 0) break;
            have += (size_t)n;
            if (complete(buf, have)) {
                if (http) {
                    if (write(fd, http_ok, sizeof http_ok - 1) < 0) break;
                    /* As saslgated: the client closes first (TIME_WAIT on its side). */
                    while (read(fd, buf, sizeof buf) > 0) {
                    }
                } else if (write(fd, ok, sizeof ok) < 0) {
                    break;
                }
                break;
            }
        }
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--http") == 0) {
        http = 1;
        argv++;
        argc--;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s [--http] SOCKET|IP:PORT [NTHREADS]\n", argv[0]);
        return 2;
    }
    int nthreads = argc > 2 ? atoi(argv[2]) : 5;
    const char *colon = strrchr(argv[1], ':');
    if (argv[1][0] != '/' && colon) {
        struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
        char host[64];
        snprintf(host, sizeof host, "%.*s", (int)(colon - argv[1]), argv[1]);
        int one = 1;
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || inet_pton(AF_INET, host, &si.sin_addr) != 1 ||
            setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(lfd, (struct sockaddr *)&si, sizeof si) < 0 || listen(lfd, 1024) < 0) {
            perror("listen");
            return 1;
        }
    } else {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(argv[1]) >= sizeof sa.sun_path) return 2;
        strcpy(sa.sun_path, argv[1]);
        unlink(argv[1]);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0) {
            perror("listen");
            return 1;
        }
    }
    pthread_t t;
    for (int i = 1; i < nthreads; i++)
        if (pthread_create(&t, NULL, serve, NULL)) return 1;
    serve(NULL);
    return 0;
}
