#!/usr/bin/python3
"""saslgate-web in a real browser (Debian's chromium through chromedriver,
WebDriver via python3-selenium), run by tests/web/run.sh.

Signs in, creates an app password, reads it off the page and logs in with it
through the real testsaslauthd (asking saslgated) and the real libsasl2 with
libsaslgate.so; enrols TOTP by reading the secret off the page and computing
codes with oathtool, signs in again with password + code; revokes; signs out;
a stale form after sign-out is refused. A screenshot of each page goes into
the directory printed at the start.

    browser.py TARGET_DIR SCREENSHOT_DIR
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TARGET = sys.argv[1] if len(sys.argv) > 1 else ""
SHOTS = sys.argv[2] if len(sys.argv) > 2 else ""
ACCOUNT, PASSWORD = "alice@example.org", "alice web password"
MULTIARCH = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip() or "x86_64-linux-gnu"
STOCK = f"/usr/lib/{MULTIARCH}/sasl2"

passed, failed = 0, 0
started = []


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok   {name}")
    else:
        failed += 1
        print(f"  FAIL {name} {detail}")
    return ok


def until(what, test, seconds=20):
    """Polls `test` until it is true or the deadline passes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if test():
                return True
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sg(conf, *args, stdin=None):
    return subprocess.run([f"{TARGET}/saslgate", "--config", conf, *args], input=stdin,
                          capture_output=True, text=True, check=True).stdout


def oathtool(secret, offset=None):
    cmd = ["oathtool", "--totp", "-b", secret]
    if offset:
        cmd += ["-N", offset]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def doc_block(name):
    """A block of debian/saslgate.README.Debian ("--- NAME: ... ---" to "--- end ---")."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = open(f"{root}/debian/saslgate.README.Debian").read().split("\n")
    start = next(i for i, l in enumerate(lines) if l.startswith(f"--- {name}:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "--- end ---")
    return "\n".join(lines[start + 1:end])


def start_nginx(tmp, web_port):
    """Real nginx with TLS (a self-signed certificate made here) in front of
    saslgate-web, with README.Debian's location block verbatim (only the
    proxy_pass address changed). Returns the https base address, or None without nginx."""
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        print("SKIP: web: nginx not installed: the browser talks to saslgate-web directly")
        return None
    block = doc_block("web-nginx")
    # The package's unit serves /run/saslgate-web/http; here the program runs
    # on a loopback port (nginx's workers, not root, could not reach a socket
    # in the test's directory), so only the proxy_pass address changes.
    sock = "http://unix:/run/saslgate-web/http:;"
    check("README.Debian's nginx block names the unit's socket", sock in block)
    block = block.replace(sock, f"http://127.0.0.1:{web_port};")
    d = f"{tmp}/nginx"
    os.makedirs(f"{d}/static")
    os.chmod(tmp, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                   check=True, capture_output=True)
    with open(f"{d}/static/static.txt", "w") as f:
        f.write("static\n" * 100)
    port = free_port()
    temp = " ".join(f"{k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(f"""daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    {temp}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location = /static.txt {{ root {d}/static; }}
{block}
    }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", d, "-c", f"{d}/nginx.conf"], stderr=open(f"{d}/stderr", "w"))
    started.append(nginx)
    base = f"https://127.0.0.1:{port}"
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    until("nginx", lambda: urllib.request.urlopen(base + "/signin", timeout=2, context=ctx).status == 200)
    print(f"web: through nginx with TLS at {base}")
    return base


def main():
    so = open(f"{TARGET}/libsaslgate.so", "rb").read()
    check("libsaslgate.so links none of saslgate-web's crates (axum, hyper, maud)",
          not any(name in so for name in (b"axum", b"hyper", b"maud")))
    tmp = tempfile.mkdtemp(prefix="saslgate-web-")
    os.makedirs(SHOTS, exist_ok=True)
    print(f"web: screenshots in {SHOTS}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    conf = f"{tmp}/saslgate.conf"
    with open(conf, "w") as f:
        f.write(f'db = "{tmp}/saslgate.db"\nbcrypt_cost = 4\nflush_interval = "0s"\n'
                f'[web]\nlisten = "127.0.0.1:{port}"\n')
    sg(conf, "init")
    sg(conf, "plan", "set", "mail", "--services", "imap,pop,smtp,sieve,web")
    sg(conf, "user", "add", ACCOUNT, "--plan", "mail")
    sg(conf, "passwd", ACCOUNT, "--stdin", stdin=PASSWORD + "\n")

    web = subprocess.Popen([f"{TARGET}/saslgate-web", "--config", conf], stderr=open(f"{tmp}/web.log", "w"))
    started.append(web)
    until("saslgate-web", lambda: urllib.request.urlopen(base + "/signin", timeout=2).status == 200)
    base = start_nginx(tmp, port) or base
    os.makedirs(f"{tmp}/run")
    daemon = subprocess.Popen([f"{TARGET}/saslgated", "-a", "saslgate", "-d", "-m", f"{tmp}/run",
                               "--config", conf, "--fail-delay", "0"], stderr=open(f"{tmp}/saslgated.log", "w"))
    started.append(daemon)
    until("saslgated", lambda: os.path.exists(f"{tmp}/run/mux"))
    os.makedirs(f"{tmp}/plugins")
    os.makedirs(f"{tmp}/sasl")
    shutil.copy(f"{TARGET}/libsaslgate.so", f"{tmp}/plugins/")
    for p in ("libplain.so", "liblogin.so"):
        os.symlink(f"{STOCK}/{p}", f"{tmp}/plugins/{p}")
    with open(f"{tmp}/sasl/imap.conf", "w") as f:
        f.write(f"mech_list: PLAIN LOGIN\nsaslgate_config: {conf}\n")

    def tsa(password, service="imap"):
        return subprocess.run(["testsaslauthd", "-f", f"{tmp}/run/mux", "-u", ACCOUNT, "-p", password,
                               "-s", service], capture_output=True, text=True).stdout.strip()

    def plugin(password):
        r = subprocess.run([f"{TARGET}/sasl-plain-check", f"{tmp}/plugins", f"{tmp}/sasl", "imap",
                            ACCOUNT, password], capture_output=True, text=True)
        return r.returncode

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,900", f"--user-data-dir={tmp}/chrome",
              "--ignore-certificate-errors"):  # the test's own self-signed certificate
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(10)  # find_element polls until the page has it
    try:
        run(driver, base, tsa, plugin)
    except Exception:
        shot(driver, "99-failure")
        with open(f"{SHOTS}/99-failure.html", "w") as f:
            f.write(driver.page_source)
        raise
    finally:
        driver.quit()
    return tmp


def shows(driver, words, seconds=10):
    """The page comes to contain `words` before the deadline (a click's page
    may still be loading)."""
    try:
        return until(repr(words), lambda: words in driver.page_source, seconds)
    except RuntimeError:
        return False


def shot(driver, name):
    driver.save_screenshot(f"{SHOTS}/{name}.png")


def text(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def sign_in(driver, base, password, code=""):
    driver.get(base + "/signin")
    driver.find_element(By.NAME, "account").send_keys(ACCOUNT)
    driver.find_element(By.NAME, "password").send_keys(password)
    if code:
        driver.find_element(By.NAME, "code").send_keys(code)
    driver.find_element(By.ID, "signin").click()
    driver.find_element(By.CSS_SELECTOR, "#message, #apps")  # the answer's page has loaded


def run(driver, base, tsa, plugin):
    driver.get(base + "/signin")
    shot(driver, "01-signin")
    sign_in(driver, base, PASSWORD)
    check("signs in with the password", driver.current_url.endswith("/apps"), driver.current_url)
    cookies = {c["name"]: c for c in driver.get_cookies()}
    c = cookies.get("__Host-saslgate", {})
    check("session cookie HttpOnly, Secure, SameSite=Strict",
          c.get("httpOnly") and c.get("secure") and c.get("sameSite") == "Strict", str(c))

    driver.find_element(By.NAME, "label").send_keys("phone")
    driver.find_element(By.CSS_SELECTOR, "input[name=service][value=imap]").click()
    driver.find_element(By.ID, "create").click()
    secret = text(driver, "#secret")
    shot(driver, "02-app-password-created")
    check("the new app password is on the page", re.fullmatch(r"[a-z0-9]{4}( [a-z0-9]{4})+", secret) is not None, secret)
    check("testsaslauthd (saslgated) logs in with it, imap", tsa(secret) == "0: OK \"Success.\"", tsa(secret))
    check("... refused for smtp (imap only)", tsa(secret, "smtp").startswith("0: NO"))
    check("libsasl2 + libsaslgate.so PLAIN logs in with it", plugin(secret.replace(" ", "-")) == 0)
    driver.get(base + "/apps")
    check("never shown again", secret not in driver.page_source)
    shot(driver, "03-app-passwords")
    rows = driver.find_elements(By.CSS_SELECTOR, "#apps tr")
    check("listed with its last use (service and address)",
          any("phone" in r.text and "imap from 127.0.0.1" in r.text for r in rows), " | ".join(r.text for r in rows))

    driver.get(base + "/two-step")
    shot(driver, "04-two-step")
    driver.find_element(By.ID, "totp-start").click()
    shot(driver, "05-totp-enrol")
    key = text(driver, "#totp-secret").replace(" ", "")
    check("QR code inline SVG on the page", len(driver.find_elements(By.CSS_SELECTOR, "#qr svg")) == 1)
    driver.find_element(By.NAME, "code").send_keys(oathtool(key))
    driver.find_element(By.ID, "totp-confirm").click()
    check("TOTP on after a code from oathtool", "on" in text(driver, "#state").split(".")[0], text(driver, "#state"))
    driver.find_element(By.ID, "codes-new").click()
    shot(driver, "06-one-time-codes")
    codes = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#codes li")]
    check("ten one-time codes shown", len(codes) == 10, str(codes))

    driver.find_element(By.ID, "signout").click()
    check("signed out", shows(driver, "You are signed out"))
    sign_in(driver, base, PASSWORD)
    check("the password alone no longer signs in", driver.current_url.endswith("/signin"), driver.current_url)
    sign_in(driver, base, PASSWORD, oathtool(key, "+30 seconds"))
    check("password + next oathtool code signs in", driver.current_url.endswith("/apps"), driver.page_source[-400:])
    stale_page = base + "/apps"

    driver.get(base + "/logins")
    shot(driver, "07-recent-logins")
    check("recent logins list the web sign-ins", "master+totp" in driver.page_source)
    driver.get(base + "/sessions")
    shot(driver, "08-sessions")
    driver.get(base + "/password")
    shot(driver, "09-password")

    driver.get(stale_page)
    driver.find_element(By.CSS_SELECTOR, "#apps button.revoke").click()
    check("revoked", "revoked" in text(driver, "#message"), text(driver, "#message"))
    check("the revoked app password no longer logs in", tsa(secret).startswith("0: NO"))
    shot(driver, "10-revoked")

    # A stale form: the page stays open in one tab, the other tab signs out.
    driver.get(base + "/apps")
    form_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(base + "/apps")
    driver.find_element(By.ID, "signout").click()
    check("signed out in the other tab", shows(driver, "You are signed out"))
    driver.switch_to.window(form_tab)
    driver.find_element(By.NAME, "label").send_keys("late")
    driver.find_element(By.ID, "create").click()
    check("a stale form after sign-out is refused", shows(driver, "not signed in"))
    shot(driver, "11-stale-form-refused")


if __name__ == "__main__":
    tmp = None
    try:
        tmp = main()
    except Exception as e:  # a setup failure is a failure, never a pass
        import traceback
        traceback.print_exc()
        check("browser run", False, repr(e))
    finally:
        for p in started:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if tmp and failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"web: logs kept in {tmp}")
    print(f"web: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
