/*
 * Load driver for tests/wal_bound.rs: SASL PLAIN logins through the real
 * libsasl2 server with libsaslgate.so as its plugin, in a loop, for a while.
 *
 *   wal_load PLUGDIR SASLGATE_CONFIG SECONDS CLIENT_IP USER PASSWORD ok|no
 *
 * Each login is a fresh connection (sasl_server_new, sasl_server_start PLAIN,
 * sasl_dispose), as a mail server makes one per client. "no": the password
 * is varied per attempt (a guesser), and every answer must be a refusal.
 * "ok": every answer must be SASL_OK. Prints "logins=N ok=N no=N other=N
 * first_other=RC" and exits 0 only if every answer was the expected kind.
 * With WAL_LOAD_NO_DONE set it exits without sasl_done, as Postfix smtpd does.
 */
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *plugdir, *sg_config;

static int set_result(const char *value, const char **result, unsigned *len)
{
    *result = value;
    if (len) *len = (unsigned)strlen(value);
    return SASL_OK;
}

static int global_getopt(void *context, const char *plugin_name, const char *option,
                         const char **result, unsigned *len)
{
    (void)context;
    (void)plugin_name;
    if (!strcmp(option, "mech_list")) return set_result("PLAIN", result, len);
    if (!strcmp(option, "pwcheck_method")) return set_result("auxprop", result, len);
    if (!strcmp(option, "auxprop_plugin")) return set_result("saslgate", result, len);
    if (!strcmp(option, "saslgate_config")) return set_result(sg_config, result, len);
    return SASL_FAIL;
}

static int getpath_cb(void *context, const char **path)
{
    (void)context;
    *path = plugdir;
    return SASL_OK;
}

/* libsasl2's log: dropped (a refusal is logged at every attempt). */
static int log_cb(void *context, int level, const char *message)
{
    (void)context;
    (void)level;
    (void)message;
    return SASL_OK;
}

typedef int (*cb_fn)(void);

static sasl_callback_t global_cbs[] = {
    {SASL_CB_GETOPT, (cb_fn)(void (*)(void))global_getopt, NULL},
    {SASL_CB_GETPATH, (cb_fn)(void (*)(void))getpath_cb, NULL},
    {SASL_CB_LOG, (cb_fn)(void (*)(void))log_cb, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s PLUGDIR CONFIG SECONDS IP USER PASSWORD ok|no\n", argv[0]);
        return 2;
    }
    plugdir = argv[1];
    sg_config = argv[2];
    double seconds = atof(argv[3]);
    const char *ip = argv[4], *user = argv[5], *password = argv[6];
    int want_ok = !strcmp(argv[7], "ok");
    char remote[80];
    snprintf(remote, sizeof remote, "%s;40000", ip);

    int rc = sasl_server_init(global_cbs, "wal_load");
    if (rc != SASL_OK) {
        printf("sasl_server_init: %d\n", rc);
        return 2;
    }
    long logins = 0, ok = 0, no = 0, other = 0;
    int first_other = 0;
    double end = now_s() + seconds;
    while (now_s() < end) {
        sasl_conn_t *conn = NULL;
        rc = sasl_server_new("imap", "wal.example", NULL, "127.0.0.1;143", remote, NULL, 0,
                             &conn);
        if (rc != SASL_OK) {
            printf("sasl_server_new: %d\n", rc);
            return 2;
        }
        char pw[256], msg[600];
        if (want_ok)
            snprintf(pw, sizeof pw, "%s", password);
        else
            snprintf(pw, sizeof pw, "%s-%ld", password, logins);
        size_t u = strlen(user), p = strlen(pw);
        msg[0] = 0; /* empty authzid */
        memcpy(msg + 1, user, u);
        msg[1 + u] = 0;
        memcpy(msg + 2 + u, pw, p);
        const char *out = NULL;
        unsigned outlen = 0;
        rc = sasl_server_start(conn, "PLAIN", msg, (unsigned)(u + p + 2), &out, &outlen);
        logins++;
        if (rc == SASL_OK)
            ok++;
        else if (rc == SASL_BADAUTH || rc == SASL_NOUSER || rc == SASL_NOAUTHZ ||
                 rc == SASL_TRYAGAIN || rc == SASL_DISABLED || rc == SASL_NOVERIFY)
            no++;
        else {
            if (!other) first_other = rc;
            other++;
        }
        sasl_dispose(&conn);
    }
    if (!getenv("WAL_LOAD_NO_DONE")) sasl_done();
    printf("logins=%ld ok=%ld no=%ld other=%ld first_other=%d\n", logins, ok, no, other,
           first_other);
    if (want_ok) return (ok == logins && logins > 0) ? 0 : 1;
    return (ok == 0 && other == 0 && logins > 0) ? 0 : 1;
}
