/*
 * What loading a plugin directory costs one process: the real libsasl2's
 * sasl_server_init + sasl_server_new (which dlopen and initialise every plugin
 * of the directory), timed, and the memory the process has before, after init
 * and after its first PLAIN login, from /proc/self/smaps_rollup. One process
 * measures one start; scripts/bench-plugin-load.sh runs many and takes medians.
 *
 * Environment (the script sets it):
 *   PLUGDIR            the plugin directory (stock plugins, or stock + libsaslgate.so)
 *   SASLDB             the sasldb file of the stock path's user
 *   SG_CONF            saslgate's configuration, given as the global option
 *                      saslgate_config (empty: the login goes to stock PLAIN)
 *   LOGIN_USER LOGIN_PW  the first login
 * Usage: plugin_load
 * Prints one line: "init_us=.. cpu_us=.. rss0=.. pss0=.. dirty0=.. rss1=.. ... dsos=.. login=.."
 * (init_us wall, cpu_us this process's CPU time for the same span; kB; 0 = before init, 1 = after init + server_new, 2 = after the first login).
 */
#define _GNU_SOURCE
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *plugdir, *sasldb, *sg_conf;

static int answer(const char *value, const char **result, unsigned *len)
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
    if (!strcmp(option, "pwcheck_method")) return answer("auxprop", result, len);
    if (!strcmp(option, "auxprop_plugin")) return answer("sasldb", result, len);
    if (!strcmp(option, "sasldb_path")) return answer(sasldb, result, len);
    /* As smtpd.conf / imapd.conf would: the plugin reads it (and opens its
     * database) at sasl_server_init, before a chroot. */
    if (sg_conf && !strcmp(option, "saslgate_config")) return answer(sg_conf, result, len);
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

struct mem {
    long rss, pss, dirty;
};

/* Rss, Pss and Private_Dirty of the whole process, in kB. */
static struct mem mem_now(void)
{
    struct mem m = {-1, -1, -1};
    char line[256];
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return m;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "Rss: %ld", &m.rss);
        sscanf(line, "Pss: %ld", &m.pss);
        sscanf(line, "Private_Dirty: %ld", &m.dirty);
    }
    fclose(f);
    return m;
}

/* Distinct shared objects mapped (pathnames with ".so" in /proc/self/maps). */
static int mapped_objects(void)
{
    char line[1024], seen[128][256];
    int n = 0, i;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (!path || !strstr(path, ".so")) continue;
        path[strcspn(path, "\n")] = 0;
        for (i = 0; i < n && strcmp(seen[i], path); i++)
            ;
        if (i == n && n < 128) snprintf(seen[n++], sizeof seen[0], "%s", path);
    }
    fclose(f);
    return n;
}

/* With PLUGIN_LOAD_SMAPS set: each mapping's Rss and Private_Dirty (kB) to
 * stderr, to see where a difference lives. */
static void dump_mappings(const char *when)
{
    char line[1024], name[512] = "";
    long rss = 0, v;
    size_t hex;
    FILE *f;
    if (!getenv("PLUGIN_LOAD_SMAPS") || !(f = fopen("/proc/self/smaps", "r"))) return;
    fprintf(stderr, "-- %s (Rss, Private_Dirty kB)\n", when);
    while (fgets(line, sizeof line, f)) {
        hex = strspn(line, "0123456789abcdef");
        if (hex >= 8 && line[hex] == '-') { /* a mapping's first line */
            char *p = strchr(line, '/');
            if (!p) p = strchr(line, '[');
            snprintf(name, sizeof name, "%s", p ? p : "[anon]");
            name[strcspn(name, "\n")] = 0;
        } else if (sscanf(line, "Rss: %ld", &v) == 1) {
            rss = v;
        } else if (sscanf(line, "Private_Dirty: %ld", &v) == 1 && rss) {
            fprintf(stderr, "%6ld %6ld %s\n", rss, v, name);
        }
    }
    fclose(f);
}

static double clock_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(void)
{
    const char *user = getenv("LOGIN_USER"), *pw = getenv("LOGIN_PW");
    sasl_conn_t *conn = NULL;
    struct mem m0, m1, m2;
    double t0, t1, c0, c1;
    char msg[512];
    const char *out;
    unsigned outlen, len;
    int rc, login;
    plugdir = getenv("PLUGDIR");
    sasldb = getenv("SASLDB");
    sg_conf = getenv("SG_CONF");
    if (sg_conf && !*sg_conf) sg_conf = NULL;
    if (!plugdir || !sasldb || !user || !pw) {
        fprintf(stderr, "run scripts/bench-plugin-load.sh\n");
        return 2;
    }
    m0 = mem_now();
    c0 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    t0 = clock_us(CLOCK_MONOTONIC);
    rc = sasl_server_init(global_cbs, "sgload");
    if (rc == SASL_OK)
        rc = sasl_server_new("imap", "sgtest.example", NULL, "127.0.0.1;143", "127.0.0.1;40000",
                             NULL, 0, &conn);
    t1 = clock_us(CLOCK_MONOTONIC);
    c1 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    if (rc != SASL_OK) {
        fprintf(stderr, "init: %d\n", rc);
        return 1;
    }
    m1 = mem_now();
    dump_mappings("after init");
    len = (unsigned)snprintf(msg, sizeof msg, "%c%s%c%s", 0, user, 0, pw);
    login = sasl_server_start(conn, "PLAIN", msg, len, &out, &outlen);
    m2 = mem_now();
    dump_mappings("after login");
    printf("init_us=%.1f cpu_us=%.1f rss0=%ld pss0=%ld dirty0=%ld rss1=%ld pss1=%ld dirty1=%ld "
           "rss2=%ld pss2=%ld dirty2=%ld dsos=%d login=%d\n",
           t1 - t0, c1 - c0, m0.rss, m0.pss, m0.dirty, m1.rss, m1.pss, m1.dirty, m2.rss, m2.pss, m2.dirty,
           mapped_objects(), login);
    sasl_dispose(&conn);
    sasl_done();
    return login == SASL_OK ? 0 : 1;
}
