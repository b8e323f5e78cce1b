#!/usr/bin/python3
"""saslgate-web's page render time and throughput, printed (not a pass/fail
test). Through real nginx with TLS when nginx is installed (README.Debian's
block), else directly.

    bench.py TARGET_DIR [SECONDS]

For each of concurrency 1 and 32, for SECONDS (default 3): the signed-in
app-password list (10 app passwords) and, through nginx, a static file
served by the same nginx. Prints req/s, p50 and p99. The client is Python
(threads, one keep-alive connection each): at c32 it may itself be the
limit; both targets share it, so the ratio is what to read.
"""

import http.client
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser  # noqa: E402  (its helpers: free_port, until, start_nginx, sg)

TARGET = sys.argv[1]
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
ACCOUNT, PASSWORD = "alice@example.org", "alice web password"


def connect(base):
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def sign_in(base):
    c = connect(base)
    c.request("GET", "/signin")
    r = c.getresponse()
    page = r.read().decode()
    pre = [h.split(";")[0] for k, h in r.getheaders() if k.lower() == "set-cookie"][0]
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf": csrf, "account": ACCOUNT, "password": PASSWORD})
    c.request("POST", "/signin", body, {"Cookie": pre, "Content-Type": "application/x-www-form-urlencoded",
                                        "Sec-Fetch-Site": "same-origin"})
    r = c.getresponse()
    r.read()
    cookie = [h.split(";")[0] for k, h in r.getheaders() if k.lower() == "set-cookie" and h.startswith("__Host-saslgate=")][0]
    return cookie


def load(base, path, cookie, conc):
    times, lock, stop = [], threading.Lock(), time.monotonic() + SECONDS

    def worker():
        c = connect(base)
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            c.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: {r.status}")
            mine.append(time.perf_counter() - t)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(len(times) * p))] * 1000
    return len(times) / took, pct(0.50), pct(0.99)


def main():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="saslgate-web-bench-")
    browser.TARGET = TARGET
    port = browser.free_port()
    conf = f"{tmp}/saslgate.conf"
    with open(conf, "w") as f:
        f.write(f'db = "{tmp}/saslgate.db"\nbcrypt_cost = 4\n[web]\nlisten = "127.0.0.1:{port}"\n')
    browser.sg(conf, "init")
    browser.sg(conf, "user", "add", ACCOUNT)
    browser.sg(conf, "passwd", ACCOUNT, "--stdin", stdin=PASSWORD + "\n")
    for i in range(10):
        browser.sg(conf, "app-password", "add", ACCOUNT, "--label", f"device {i}")
    web = subprocess.Popen([f"{TARGET}/saslgate-web", "--config", conf], stderr=subprocess.DEVNULL)
    browser.started.append(web)
    try:
        import urllib.request
        direct = f"http://127.0.0.1:{port}"
        browser.until("saslgate-web", lambda: urllib.request.urlopen(direct + "/signin", timeout=2).status == 200)
        base = browser.start_nginx(tmp, port) or direct
        cookie = sign_in(base)
        print(f"web-bench: {base}, {SECONDS:g} s per case, Python client threads")
        print(f"  {'what':<42} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for conc in (1, 32):
            cases = [("app-password list, signed in", "/apps", cookie)]
            if base.startswith("https"):
                cases.append(("static file, same nginx", "/static.txt", None))
            for name, path, ck in cases:
                rps, p50, p99 = load(base, path, ck, conc)
                print(f"  {name:<42} {conc:>4} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f}")
    finally:
        for p in browser.started:
            p.terminate()
            p.wait(timeout=10)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
