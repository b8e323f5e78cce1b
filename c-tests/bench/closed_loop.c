/*
 * Closed-loop load generator for saslauthd-protocol daemons: C clients each
 * connect, send one 4-field request (one write, as libsasl2 does), read the
 * answer, close; for SECONDS. Prints one JSON line: {"rps":..,"p50_ms":..,
 * "p99_ms":..,"errors":..}. Lighter than saslgate-load, so that the client
 * takes less of the machine from the daemon. Used by scripts/bench-daemon.sh.
 * Usage: closed_loop SOCKET USER PASS SERVICE CONCURRENCY SECONDS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAT (1 << 20)

static struct sockaddr_un sa = {.sun_family = AF_UNIX};
static unsigned char req[4096];
static size_t req_len;
static double seconds;
static volatile int stop;

struct worker {
    pthread_t t;
    unsigned *lat_us; /* latencies in microseconds (capped at MAX_LAT entries) */
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
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc = -1;
    unsigned char ans[512];
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        write(fd, req, req_len) == (ssize_t)req_len) {
        size_t have = 0;
        while (have < sizeof ans) {
            ssize_t n = read(fd, ans + have, sizeof ans - have);
            if (n <= 0) break;
            have += (size_t)n;
            if (have >= 2 && have >= 2 + (size_t)((ans[0] << 8) | ans[1])) {
                rc = (have >= 4 && ans[2] == 'O' && ans[3] == 'K') ? 0 : -1;
                break;
            }
        }
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

static void add(const char *s)
{
    size_t n = strlen(s);
    req[req_len++] = (unsigned char)(n >> 8);
    req[req_len++] = (unsigned char)n;
    memcpy(req + req_len, s, n);
    req_len += n;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s SOCKET USER PASS SERVICE CONCURRENCY SECONDS\n", argv[0]);
        return 2;
    }
    if (strlen(argv[1]) >= sizeof sa.sun_path || strlen(argv[2]) + strlen(argv[3]) + strlen(argv[4]) > 3000)
        return 2;
    strcpy(sa.sun_path, argv[1]);
    add(argv[2]);
    add(argv[3]);
    add(argv[4]);
    add("");
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
    printf("{\"rps\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%zu,\"requests\":%zu}\n", total / took, p50, p99,
           errors, total);
    return errors && !total;
}
