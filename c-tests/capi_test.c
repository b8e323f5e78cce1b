/*
 * Exercises every function of include/saslgate.h from C, NULL arguments included,
 * plus a shared handle used from several threads and across fork().
 */
#include "saslgate.h"

#include <pthread.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static saslgate_t *shared;
static const char *app_imap;

/* One thread's run: 20 verifications of `thread_login`/`thread_pw` on imap.
 * Returns how many were not SASLGATE_OK; `thread_bad_credentials` counts
 * the answers that said "wrong password" (a paced account must never). */
static const char *thread_login, *thread_pw;
static long thread_bad_credentials;
static pthread_mutex_t thread_lock = PTHREAD_MUTEX_INITIALIZER;

static void *thread_main(void *arg)
{
    long bad = 0;
    int i;
    (void)arg;
    for (i = 0; i < 20; i++) {
        int rc = saslgate_verify(shared, thread_login, thread_pw, "imap", NULL, "127.0.0.1", NULL, 0);
        if (rc != SASLGATE_OK) bad++;
        if (rc == SASLGATE_BAD_CREDENTIALS) {
            pthread_mutex_lock(&thread_lock);
            thread_bad_credentials++;
            pthread_mutex_unlock(&thread_lock);
        }
    }
    return (void *)bad;
}

static long run_threads(pthread_t *t, const char *login, const char *pw)
{
    long total = 0;
    int i;
    thread_login = login;
    thread_pw = pw;
    thread_bad_credentials = 0;
    for (i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_main, NULL);
    for (i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    return total;
}

int main(void)
{
    const char *conf = need_env("SG_CONF"), *db = need_env("SG_DB");
    const char *alice = need_env("ALICE_PW"), *carol = need_env("CAROL_PW");
    char reason[128], err[256], small[6];
    saslgate_t *h = (saslgate_t *)&reason; /* must be reset to NULL on failure */
    pthread_t t[4];
    long total = 0;
    int rc, i;
    pid_t pid;

    app_imap = need_env("APP_IMAP");

    /* version and error strings */
    CHECK(saslgate_version() && *saslgate_version(), "saslgate_version");
    printf("saslgate_version: %s\n", saslgate_version());
    for (i = SASLGATE_OK; i <= SASLGATE_TLS_REQUIRED; i++) {
        const char *s = saslgate_strerror(i);
        CHECK(s && *s, "saslgate_strerror(%d)", i);
    }
    CHECK(!strcmp(saslgate_strerror(SASLGATE_DISABLED), "account disabled"), "strerror text");
    CHECK(!strcmp(saslgate_strerror(SASLGATE_BLOCKED), "access denied"), "strerror of BLOCKED");
    CHECK(!strcmp(saslgate_strerror(SASLGATE_TLS_REQUIRED), "encryption required"), "strerror of TLS_REQUIRED");
    CHECK(saslgate_strerror(-1) && saslgate_strerror(12345), "strerror of unknown codes is not NULL");
    CHECK(strcmp(saslgate_strerror(12345), saslgate_strerror(SASLGATE_OK)) != 0,
          "unknown code has its own text");

    /* open: NULL and failing arguments */
    rc = saslgate_open(conf, NULL, NULL, err, sizeof err);
    CHECK(rc == SASLGATE_INVALID_ARGUMENT, "open with out NULL: %d", rc);
    rc = saslgate_open(NULL, "/nonexistent/dir/saslgate.db", &h, err, sizeof err);
    CHECK(rc == SASLGATE_UNAVAILABLE && h == NULL, "open of a missing database: %d (%s)", rc, err);
    printf("open missing db: %d %s\n", rc, err);
    rc = saslgate_open("/nonexistent/saslgate.conf", NULL, &h, NULL, 0);
    CHECK(rc == SASLGATE_CONFIG && h == NULL, "open of a missing config file: %d", rc);
    rc = saslgate_open(need_env("SG_BAD_CONF"), NULL, &h, err, sizeof err);
    CHECK(rc == SASLGATE_CONFIG, "open of an invalid config file: %d (%s)", rc, err);

    /* open by config, by db path */
    rc = saslgate_open(conf, NULL, &h, err, sizeof err);
    CHECK(rc == SASLGATE_OK && h != NULL, "open by config: %d (%s)", rc, err);
    if (!h) return check_report("capi_test");
    saslgate_close(h);
    rc = saslgate_open(NULL, db, &h, err, sizeof err);
    CHECK(rc == SASLGATE_OK && h != NULL, "open by db path: %d (%s)", rc, err);
    if (!h) return check_report("capi_test");

    /* verify */
    rc = saslgate_verify(h, "alice", app_imap, "imap", NULL, "127.0.0.1;1234", reason, sizeof reason);
    CHECK(rc == SASLGATE_OK && reason[0] == 0, "verify app password: %d (%s)", rc, reason);
    rc = saslgate_verify(h, "alice", app_imap, "smtp", NULL, "127.0.0.1", reason, sizeof reason);
    CHECK(rc == SASLGATE_NOT_ALLOWED, "verify app password on another service: %d", rc);
    CHECK(!strcmp(reason, "not allowed for this service"), "reason: %s", reason);
    rc = saslgate_verify(h, "alice", "wrong", "imap", NULL, "127.0.0.1", reason, sizeof reason);
    CHECK(rc == SASLGATE_BAD_CREDENTIALS, "verify wrong password: %d", rc);
    rc = saslgate_verify(h, "alice", alice, "imap", NULL, NULL, NULL, 0);
    CHECK(rc == SASLGATE_OK, "verify master password, no address, no reason buffer: %d", rc);
    rc = saslgate_verify(h, "carol", carol, "imap", NULL, "127.0.0.1", reason, sizeof reason);
    CHECK(rc == SASLGATE_DISABLED, "verify disabled account: %d (%s)", rc, reason);
    rc = saslgate_verify(h, "alice", alice, "", NULL, NULL, reason, sizeof reason);
    CHECK(rc == SASLGATE_BAD_INPUT, "verify empty service: %d (%s)", rc, reason);
    rc = saslgate_verify(h, "carol", carol, "imap", NULL, "127.0.0.1", small, sizeof small);
    CHECK(rc == SASLGATE_DISABLED && strlen(small) == sizeof small - 1, "reason truncated: \"%s\"", small);

    /* NULL arguments */
    CHECK(saslgate_verify(NULL, "alice", alice, "imap", NULL, NULL, reason, sizeof reason) ==
              SASLGATE_INVALID_ARGUMENT, "verify NULL handle");
    CHECK(reason[0] != 0, "reason for a NULL handle: %s", reason);
    CHECK(saslgate_verify(h, NULL, alice, "imap", NULL, NULL, NULL, 0) == SASLGATE_INVALID_ARGUMENT,
          "verify NULL login");
    CHECK(saslgate_verify(h, "alice", NULL, "imap", NULL, NULL, NULL, 0) == SASLGATE_INVALID_ARGUMENT,
          "verify NULL password");
    CHECK(saslgate_verify(h, "alice", alice, NULL, NULL, NULL, NULL, 0) == SASLGATE_INVALID_ARGUMENT,
          "verify NULL service");
    CHECK(saslgate_verify(h, "alice", alice, "imap", NULL, NULL, reason, 0) == SASLGATE_OK,
          "verify with a zero-length reason buffer");

    /* check_account */
    rc = saslgate_check_account(h, "alice", "imap", NULL, NULL, reason, sizeof reason);
    CHECK(rc == SASLGATE_OK, "check_account alice: %d", rc);
    rc = saslgate_check_account(h, "carol", "imap", NULL, NULL, reason, sizeof reason);
    CHECK(rc == SASLGATE_DISABLED, "check_account carol: %d", rc);
    rc = saslgate_check_account(h, "nobody", "imap", NULL, NULL, reason, sizeof reason);
    CHECK(rc == SASLGATE_NO_SUCH_ACCOUNT, "check_account unknown: %d (%s)", rc, reason);
    rc = saslgate_check_account(h, "frank", "smtp", NULL, NULL, reason, sizeof reason);
    CHECK(rc == SASLGATE_NOT_ALLOWED, "check_account service not allowed: %d", rc);
    CHECK(saslgate_check_account(NULL, "alice", "imap", NULL, NULL, NULL, 0) == SASLGATE_INVALID_ARGUMENT,
          "check_account NULL handle");
    CHECK(saslgate_check_account(h, NULL, "imap", NULL, NULL, NULL, 0) == SASLGATE_INVALID_ARGUMENT,
          "check_account NULL login");

    /* one handle, several threads. frank has no failure on record; alice
     * has (sasl_plugin_test's wrong passwords), so her account is paced:
     * verified one at a time, a request past the waiters refused for now
     * (THROTTLED), never told "wrong password", and the right one gets in. */
    shared = h;
    total = run_threads(t, "frank", need_env("FRANK_PW"));
    CHECK(total == 0, "4 threads x 20 verifications on one handle: %ld failed", total);
    total = run_threads(t, "alice", app_imap);
    printf("paced account, 4 threads x 20: %ld OK, %ld refused for now\n", 80 - total, total);
    CHECK(thread_bad_credentials == 0 && total < 80,
          "paced account, 4 threads x 20: %ld not OK, %ld of them \"wrong password\"", total,
          thread_bad_credentials);

    /* fork: the child uses the parent's handle */
    pid = fork();
    if (pid == 0) {
        int a = saslgate_verify(h, "alice", app_imap, "imap", NULL, NULL, NULL, 0);
        int b = saslgate_verify(h, "alice", "wrong", "imap", NULL, NULL, NULL, 0);
        _exit(a == SASLGATE_OK && b == SASLGATE_BAD_CREDENTIALS ? 0 : 1);
    }
    if (pid > 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "verify in a forked child");
    }
    CHECK(saslgate_verify(h, "alice", app_imap, "imap", NULL, NULL, NULL, 0) == SASLGATE_OK,
          "verify in the parent after fork");

    saslgate_close(h);
    saslgate_close(NULL);
    return check_report("capi_test");
}
