/*
 * Closed-loop load generator for saslgated's auth_http face, shaped like
 * nginx's mail module: C clients each connect (one connection per login),
 * send one GET with the Auth-* headers in one write, read the answer until
 * the server closes, check "Auth-Status: OK"; for SECONDS. Prints one JSON
 * line like closed_loop.c: {"rps":..,"p50_ms":..,"p99_ms":..,"errors":..}.
 * Used by scripts/bench-http.sh.
 * Usage: closed_loop_http ADDR USER PASS PROTOCOL CONCURRENCY SECONDS
 *   ADDR: 127.0.0.1:PORT (TCP) or /path (UNIX socket)
 *   USER and PASS go out escaped as nginx does (space, '%', bytes < 0x20 as %XX).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAT (1 << 20)

static struct sockaddr_un su = {.sun_family = AF_UNIX};
static struct sockaddr_in si = {.sin_family = AF_INET};
static int use_unix;
static char req[4096];
static size_t req_len;
static double seconds;
static volatile int stop;

struct worker {
    pthread_t t;
    unsigned *lat_us;
    size_t n, errors;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one(void)
{
    int fd = socket(use_unix ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc = -1;
    char ans[1024];
    int ok = use_unix ? connect(fd, (struct sockaddr *)&su, sizeof su)
                      : connect(fd, (struct sockaddr *)&si, sizeof si);
    if (ok == 0 && write(fd, req, req_len) == (ssize_t)req_len) {
        size_t have = 0;
        ssize_t n;
        /* As nginx: up to 1024 bytes, done at the empty line (no wait for EOF). */
        while (have < sizeof ans - 1 && (n = read(fd, ans + have, sizeof ans - 1 - have)) > 0) {
            have += (size_t)n;
            ans[have] = 0;
            if (strstr(ans, "\r\n\r\n")) break;
        }
        ans[have] = 0;
        if (strstr(ans, "\r\nAuth-Status: OK\r\n") && strstr(ans, "\r\n\r\n")) rc = 0;
    }
    close(fd);
    return rc;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    while (!stop) {
        double t0 = now();
        if (one() != 0) {
            w->errors++;
            continue;
        }
        if (w->n < MAX_LAT) w->lat_us[w->n] = (unsigned)((now() - t0) * 1e6);
        w->n++;
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* Appends s escaped the way nginx escapes Auth-User and Auth-Pass. */
static void escaped(const char *s)
{
    for (; *s; s++) {
        unsigned char b = (unsigned char)*s;
        if (b <= 0x20 || b == '%')
            req_len += (size_t)snprintf(req + req_len, sizeof req - req_len, "%%%02X", b);
        else
            req[req_len++] = (char)b;
    }
}

static void text(const char *s)
{
    size_t n = strlen(s);
    memcpy(req + req_len, s, n);
    req_len += n;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s ADDR USER PASS PROTOCOL CONCURRENCY SECONDS\n", argv[0]);
        return 2;
    }
    if (strlen(argv[2]) + strlen(argv[3]) > 1000 || strlen(argv[4]) > 16) return 2;
    if (argv[1][0] == '/') {
        if (strlen(argv[1]) >= sizeof su.sun_path) return 2;
        strcpy(su.sun_path, argv[1]);
        use_unix = 1;
    } else {
        char host[64];
        const char *colon = strrchr(argv[1], ':');
        if (!colon || (size_t)(colon - argv[1]) >= sizeof host) return 2;
        memcpy(host, argv[1], (size_t)(colon - argv[1]));
        host[colon - argv[1]] = 0;
        si.sin_port = htons((unsigned short)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &si.sin_addr) != 1) return 2;
    }
    text("GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: ");
    escaped(argv[2]);
    text("\r\nAuth-Pass: ");
    escaped(argv[3]);
    text("\r\nAuth-Protocol: ");
    text(argv[4]);
    text("\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\nClient-Host: [UNAVAILABLE]\r\n\r\n");
    int c = atoi(argv[5]);
    seconds = atof(argv[6]);
    if (c < 1 || seconds <= 0) return 2;
    struct worker *ws = calloc((size_t)c, sizeof *ws);
    for (int i = 0; i < c; i++) {
        ws[i].lat_us = malloc(MAX_LAT * sizeof(unsigned));
        if (!ws[i].lat_us || pthread_create(&ws[i].t, NULL, run, &ws[i])) return 1;
    }
    double t0 = now();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    stop = 1;
    size_t total = 0, errors = 0;
    for (int i = 0; i < c; i++) {
        pthread_join(ws[i].t, NULL);
        errors += ws[i].errors;
    }
    double took = now() - t0;
    unsigned *all = malloc(sizeof(unsigned) * ((size_t)c * MAX_LAT));
    for (int i = 0; i < c; i++) {
        size_t n = ws[i].n < MAX_LAT ? ws[i].n : MAX_LAT;
        memcpy(all + total, ws[i].lat_us, n * sizeof(unsigned));
        total += n;
    }
    qsort(all, total, sizeof *all, cmp);
    double p50 = total ? all[total / 2] / 1000.0 : 0, p99 = total ? all[total * 99 / 100] / 1000.0 : 0;
    double max = total ? all[total - 1] / 1000.0 : 0;
    printf("{\"rps\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%zu,\"requests\":%zu}\n",
           total / took, p50, p99, max, errors, total);
    return errors && !total;
}
