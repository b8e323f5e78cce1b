/*
 * In-process PLAIN through the real libsasl2: saslgate (app password) against the
 * stock PLAIN plugin with the sasldb auxprop (plaintext userPassword), same process,
 * same run, interleaved batches. Each login is a whole SASL connection:
 * sasl_server_new + sasl_server_start("PLAIN") + sasl_dispose.
 * Usage: bench_plain [N]   (scripts/bench-plugin.sh sets the environment)
 */
#define _GNU_SOURCE
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *plugdir, *sasldb, *sg_conf;

static int set_result(const char *value, const char **result, unsigned *len)
{
    if (!value) return SASL_FAIL;
    *result = value;
    if (len) *len = (unsigned)strlen(value);
    return SASL_OK;
}

static int global_getopt(void *context, const char *plugin_name, const char *option,
                         const char **result, unsigned *len)
{
    (void)context;
    (void)plugin_name;
    if (!strcmp(option, "mech_list")) return set_result("PLAIN LOGIN", result, len);
    if (!strcmp(option, "pwcheck_method")) return set_result("auxprop", result, len);
    if (!strcmp(option, "auxprop_plugin")) return set_result("sasldb", result, len);
    if (!strcmp(option, "sasldb_path")) return set_result(sasldb, result, len);
    return SASL_FAIL;
}

static int conn_getopt(void *context, const char *plugin_name, const char *option,
                       const char **result, unsigned *len)
{
    (void)plugin_name;
    if (context && !strcmp(option, "saslgate_config"))
        return set_result((const char *)context, result, len);
    return SASL_FAIL;
}

static int getpath_cb(void *context, const char **path)
{
    (void)context;
    *path = plugdir;
    return SASL_OK;
}

typedef int (*cb_fn)(void);
static sasl_callback_t global_cbs[] = {
    {SASL_CB_GETOPT, (cb_fn)(void (*)(void))global_getopt, NULL},
    {SASL_CB_GETPATH, (cb_fn)(void (*)(void))getpath_cb, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

static int one_login(const char *service, const char *conf, const char *user, const char *pw)
{
    sasl_callback_t cbs[2] = {
        {SASL_CB_GETOPT, (cb_fn)(void (*)(void))conn_getopt, (void *)conf},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    sasl_conn_t *conn = NULL;
    char msg[512];
    const char *out;
    unsigned outlen, len;
    int rc = sasl_server_new(service, "sgtest.example", NULL, "127.0.0.1;25", "127.0.0.1;40000",
                             cbs, 0, &conn);
    if (rc != SASL_OK) return rc;
    len = (unsigned)snprintf(msg, sizeof msg, "%c%s%c%s", 0, user, 0, pw);
    rc = sasl_server_start(conn, "PLAIN", msg, len, &out, &outlen);
    sasl_dispose(&conn);
    return rc;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000, rounds = 10, i, r, fails = 0;
    const char *app = getenv("APP_IMAP"), *dave = getenv("DAVE_PW");
    double t_gate = 0, t_stock = 0, t0, ratio;
    plugdir = getenv("PLUGDIR");
    sasldb = getenv("SASLDB");
    sg_conf = getenv("SG_CONF");
    if (!plugdir || !sasldb || !sg_conf || !app || !dave || n < rounds) {
        fprintf(stderr, "run scripts/bench-plugin.sh\n");
        return 2;
    }
    if (sasl_server_init(global_cbs, "sgbench") != SASL_OK) return 1;
    for (i = 0; i < 50; i++) {
        fails += one_login("imap", sg_conf, "alice", app) != SASL_OK;
        fails += one_login("stock", NULL, "dave", dave) != SASL_OK;
    }
    for (r = 0; r < rounds; r++) {
        t0 = now_us();
        for (i = 0; i < n / rounds; i++) fails += one_login("imap", sg_conf, "alice", app) != SASL_OK;
        t_gate += now_us() - t0;
        t0 = now_us();
        for (i = 0; i < n / rounds; i++) fails += one_login("stock", NULL, "dave", dave) != SASL_OK;
        t_stock += now_us() - t0;
    }
    sasl_done();
    n = (n / rounds) * rounds;
    ratio = t_gate / t_stock;
    printf("logins per path:                      %d (%d interleaved batches)\n", n, rounds);
    printf("saslgate PLAIN, app password:         %8.1f us/login  (%.0f logins/s)\n", t_gate / n,
           n / (t_gate / 1e6));
    printf("stock PLAIN + sasldb (plaintext):     %8.1f us/login  (%.0f logins/s)\n", t_stock / n,
           n / (t_stock / 1e6));
    printf("ratio saslgate / stock:               %8.2f  (target <= 2.00)\n", ratio);
    if (fails) printf("FAILED logins: %d\n", fails);
    return fails ? 1 : 0;
}
