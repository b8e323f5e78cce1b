/* sasl_checkpass through the real libsasl2 with pwcheck_method: saslauthd,
 * pointed at saslgated. Built and run by tests/daemon.rs and tests/realm.rs.
 * usage: checkpass SOCKET SERVICE USER PASSWORD [USER_REALM]
 * USER_REALM is sasl_server_new's user_realm (what Postfix sets from
 * smtpd_sasl_local_domain); without it, NULL, as Cyrus imapd and Postfix's
 * default pass. libsasl2 2.1.28 then sends "user@dom" as login "user" +
 * realm "dom" (cut at the last '@'), and a plain "user" with realm USER_REALM,
 * or an empty realm when there is none (serverFQDN is never sent).
 * exit 0: SASL_OK, 1: SASL_BADAUTH (or another refusal), 3: setup error. */
#include <sasl/sasl.h>
#include <stdio.h>
#include <string.h>

static const char *socket_path;

static int getopt_cb(void *context, const char *plugin_name, const char *option,
                     const char **result, unsigned *len)
{
    (void)context;
    (void)plugin_name;
    if (strcmp(option, "pwcheck_method") == 0) {
        *result = "saslauthd";
    } else if (strcmp(option, "saslauthd_path") == 0) {
        *result = socket_path;
    } else if (strcmp(option, "auxprop_plugin") == 0) {
        *result = "none-here"; /* no sasldb lookups on the side */
    } else {
        return SASL_FAIL;
    }
    if (len) *len = (unsigned)strlen(*result);
    return SASL_OK;
}

static int log_cb(void *context, int level, const char *message)
{
    (void)context;
    if (level <= SASL_LOG_WARN) fprintf(stderr, "libsasl2: %s\n", message);
    return SASL_OK;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s SOCKET SERVICE USER PASSWORD [USER_REALM]\n", argv[0]);
        return 3;
    }
    socket_path = argv[1];
    sasl_callback_t callbacks[] = {
        {SASL_CB_GETOPT, (int (*)(void))(void (*)(void))getopt_cb, NULL},
        {SASL_CB_LOG, (int (*)(void))(void (*)(void))log_cb, NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    int rc = sasl_server_init(callbacks, "saslgate-checkpass");
    if (rc != SASL_OK) {
        fprintf(stderr, "sasl_server_init: %s\n", sasl_errstring(rc, NULL, NULL));
        return 3;
    }
    sasl_conn_t *conn = NULL;
    rc = sasl_server_new(argv[2], "localhost", argc == 6 ? argv[5] : NULL, "127.0.0.1;143",
                         "127.0.0.1;40000", NULL, 0, &conn);
    if (rc != SASL_OK) {
        fprintf(stderr, "sasl_server_new: %s\n", sasl_errstring(rc, NULL, NULL));
        return 3;
    }
    rc = sasl_checkpass(conn, argv[3], (unsigned)strlen(argv[3]), argv[4],
                        (unsigned)strlen(argv[4]));
    printf("sasl_checkpass: %d (%s)\n", rc, sasl_errstring(rc, NULL, NULL));
    sasl_dispose(&conn);
    sasl_done();
    if (rc == SASL_OK) return 0;
    if (rc == SASL_BADAUTH || rc == SASL_NOUSER || rc == SASL_DISABLED || rc == SASL_NOAUTHZ)
        return 1;
    return 3;
}
