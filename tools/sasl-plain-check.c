/*
 * sasl-plain-check: one server-side SASL PLAIN login through the real libsasl2,
 * configured the way Postfix and Cyrus configure it: a plugin directory and a
 * SERVICE.conf file (e.g. "mech_list: PLAIN LOGIN" and "saslgate_config: ...").
 * Used by scripts/demo.sh to show libsaslgate.so answering libsasl2.
 *
 *   sasl-plain-check PLUGIN_DIR CONF_DIR SERVICE USER PASSWORD [CLIENT_IP]
 *
 * Prints the mechanism list, the result code name and libsasl2's error detail.
 * Exit status: 0 accepted, 1 refused, 2 usage or setup error.
 */
#include <sasl/sasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: %s PLUGIN_DIR CONF_DIR SERVICE USER PASSWORD [CLIENT_IP]\n", argv[0]);
        return 2;
    }
    const char *plugins = argv[1], *confdir = argv[2], *service = argv[3];
    const char *user = argv[4], *pass = argv[5];
    char remote[80];
    snprintf(remote, sizeof remote, "%s;40000", argc == 7 ? argv[6] : "127.0.0.1");

    if (sasl_set_path(SASL_PATH_TYPE_PLUGIN, (char *)plugins) != SASL_OK ||
        sasl_set_path(SASL_PATH_TYPE_CONFIG, (char *)confdir) != SASL_OK) {
        fprintf(stderr, "sasl_set_path failed\n");
        return 2;
    }
    int rc = sasl_server_init(NULL, service);
    if (rc != SASL_OK) {
        fprintf(stderr, "sasl_server_init: %s\n", sasl_errstring(rc, NULL, NULL));
        return 2;
    }
    sasl_conn_t *conn = NULL;
    rc = sasl_server_new(service, "demo.saslgate.test", NULL, "127.0.0.1;143", remote, NULL, 0, &conn);
    if (rc != SASL_OK) {
        fprintf(stderr, "sasl_server_new: %s\n", sasl_errstring(rc, NULL, NULL));
        return 2;
    }
    const char *mechs = NULL;
    unsigned mechlen = 0;
    int count = 0;
    sasl_listmech(conn, NULL, "", " ", "", &mechs, &mechlen, &count);
    const void *source = NULL;

    /* RFC 4616 message: authzid NUL authcid NUL password */
    size_t ulen = strlen(user), plen = strlen(pass);
    char *msg = malloc(ulen + plen + 2);
    if (!msg)
        return 2;
    msg[0] = '\0';
    memcpy(msg + 1, user, ulen);
    msg[1 + ulen] = '\0';
    memcpy(msg + 2 + ulen, pass, plen);
    const char *out = NULL;
    unsigned outlen = 0;
    rc = sasl_server_start(conn, "PLAIN", msg, (unsigned)(ulen + plen + 2), &out, &outlen);
    memset(msg, 0, ulen + plen + 2);
    free(msg);
    if (rc == SASL_OK)
        sasl_getprop(conn, SASL_AUTHSOURCE, &source);
    printf("mechanisms: %s | %s/%s: %s%s%s (authsource %s)\n", mechs ? mechs : "?", service, user,
           sasl_errstring(rc, NULL, NULL), rc == SASL_OK ? "" : " - ",
           rc == SASL_OK ? "" : sasl_errdetail(conn), source ? (const char *)source : "-");
    sasl_dispose(&conn);
    sasl_done();
    return rc == SASL_OK ? 0 : 1;
}
