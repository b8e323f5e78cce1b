/*
 * Drives the real libsasl2 (server side) with a plugin directory holding
 * libsaslgate.so next to the stock libplain.so, liblogin.so and libsasldb.so.
 *
 * Services (per-connection getopt callbacks):
 *   imap, smtp  saslgate_config: $SG_CONF          (saslgate decides)
 *   pop         saslgate_config: $SG_CONF_THROTTLE (same DB, tiny failure budget)
 *   sieve       saslgate_config: $SG_CONF_TLS (same DB, tls_required = ["sieve"])
 *   stock       no saslgate option: must behave like stock PLAIN/LOGIN + sasldb
 * Global options: mech_list "PLAIN LOGIN", pwcheck_method auxprop,
 * auxprop_plugin "sasldb saslgate", sasldb_path $SASLDB.
 *
 * Usage: sasl_plugin_test [all|basic|fork|threads]   (run.sh sets the environment)
 */
#define _GNU_SOURCE
#include <sasl/sasl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const char *plugdir, *sasldb, *sg_conf, *sg_conf_throttle, *sg_conf_tls;
static FILE *logfile;

/* ---- callbacks ---- */

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
    if (!strcmp(option, "auxprop_plugin")) return set_result("sasldb saslgate", result, len);
    if (!strcmp(option, "sasldb_path")) return set_result(sasldb, result, len);
    if (!strcmp(option, "log_level")) return set_result("5", result, len);
    return SASL_FAIL;
}

/* context: the saslgate_config path for this service, or NULL */
static int conn_getopt(void *context, const char *plugin_name, const char *option,
                       const char **result, unsigned *len)
{
    (void)plugin_name;
    if (context && !strcmp(option, "saslgate_config"))
        return set_result((const char *)context, result, len);
    return SASL_FAIL;
}

static int log_cb(void *context, int level, const char *message)
{
    (void)context;
    if (logfile && level <= SASL_LOG_DEBUG) {
        fprintf(logfile, "[%d] %s\n", level, message);
        fflush(logfile);
    }
    return SASL_OK;
}

static int getpath_cb(void *context, const char **path)
{
    (void)context;
    *path = plugdir;
    return SASL_OK;
}

static int allow_proxy(sasl_conn_t *conn, void *context, const char *requested_user,
                       unsigned rlen, const char *auth_identity, unsigned alen,
                       const char *def_realm, unsigned urlen, struct propctx *propctx)
{
    (void)conn; (void)context; (void)requested_user; (void)rlen;
    (void)auth_identity; (void)alen; (void)def_realm; (void)urlen; (void)propctx;
    return SASL_OK;
}

typedef int (*cb_fn)(void);

static sasl_callback_t global_cbs[] = {
    {SASL_CB_GETOPT, (cb_fn)(void (*)(void))global_getopt, NULL},
    {SASL_CB_LOG, (cb_fn)(void (*)(void))log_cb, NULL},
    {SASL_CB_GETPATH, (cb_fn)(void (*)(void))getpath_cb, NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

static const char *service_config(const char *service)
{
    if (!strcmp(service, "imap") || !strcmp(service, "smtp")) return sg_conf;
    if (!strcmp(service, "pop")) return sg_conf_throttle;
    if (!strcmp(service, "sieve")) return sg_conf_tls;
    return NULL; /* "stock" and anything else: saslgate not enabled */
}

struct conn {
    sasl_conn_t *conn;
    sasl_callback_t cbs[3];
};

static int conn_open(struct conn *c, const char *service, const char *ip, int proxy_ok)
{
    char remote[64];
    int n = 0;
    c->cbs[n].id = SASL_CB_GETOPT;
    c->cbs[n].proc = (cb_fn)(void (*)(void))conn_getopt;
    c->cbs[n].context = (void *)service_config(service);
    n++;
    if (proxy_ok) {
        c->cbs[n].id = SASL_CB_PROXY_POLICY;
        c->cbs[n].proc = (cb_fn)(void (*)(void))allow_proxy;
        c->cbs[n].context = NULL;
        n++;
    }
    c->cbs[n].id = SASL_CB_LIST_END;
    c->cbs[n].proc = NULL;
    c->cbs[n].context = NULL;
    snprintf(remote, sizeof remote, "%s;40000", ip ? ip : "127.0.0.1");
    c->conn = NULL;
    return sasl_server_new(service, "sgtest.example", NULL, "127.0.0.1;143", remote, c->cbs, 0,
                           &c->conn);
}

static void conn_close(struct conn *c)
{
    sasl_dispose(&c->conn);
}

/* ---- exchanges ---- */

struct outcome {
    int rc;
    char user[256];
    char source[256];
    char detail[256];
};

static void fill_outcome(struct conn *c, struct outcome *o)
{
    const void *p = NULL;
    o->user[0] = o->source[0] = o->detail[0] = 0;
    if (o->rc == SASL_OK) {
        if (sasl_getprop(c->conn, SASL_USERNAME, &p) == SASL_OK && p)
            snprintf(o->user, sizeof o->user, "%s", (const char *)p);
        p = NULL;
        if (sasl_getprop(c->conn, SASL_AUTHSOURCE, &p) == SASL_OK && p)
            snprintf(o->source, sizeof o->source, "%s", (const char *)p);
    } else {
        snprintf(o->detail, sizeof o->detail, "%s", sasl_errdetail(c->conn));
    }
}

/* PLAIN with an explicit message (may contain NULs) */
static struct outcome plain_raw(const char *service, const char *ip, const char *msg, unsigned len,
                                int proxy_ok)
{
    struct outcome o;
    struct conn c;
    const char *out = NULL;
    unsigned outlen = 0;
    memset(&o, 0, sizeof o);
    o.rc = conn_open(&c, service, ip, proxy_ok);
    if (o.rc != SASL_OK) return o;
    o.rc = sasl_server_start(c.conn, "PLAIN", msg, len, &out, &outlen);
    fill_outcome(&c, &o);
    conn_close(&c);
    return o;
}

static struct outcome plain_ip(const char *service, const char *ip, const char *authz,
                               const char *authc, const char *pw, int proxy_ok)
{
    char msg[1024];
    size_t a = strlen(authz), b = strlen(authc), p = strlen(pw);
    if (a + b + p + 2 > sizeof msg) abort();
    memcpy(msg, authz, a);
    msg[a] = 0;
    memcpy(msg + a + 1, authc, b);
    msg[a + 1 + b] = 0;
    memcpy(msg + a + b + 2, pw, p);
    return plain_raw(service, ip, msg, (unsigned)(a + b + p + 2), proxy_ok);
}

static struct outcome plain(const char *service, const char *user, const char *pw)
{
    return plain_ip(service, NULL, "", user, pw, 0);
}

/* LOGIN: the two-step Username:/Password: exchange */
static struct outcome login(const char *service, const char *user, const char *pw,
                            int initial_response)
{
    struct outcome o;
    struct conn c;
    const char *out = NULL;
    unsigned outlen = 0;
    memset(&o, 0, sizeof o);
    o.rc = conn_open(&c, service, NULL, 0);
    if (o.rc != SASL_OK) return o;
    if (initial_response) {
        o.rc = sasl_server_start(c.conn, "LOGIN", user, (unsigned)strlen(user), &out, &outlen);
    } else {
        o.rc = sasl_server_start(c.conn, "LOGIN", NULL, 0, &out, &outlen);
        CHECK(o.rc == SASL_CONTINUE && out && outlen == 9 && !memcmp(out, "Username:", 9),
              "LOGIN first challenge: rc %d, want Username:", o.rc);
        if (o.rc == SASL_CONTINUE)
            o.rc = sasl_server_step(c.conn, user, (unsigned)strlen(user), &out, &outlen);
    }
    CHECK(o.rc == SASL_CONTINUE && out && outlen == 9 && !memcmp(out, "Password:", 9),
          "LOGIN second challenge: rc %d, want Password:", o.rc);
    if (o.rc == SASL_CONTINUE)
        o.rc = sasl_server_step(c.conn, pw, (unsigned)strlen(pw), &out, &outlen);
    fill_outcome(&c, &o);
    conn_close(&c);
    return o;
}

static int user_exists(const char *service, const char *ip, const char *user)
{
    struct conn c;
    int rc = conn_open(&c, service, ip, 0);
    if (rc != SASL_OK) return rc;
    rc = sasl_user_exists(c.conn, NULL, NULL, user);
    conn_close(&c);
    return rc;
}

/* sasl_user_exists on a connection whose external security layer (TLS, as a
 * server sets it after STARTTLS) has strength `ssf`. */
static int user_exists_ssf(const char *service, const char *user, sasl_ssf_t ssf)
{
    struct conn c;
    int rc = conn_open(&c, service, NULL, 0);
    if (rc != SASL_OK) return rc;
    rc = sasl_setprop(c.conn, SASL_SSF_EXTERNAL, &ssf);
    if (rc == SASL_OK) rc = sasl_user_exists(c.conn, NULL, NULL, user);
    conn_close(&c);
    return rc;
}

#define EXPECT(o, want, what)                                                           \
    CHECK((o).rc == (want), "%s: got %d (%s) want %d (%s); detail: %s", what, (o).rc,   \
          sasl_errstring((o).rc, NULL, NULL), want, sasl_errstring(want, NULL, NULL),    \
          (o).detail)

#define EXPECT_RC(rc, want, what)                                                   \
    CHECK((rc) == (want), "%s: got %d (%s) want %d (%s)", what, rc,                 \
          sasl_errstring(rc, NULL, NULL), want, sasl_errstring(want, NULL, NULL))

/* ---- tests ---- */

static void test_listmech(void)
{
    struct conn c;
    const char *list = NULL;
    unsigned plen = 0;
    int count = 0, rc;
    rc = conn_open(&c, "imap", NULL, 0);
    EXPECT_RC(rc, SASL_OK, "sasl_server_new");
    rc = sasl_listmech(c.conn, NULL, "", " ", "", &list, &plen, &count);
    EXPECT_RC(rc, SASL_OK, "sasl_listmech");
    CHECK(list && !strcmp(list, "PLAIN LOGIN") && count == 2,
          "sasl_listmech lists PLAIN and LOGIN once each: got \"%s\" (%d)", list ? list : "(null)",
          count);
    printf("sasl_listmech: %s\n", list ? list : "(null)");
    conn_close(&c);
}

static void test_saslgate_plain(void)
{
    const char *app = need_env("APP_IMAP"), *alice = need_env("ALICE_PW");
    const char *bob = need_env("BOB_PW"), *totp = need_env("BOB_TOTP");
    const char *carol = need_env("CAROL_PW");
    const char *bobuser = getenv("BOB_USER") ? getenv("BOB_USER") : "bob";
    char buf[512];
    struct outcome o;

    o = plain("imap", "alice", app);
    EXPECT(o, SASL_OK, "PLAIN app password on its service (imap)");
    CHECK(!strcmp(o.user, "alice"), "authenticated user: %s", o.user);
    CHECK(strstr(o.source, "saslgate") != NULL, "PLAIN served by saslgate: authsource %s", o.source);
    printf("PLAIN imap app password: SASL_OK, user %s, authsource %s\n", o.user, o.source);

    o = plain("imap", "Alice", app);
    EXPECT(o, SASL_OK, "PLAIN login name case-folded");
    CHECK(!strcmp(o.user, "alice"), "canonical account name: %s", o.user);

    /* a login alias (saslgate alias add alice alice.liddell): libsasl2 is told
     * the canonical account, so the server opens alice's mailbox */
    o = plain("imap", "Alice.Liddell", app);
    EXPECT(o, SASL_OK, "PLAIN by login alias");
    CHECK(!strcmp(o.user, "alice"), "alias canonicalised to the account: %s", o.user);
    o = login("imap", "alice.liddell", alice, 0);
    EXPECT(o, SASL_OK, "LOGIN by login alias");
    CHECK(!strcmp(o.user, "alice"), "LOGIN alias canonicalised to the account: %s", o.user);
    o = plain("imap", "alice.liddell", "wrong password");
    EXPECT(o, SASL_BADAUTH, "PLAIN by login alias, wrong password");

    o = plain("smtp", "alice", app);
    EXPECT(o, SASL_NOAUTHZ, "PLAIN app password on another service (smtp)");
    CHECK(strstr(o.detail, "not allowed") != NULL, "reason says not allowed: %s", o.detail);

    o = plain("imap", "alice", alice);
    EXPECT(o, SASL_OK, "PLAIN master password");

    o = plain("imap", "alice", "wrong password");
    EXPECT(o, SASL_BADAUTH, "PLAIN wrong password");

    o = plain("imap", "nobody", "whatever");
    EXPECT(o, SASL_BADAUTH, "PLAIN unknown account answers like a wrong password");

    o = plain("imap", "carol", carol);
    EXPECT(o, SASL_DISABLED, "PLAIN disabled account");

    o = plain("imap", bobuser, bob);
    EXPECT(o, SASL_BADAUTH, "PLAIN two-step account, master password alone");
    snprintf(buf, sizeof buf, "%s%s", bob, totp);
    o = plain("imap", bobuser, buf);
    EXPECT(o, SASL_OK, "PLAIN two-step: master password + oathtool TOTP code");
    o = plain("imap", bobuser, buf);
    EXPECT(o, SASL_BADAUTH, "PLAIN two-step: the same TOTP code a second time");

    /* authorization identity: like stock PLAIN */
    o = plain_ip("imap", NULL, "alice", "alice", app, 0);
    EXPECT(o, SASL_OK, "PLAIN authzid == authcid");
    /* libsasl2's default proxy policy answers SASL_BADAUTH, as with stock PLAIN */
    o = plain_ip("imap", NULL, "bob", "alice", app, 0);
    EXPECT(o, SASL_BADAUTH, "PLAIN authzid != authcid, default proxy policy");
    o = plain_ip("imap", NULL, "bob", "alice", app, 1);
    EXPECT(o, SASL_OK, "PLAIN authzid != authcid, proxy policy allows");
    CHECK(!strcmp(o.user, "bob"), "authorized as the authzid: %s", o.user);
    o = plain_ip("imap", NULL, "carol", "alice", app, 1);
    EXPECT(o, SASL_DISABLED, "PLAIN acting as a disabled account (auxprop gate on authzid)");

    /* malformed messages */
    o = plain_raw("imap", NULL, "alice", 5, 0);
    EXPECT(o, SASL_BADPROT, "PLAIN without separators");
    o = plain_raw("imap", NULL, "\0alice", 6, 0);
    EXPECT(o, SASL_BADPROT, "PLAIN with one separator");
    o = plain_raw("imap", NULL, "\0alice\0pw\0x", 11, 0);
    EXPECT(o, SASL_BADPROT, "PLAIN with data after the password");
    o = plain_raw("imap", NULL, "\0\0pw", 4, 0);
    EXPECT(o, SASL_BADPROT, "PLAIN with an empty authcid");
}

static void test_saslgate_login(void)
{
    const char *app = need_env("APP_SMTP"), *alice = need_env("ALICE_PW");
    struct outcome o;
    o = login("smtp", "alice", app, 0);
    EXPECT(o, SASL_OK, "LOGIN app password (smtp)");
    CHECK(!strcmp(o.user, "alice"), "LOGIN user %s", o.user);
    o = login("smtp", "alice", alice, 1);
    EXPECT(o, SASL_OK, "LOGIN with initial response, master password");
    o = login("smtp", "alice", "nope", 0);
    EXPECT(o, SASL_BADAUTH, "LOGIN wrong password");
    o = login("imap", "alice", app, 0);
    EXPECT(o, SASL_NOAUTHZ, "LOGIN smtp app password on imap");
}

/* One line per scenario: compared by run.sh against the same scenarios run with a
 * plugin directory holding only the stock plugins (mode "stockref"). */
static void trace(FILE *f, const char *name, const struct outcome *o)
{
    if (f) fprintf(f, "%-28s rc=%d user=%s detail=%s\n", name, o->rc, o->user, o->detail);
}

static void stock_scenarios(FILE *f)
{
    const char *dave = need_env("DAVE_PW");
    struct outcome o;
    o = plain("stock", "dave", dave);
    trace(f, "plain ok", &o);
    o = plain("stock", "dave", "wrong");
    trace(f, "plain wrong", &o);
    o = plain("stock", "nobody", "x");
    trace(f, "plain unknown", &o);
    o = plain("stock", "  dave ", dave);
    trace(f, "plain spaces", &o);
    o = plain_ip("stock", NULL, "dave", "dave", dave, 0);
    trace(f, "plain authz same", &o);
    o = plain_ip("stock", NULL, "dave2", "dave", dave, 0);
    trace(f, "plain authz other", &o);
    o = plain_ip("stock", NULL, "dave2", "dave", dave, 1);
    trace(f, "plain authz other allowed", &o);
    o = plain_ip("stock", NULL, "nobody", "dave", dave, 1);
    trace(f, "plain authz unknown", &o);
    o = plain_raw("stock", NULL, "dave", 4, 0);
    trace(f, "plain no separator", &o);
    o = plain_raw("stock", NULL, "\0dave", 5, 0);
    trace(f, "plain one separator", &o);
    o = plain_raw("stock", NULL, "\0dave\0x\0y", 10, 0);
    trace(f, "plain extra data", &o);
    o = plain_raw("stock", NULL, "\0\0x", 3, 0);
    trace(f, "plain empty authcid", &o);
    o = plain_raw("stock", NULL, "\0dave\0", 6, 0);
    trace(f, "plain empty password", &o);
    o = login("stock", "dave", dave, 0);
    trace(f, "login ok", &o);
    o = login("stock", "dave", dave, 1);
    trace(f, "login ok initial response", &o);
    o = login("stock", "dave", "wrong", 0);
    trace(f, "login wrong", &o);
    o = login("stock", "nobody", "x", 0);
    trace(f, "login unknown", &o);
    o.rc = user_exists("stock", NULL, "dave");
    o.user[0] = o.detail[0] = 0;
    trace(f, "user_exists dave", &o);
    o.rc = user_exists("stock", NULL, "nobody");
    trace(f, "user_exists nobody", &o);
}

static void test_stock(void)
{
    const char *dave = need_env("DAVE_PW"), *app = need_env("APP_IMAP");
    const char *tracepath = getenv("STOCK_TRACE");
    FILE *f = tracepath ? fopen(tracepath, "w") : NULL;
    struct outcome o;
    stock_scenarios(f);
    if (f) fclose(f);
    o = plain("stock", "dave", dave);
    EXPECT(o, SASL_OK, "stock service: PLAIN against sasldb");
    CHECK(!strcmp(o.user, "dave"), "stock user %s", o.user);
    printf("PLAIN stock service (sasldb): SASL_OK, user %s, authsource %s\n", o.user, o.source);
    o = plain("stock", "dave", "wrong");
    EXPECT(o, SASL_BADAUTH, "stock service: PLAIN wrong password");
    o = plain("stock", "alice", app);
    CHECK(o.rc != SASL_OK, "stock service does not know saslgate's app passwords (%d)", o.rc);
    o = login("stock", "dave", dave, 0);
    EXPECT(o, SASL_OK, "stock service: LOGIN against sasldb");
}

static void test_auxprop_gate(void)
{
    const char *erin = getenv("ERIN_PW");
    struct outcome o;
    EXPECT_RC(user_exists("imap", NULL, "alice"), SASL_OK, "sasl_user_exists alice");
    EXPECT_RC(user_exists("imap", NULL, "carol"), SASL_DISABLED,
              "auxprop gate: sasl_user_exists on a disabled account");
    EXPECT_RC(user_exists("imap", NULL, "nobody"), SASL_NOUSER,
              "auxprop gate: sasl_user_exists on an unknown account");
    EXPECT_RC(user_exists("smtp", NULL, "frank"), SASL_NOAUTHZ,
              "auxprop gate: service not allowed for this account");
    EXPECT_RC(user_exists("imap", NULL, "frank"), SASL_OK, "auxprop gate: allowed service");
    EXPECT_RC(user_exists("stock", NULL, "carol"), SASL_NOUSER,
              "stock service: the auxprop gate stays out (sasldb does not know carol)");
    EXPECT_RC(user_exists_ssf("sieve", "alice", 0), SASL_ENCRYPT,
              "auxprop gate: tls_required service without TLS");
    EXPECT_RC(user_exists_ssf("sieve", "alice", 256), SASL_OK,
              "auxprop gate: tls_required service over TLS");
    if (erin && *erin) {
        o = plain("imap", "erin", erin);
        EXPECT(o, SASL_OK, "master password set through saslpasswd2 (auxprop store)");
    }
}

static void test_throttle(void)
{
    const char *alice = need_env("ALICE_PW");
    struct outcome o;
    int i;
    char wrong[32];
    for (i = 0; i < 6; i++) {
        /* distinct wrong passwords: a repeated one does not count twice */
        snprintf(wrong, sizeof wrong, "wrong %d", i);
        o = plain_ip("pop", "10.9.9.9", "", "alice", wrong, 0);
    }
    o = plain_ip("pop", "10.9.9.9", "", "alice", alice, 0);
    EXPECT(o, SASL_TRYAGAIN, "throttled client address: temporary failure even with the right password");
    EXPECT_RC(user_exists("pop", "10.9.9.9", "alice"), SASL_TRYAGAIN,
              "auxprop gate: blocked address");
    o = plain_ip("pop", "10.9.9.10", "", "alice", alice, 0);
    EXPECT(o, SASL_OK, "another client address is not throttled");
}

static void test_fork(void)
{
    const char *app = need_env("APP_IMAP");
    struct outcome o = plain("imap", "alice", app);
    pid_t pid;
    int status = 0;
    EXPECT(o, SASL_OK, "before fork");
    pid = fork();
    if (pid == 0) {
        struct outcome c1 = plain("imap", "alice", app);
        struct outcome c2 = plain("imap", "alice", "wrong");
        _exit(c1.rc == SASL_OK && c2.rc == SASL_BADAUTH ? 0 : 1);
    }
    CHECK(pid > 0, "fork");
    if (pid > 0) {
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's logins after fork");
    }
    o = plain("imap", "alice", app);
    EXPECT(o, SASL_OK, "parent after fork");
}

#define THREADS 4
#define PER_THREAD 8

static void *thread_main(void *arg)
{
    long bad = 0;
    int i;
    (void)arg;
    for (i = 0; i < PER_THREAD; i++) {
        struct outcome o = (i % 2) ? login("smtp", "alice", getenv("APP_SMTP"), 1)
                                   : plain("imap", "alice", getenv("APP_IMAP"));
        if (o.rc != SASL_OK) bad++;
        o = plain("stock", "dave", getenv("DAVE_PW"));
        if (o.rc != SASL_OK) bad++;
    }
    return (void *)bad;
}

static void test_threads(void)
{
    pthread_t t[THREADS];
    long total = 0;
    int i;
    for (i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, thread_main, NULL);
    for (i = 0; i < THREADS; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    CHECK(total == 0, "%d threads x %d logins: %ld failed", THREADS, PER_THREAD * 2, total);
}

static int init(void)
{
    int rc = sasl_server_init(global_cbs, "sgtest");
    EXPECT_RC(rc, SASL_OK, "sasl_server_init");
    return rc;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    const char *logpath = getenv("SG_SASL_LOG");
    int all = !strcmp(what, "all");

    plugdir = need_env("PLUGDIR");
    sasldb = need_env("SASLDB");
    sg_conf = need_env("SG_CONF");
    sg_conf_throttle = need_env("SG_CONF_THROTTLE");
    sg_conf_tls = need_env("SG_CONF_TLS");
    if (logpath) logfile = fopen(logpath, "a");

    if (init() != SASL_OK) return check_report("sasl_plugin_test");
    if (!strcmp(what, "atexit")) {
        /* three quick logins, then exit() without sasl_done (as Postfix smtpd
         * does): buffered audit records must still reach the database */
        int k;
        for (k = 0; k < 3; k++) {
            struct outcome o = plain("imap", "frank", "frank master pw");
            EXPECT(o, SASL_OK, "frank on imap");
        }
        exit(check_report("sasl_plugin_test atexit"));
    }
    if (!strcmp(what, "stockref")) {
        /* reference run: plugin directory without saslgate */
        test_stock();
        sasl_done();
        return check_report("sasl_plugin_test stockref");
    }
    if (all || !strcmp(what, "basic")) {
        test_listmech();
        test_saslgate_plain();
        test_saslgate_login();
        test_stock();
        test_auxprop_gate();
        test_throttle();
    }
    if (all || !strcmp(what, "fork")) test_fork();
    if (all || !strcmp(what, "threads")) test_threads();
    sasl_done();

    /* sasl_server_init / sasl_done a second time in the same process */
    if (init() == SASL_OK) {
        struct outcome o = plain("imap", "alice", need_env("APP_IMAP"));
        EXPECT(o, SASL_OK, "after sasl_done + sasl_server_init again: saslgate");
        o = plain("stock", "dave", need_env("DAVE_PW"));
        EXPECT(o, SASL_OK, "after sasl_done + sasl_server_init again: stock");
        sasl_done();
    }
    if (logfile) fclose(logfile);
    return check_report("sasl_plugin_test");
}
