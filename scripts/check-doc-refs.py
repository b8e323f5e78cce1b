#!/usr/bin/env python3
"""The documents name things that exist (issue 23, finding 7): every file path
and every snake_case name (a test, a function, a config key, a column) written in
backticks in README.md, SECURITY.md, doc/*.md and README.Debian must be found in the tree.

- A path (`tests/e2e/run.sh`, `src/engine/`, `Cargo.toml`) must exist relative to
  the repository root or to the document's own directory; a bare file name
  (`face.rs`) must be the name of some tracked file. Absolute paths (`/etc/...`)
  are the installed system's and are not checked; neither are paths with a
  placeholder (`DIR/mux`, `<name>`, `*`, `{...}`).
- A name with an underscore (`own_audit_batches_keep_the_fast_path_in_memory`,
  `proxy_ticket_backends`), and each part of a path name (`Gate::decide`), must occur as a word in a tracked source, test, script
  or packaging file, or be one of OUTSIDE_NAMES (names of libsasl2, nginx and
  PostgreSQL that the code does not spell). `a::b` names check their last part.

Prints one line per stale reference and "doc-refs: N passed, N failed" (one check
per document); exits 1 when any reference is stale.

    scripts/check-doc-refs.py [REPO_ROOT]
"""
import os
import re
import subprocess
import sys

DOCS = ("README.md", "SECURITY.md", "debian/saslgate.README.Debian")
# Names the documents quote from other software, which saslgate's code never spells.
OUTSIDE_NAMES = {
    "ngx_mail_auth_http_module",
    "ngx_mail_proxy_module",
    "smtpd_sasl_auth_enable",
    "smtpd_tls_auth_only",
    "smtpd_sasl_security_options",
    "smtpd_sasl_authenticated_header",
    "smtpd_sasl_path",
    "smtpd_sasl_type",
    "smtpd_client_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_relay_restrictions",
    "broken_sasl_auth_clients",
    "max_wal_senders",
    "synchronous_standby_names",
    "target_session_attrs",
    "wal_keep_size",
    "sasl_pwcheck_method",
    "sasl_mech_list",
    "unix_write_space",  # a Linux kernel function (perf traces)
    "sched_yield",
    "sqlite3_step",
}
# Files of other software that the documents name (configuration files, sources).
OUTSIDE_FILES = {
    "nginx.conf", "pg_hba.conf", "postgresql.conf", "imapd.conf", "cyrus.conf",
    "smtpd.conf", "master.cf", "main.cf", "APPNAME.conf", "plain.c", "login.c",
    "lib/checkpw.c", "saslauthd.conf",
}
NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+){1,}$")
# `Gate::decide`, `Stats::state_reads`, `on_postgresql::*`, `flush()`: each part checked.
QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:::(?:[A-Za-z_][A-Za-z0-9_]*|\*))+(?:\(\))?$")
PATH = re.compile(r"^[A-Za-z0-9_.\-/]+$")
FILE_EXT = re.compile(r"\.(rs|sh|py|c|h|md|toml|conf|service|socket|lock|txt|in|Debian)$")


def tracked(root):
    out = subprocess.run(
        ["git", "-C", root, "ls-files"], capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if f]


def code_words(root, files):
    """Every identifier-like word in the tracked files that are not documents."""
    words = set()
    for f in files:
        if f.endswith(".md") or f.endswith(".lock"):
            continue
        try:
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", fh.read()))
        except OSError:
            continue
    return words


def backticked(text):
    # Fenced blocks are commands and config, not references.
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def stale_refs(root, doc, files, basenames, words):
    with open(os.path.join(root, doc), encoding="utf-8") as fh:
        text = fh.read()
    doc_dir = os.path.dirname(doc)
    bad = []
    for token in backticked(text):
        token = token.strip()
        if QUALIFIED.match(token):
            parts = [p for p in token.rstrip("()").split("::") if p != "*"]
            missing = [p for p in parts if p not in words and p not in OUTSIDE_NAMES]
            if missing and parts[0] not in ("std", "core", "libc", "nix", "tokio"):
                bad.append(f"name `{token}`")
            continue
        if NAME.match(token.split("::")[-1]) and " " not in token:
            name = token.split("::")[-1]
            if name not in words and name not in OUTSIDE_NAMES:
                bad.append(f"name `{token}`")
            continue
        if not PATH.match(token) or token.startswith(("/", "~", "-", ".")):
            continue
        if token in OUTSIDE_FILES or token.startswith("target/"):
            continue
        if "/" in token:
            if re.search(r"(^|/)[A-Z]+(/|$)", token):  # DIR/mux, NAME/...
                continue
            rel = token.rstrip("/")
            # A path may be written from the root, from the document's directory,
            # or from the directory a table row is about (`store/wal_index.rs`).
            if not (
                os.path.exists(os.path.join(root, rel))
                or os.path.exists(os.path.join(root, doc_dir, rel))
                or any(f.endswith("/" + rel) or ("/" + rel + "/") in f for f in files)
            ):
                bad.append(f"path `{token}`")
        elif FILE_EXT.search(token) and not any(
            b == token or b.endswith("." + token) for b in basenames
        ):
            # debian/saslgate.saslgated.socket installs as saslgated.socket.
            bad.append(f"file `{token}`")
    return bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    files = tracked(root)
    basenames = {os.path.basename(f) for f in files}
    words = code_words(root, files)
    docs = [f for f in files if f in DOCS or (f.startswith("doc/") and f.endswith(".md"))]
    passed = failed = 0
    for doc in sorted(docs):
        bad = stale_refs(root, doc, files, basenames, words)
        for b in bad:
            print(f"FAIL {doc}: {b} is not in the tree")
        if bad:
            failed += 1
        else:
            passed += 1
            print(f"ok   {doc}")
    print(f"doc-refs: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
