/*
 * saslgate.h - C interface to saslgate's login decisions.
 *
 * Link with -lsaslgate (libsaslgate.so, the same shared object libsasl2 loads as a
 * plugin). Every function is safe to call with NULL arguments (it then returns
 * SASLGATE_INVALID_ARGUMENT, or does nothing for saslgate_close), never aborts the
 * process on bad input, and never writes to stdout or stderr. An internal error (a
 * bug: SASLGATE_INTERNAL) is logged to syslog, facility authpriv, with its location
 * in the source.
 *
 * Threads: one handle may be used by several threads at once for saslgate_verify
 * and saslgate_check_account; saslgate_close must not race with them.
 * fork(): a child may keep using a handle opened by its parent (the database
 * connection is re-opened in the child; the parent's is never used there).
 *
 * Result codes are stable: a value keeps its meaning in every later version and a
 * retired value is never reused.
 *
 * This file is written by hand; tests/plugin_capi.rs (header_matches_the_code)
 * checks every value, name and prototype here against src/ffi/capi.rs.
 */
#ifndef SASLGATE_H
#define SASLGATE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface; bumped only for incompatible changes. */
#define SASLGATE_ABI_VERSION 1

typedef enum saslgate_result {
    SASLGATE_OK = 0,               /* accepted (verify) / account in good standing (check) / opened */
    SASLGATE_BAD_CREDENTIALS = 1,  /* unknown account, wrong password or code: never says which */
    SASLGATE_DISABLED = 2,         /* right credentials, account disabled */
    SASLGATE_NOT_ALLOWED = 3,      /* right credentials, service not allowed for this account/credential */
    SASLGATE_THROTTLED = 4,        /* too many failures from this client address: try later */
    SASLGATE_BAD_INPUT = 5,        /* malformed login, password or service (empty, NUL, bad UTF-8, too long) */
    SASLGATE_NO_SUCH_ACCOUNT = 6,  /* saslgate_check_account only: unknown account */
    SASLGATE_UNAVAILABLE = 7,      /* database unavailable or internal storage error: fail closed */
    SASLGATE_CONFIG = 8,           /* configuration file unreadable or invalid (saslgate_open) */
    SASLGATE_INVALID_ARGUMENT = 9, /* NULL handle or required argument */
    SASLGATE_INTERNAL = 10,        /* internal error (a bug): fail closed */
    SASLGATE_BLOCKED = 11,         /* client address on the admin's block list (saslgate block) */
    SASLGATE_TLS_REQUIRED = 12     /* tls_required service over a plain connection (not from these functions: they cannot tell) */
} saslgate_result;

/* Opaque handle: a saslgate database with its configuration. */
typedef struct saslgate saslgate_t;

/*
 * Opens a handle.
 *   config_path: saslgate configuration file (TOML), or NULL for the built-in
 *                defaults;
 *   db_path:     database path, or NULL for the configuration's "db";
 *   out:         receives the handle (set to NULL on failure);
 *   errbuf:      if not NULL, receives a NUL-terminated message on failure
 *                (truncated to errlen bytes including the NUL).
 * The database is opened and checked now: SASLGATE_UNAVAILABLE if it is missing,
 * unreadable or not a saslgate database; SASLGATE_CONFIG for a bad configuration.
 */
int saslgate_open(const char *config_path, const char *db_path, saslgate_t **out,
                  char *errbuf, size_t errlen);

/*
 * Decides one login. login, password and service are required; realm (e.g.
 * "example.org" for login "alice") and client_addr ("192.0.2.1", "192.0.2.1;4711",
 * "::1") may be NULL. If reason is not NULL it receives a short, client-safe
 * NUL-terminated text (truncated to reason_len bytes), "" on SASLGATE_OK.
 * Returns SASLGATE_OK or a refusal code.
 */
int saslgate_verify(saslgate_t *handle, const char *login, const char *password,
                    const char *service, const char *realm, const char *client_addr,
                    char *reason, size_t reason_len);

/*
 * Account policy only, no password (what the auxprop gate applies to mechanisms
 * saslgate does not verify itself): SASLGATE_OK, SASLGATE_NO_SUCH_ACCOUNT,
 * SASLGATE_DISABLED, SASLGATE_NOT_ALLOWED, SASLGATE_THROTTLED, ...
 */
int saslgate_check_account(saslgate_t *handle, const char *login, const char *service,
                           const char *realm, const char *client_addr,
                           char *reason, size_t reason_len);

/* Closes a handle (writes buffered audit records). NULL is accepted and ignored. */
void saslgate_close(saslgate_t *handle);

/* Static English text for a result code; unknown codes give a generic text.
 * Never NULL. */
const char *saslgate_strerror(int code);

/* Static version string of the library, e.g. "0.1.0". Never NULL. */
const char *saslgate_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SASLGATE_H */
