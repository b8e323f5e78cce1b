/*
 * In-process PLAIN through the real libsasl2, against PostgreSQL: saslgate's
 * plugin (an app password; its configuration names a PostgreSQL database)
 * against libsasl2's own `sql` auxprop (Debian libsasl2-modules-sql,
 * sql_engine pgsql, a plaintext password column) on the same server, in one
 * process and one run. Each login is a whole SASL connection
 * (sasl_server_new + sasl_server_start("PLAIN") + sasl_dispose). The paths
 * alternate in time-boxed rounds so that other load hits both alike.
 *
 * Environment (scripts/bench-pg.sh sets it):
 *   PLUGDIR                  libsaslgate.so, libplain.so, libsql.so
 *   SQL_HOSTNAMES SQL_USER SQL_PASSWD SQL_DATABASE SQL_SELECT   the sql auxprop
 *   STOCK_USER STOCK_PW      a row of the sql auxprop's table
 *   SG_CONF SG_USER SG_PW    saslgate's configuration and an app password
 *                            (SG_CONF empty: only the stock path is measured)
 * Usage: plain_sql SECONDS_PER_ROUND ROUNDS
 * Prints one line per path: "<name> <logins> <seconds> <failures>".
 */
#define _GNU_SOURCE
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *plugdir;

static int answer(const char *value, const char **result, unsigned *len)
{
    if (!value) return SASL_FAIL;
    *result = value;
    if (len) *len = (unsigned)strlen(value);
    return SASL_OK;
}

/* Process-wide options: the stock PLAIN verifies against the sql auxprop. */
static int global_getopt(void *context, const char *plugin_name, const char *option,
                         const char **result, unsigned *len)
{
    static const struct {
        const char *option, *env;
    } from_env[] = {
        {"sql_hostnames", "SQL_HOSTNAMES"}, {"sql_user", "SQL_USER"},
        {"sql_passwd", "SQL_PASSWD"},       {"sql_database", "SQL_DATABASE"},
        {"sql_select", "SQL_SELECT"},
    };
    size_t i;
    (void)context;
    (void)plugin_name;
    if (!strcmp(option, "mech_list")) return answer("PLAIN", result, len);
    if (!strcmp(option, "pwcheck_method")) return answer("auxprop", result, len);
    if (!strcmp(option, "auxprop_plugin")) return answer("sql", result, len);
    if (!strcmp(option, "sql_engine")) return answer("pgsql", result, len);
    if (!strcmp(option, "sql_usessl")) return answer("no", result, len);
    for (i = 0; i < sizeof from_env / sizeof from_env[0]; i++)
        if (!strcmp(option, from_env[i].option)) return answer(getenv(from_env[i].env), result, len);
    return SASL_FAIL;
}

/* Per connection: saslgate is enabled only where the connection names its
 * config, and there the auxprop is saslgate's own, as doc/plugin.md
 * configures it (else every login would also open a connection for the sql
 * auxprop's lookup of the user). */
static int conn_getopt(void *context, const char *plugin_name, const char *option,
                       const char **result, unsigned *len)
{
    (void)plugin_name;
    if (context && !strcmp(option, "saslgate_config")) return answer(context, result, len);
    if (context && !strcmp(option, "auxprop_plugin")) return answer("saslgate", result, len);
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

static int login(const char *service, const char *conf, const char *user, const char *pw)
{
    sasl_callback_t cbs[2] = {
        {SASL_CB_GETOPT, (cb_fn)(void (*)(void))conn_getopt, (void *)conf},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    sasl_conn_t *conn = NULL;
    char msg[512];
    const char *out;
    unsigned outlen;
    int n, rc = sasl_server_new(service, "sgtest.example", NULL, "127.0.0.1;25",
                                "127.0.0.1;40000", cbs, 0, &conn);
    if (rc != SASL_OK) return rc;
    n = snprintf(msg, sizeof msg, "%c%s%c%s", 0, user, 0, pw);
    rc = sasl_server_start(conn, "PLAIN", msg, (unsigned)n, &out, &outlen);
    sasl_dispose(&conn);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct path {
    const char *name, *service, *conf, *user, *pw;
    long logins, failures;
    double seconds;
};

/* Logins on one path for `seconds`. */
static void run_for(struct path *p, double seconds)
{
    double t0 = now_s(), t;
    do {
        if (login(p->service, p->conf, p->user, p->pw) != SASL_OK) p->failures++;
        p->logins++;
        t = now_s();
    } while (t - t0 < seconds);
    p->seconds += t - t0;
}

int main(int argc, char **argv)
{
    double per = argc > 1 ? atof(argv[1]) : 3;
    int rounds = argc > 2 ? atoi(argv[2]) : 3, r, i, npaths = 0;
    const char *sg_conf = getenv("SG_CONF");
    struct path paths[2];
    plugdir = getenv("PLUGDIR");
    if (!plugdir || !getenv("STOCK_USER") || !getenv("STOCK_PW") || per <= 0 || rounds < 1) {
        fprintf(stderr, "run scripts/bench-pg.sh\n");
        return 2;
    }
    if (sg_conf && *sg_conf)
        paths[npaths++] = (struct path){"saslgate", "imap", sg_conf, getenv("SG_USER"),
                                        getenv("SG_PW"), 0, 0, 0};
    paths[npaths++] = (struct path){"sql", "stock", NULL, getenv("STOCK_USER"),
                                    getenv("STOCK_PW"), 0, 0, 0};
    if (sasl_server_init(global_cbs, "sgbench") != SASL_OK) return 1;
    /* Warm-up: one login each, which must succeed (else the figures mean nothing). */
    for (i = 0; i < npaths; i++) {
        int rc = login(paths[i].service, paths[i].conf, paths[i].user, paths[i].pw);
        if (rc != SASL_OK) {
            fprintf(stderr, "%s: warm-up login failed: %s\n", paths[i].name,
                    sasl_errstring(rc, NULL, NULL));
            return 1;
        }
    }
    for (r = 0; r < rounds; r++)
        for (i = 0; i < npaths; i++) run_for(&paths[i], per);
    sasl_done();
    for (i = 0; i < npaths; i++)
        printf("%s %ld %.3f %ld\n", paths[i].name, paths[i].logins, paths[i].seconds,
               paths[i].failures);
    return 0;
}
