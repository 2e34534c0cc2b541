#!/usr/bin/env python3
"""keyledger's hosted pages in a real headless browser.

Debian's chromium, driven by Playwright (the system binary: no browser download), against a running
`keyledger serve`: the hosted sign-in (AuthKit) with the keyboard only, an accessibility check of
every page it shows (axe-core: labels, names, contrast, WCAG 2 A/AA), SSO through real identity
providers on loopback (npm oidc-provider, samlify), the Admin Portal, and refusals that must never
leave keyledger's origin (unregistered redirect URIs, forged SAML responses). Codes are exchanged
with the official SDK (workos 10.6.0), as an application would.

Configuration (environment):
    KEYLEDGER_BASE_URL       the server (its public URL), e.g. http://127.0.0.1:8080   (required)
    KEYLEDGER_API_KEY        an sk_... key of the server                              (required)
    KEYLEDGER_CHROMIUM       the browser binary (default /usr/bin/chromium)
    KEYLEDGER_TEST_OIDC_IDP  tests/idp/oidc/idp.js     (the SSO checks need node and these)
    KEYLEDGER_TEST_SAML_IDP  tests/idp/saml/idp.js
    KEYLEDGER_AXE            axe.min.js (default tests/browser/node_modules/axe-core/axe.min.js)

Output: one line per check ("ok N - label"); the first failure prints "FAIL N - label -- detail",
saves a screenshot under target/browser/ and exits 1.
Traffic goes to 127.0.0.1 only: the server, the IdPs and the application this script plays.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from playwright.sync_api import Browser, Page, sync_playwright
from workos import WorkOSClient
from workos.user_management import PasswordPlaintext

ROOT = Path(__file__).resolve().parents[2]
BASE = os.environ.get("KEYLEDGER_BASE_URL", "").rstrip("/")
API_KEY = os.environ.get("KEYLEDGER_API_KEY", "")
CHROMIUM = os.environ.get("KEYLEDGER_CHROMIUM", "/usr/bin/chromium")
AXE = Path(os.environ.get("KEYLEDGER_AXE", ROOT / "tests/browser/node_modules/axe-core/axe.min.js"))
SHOTS = ROOT / "target/browser"
CLIENT_ID = "client_keyledger"
PASSWORD = "correct horse battery staple 42"
TAG = secrets.token_hex(4)

_count = 0
_page: Optional[Page] = None


def ok(label: str) -> None:
    global _count
    _count += 1
    print(f"ok {_count} - {label}", flush=True)


def fail(label: str, detail: Any) -> None:
    global _count
    _count += 1
    print(f"FAIL {_count} - {label} -- {detail}", flush=True)
    if _page is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"failure-{_count}.png"
        try:
            _page.screenshot(path=str(shot), full_page=True)
            print(f"# screenshot: {shot}; url: {_page.url}", flush=True)
        except Exception as e:  # noqa: BLE001 - the screenshot is a courtesy
            print(f"# no screenshot: {e}", flush=True)
    sys.exit(1)


def check(label: str, condition: bool, detail: Any = "") -> None:
    if condition:
        ok(label)
    else:
        fail(label, detail)


def check_eq(label: str, got: Any, want: Any) -> None:
    check(label, got == want, f"got {got!r}, want {want!r}")


# --- the application this script plays: it receives the redirect with code and state ----------------


class App:
    """A redirect URI on loopback that records what the browser brings back."""

    def __init__(self) -> None:
        self.received: "queue.Queue[Dict[str, str]]" = queue.Queue()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urllib.parse.urlparse(self.path)
                if url.path == "/callback":  # not the browser's /favicon.ico
                    received.put(dict(urllib.parse.parse_qsl(url.query)))
                body = b"<!doctype html><html lang=en><title>App</title><p>Signed in.</p></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.redirect_uri = f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def callback(self, timeout: float = 10.0) -> Dict[str, str]:
        return self.received.get(timeout=timeout)


# --- helpers ---------------------------------------------------------------------------------------


def axe_violations(browser: Browser, source: Any) -> List[Dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations (labels, names, contrast, lang, ...) of a page or HTML.

    axe is injected as a script, which the pages' CSP (no script at all) forbids: it runs in a
    context of its own that bypasses CSP, on the same HTML (stylesheets load from the server).
    """
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        html = source if isinstance(source, str) else source.content()
        page.goto(BASE + "/health")  # the server's origin, so the page's relative links resolve
        page.set_content(html, wait_until="load")
        page.add_script_tag(content=AXE.read_text())
        return page.evaluate(
            "async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}))"
            ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
    finally:
        context.close()


def axe_check(browser: Browser, page: Page, label: str) -> None:
    result = axe_violations(browser, page)
    check(f"accessibility: {label} (axe, WCAG 2 A/AA)", result == [], json.dumps(result)[:2000])


def axe_canary(browser: Browser) -> None:
    """The accessibility check can fail: an unlabeled input and grey-on-white text are caught."""
    bad = (
        "<!doctype html><html><head><title>t</title></head><body>"
        "<p style='color:#ccc;background:#fff'>faint</p><input type=text></body></html>"
    )
    ids = {v["id"] for v in axe_violations(browser, bad)}
    check("accessibility canary: axe flags a missing label, lang and contrast", {"label", "html-has-lang", "color-contrast"} <= ids, ids)


def focused(page: Page) -> str:
    return page.evaluate("() => document.activeElement ? (document.activeElement.id || document.activeElement.tagName) : ''")


def tab_to(page: Page, element_id: str, limit: int = 15) -> bool:
    """Presses Tab until the element with that id has the focus."""
    for _ in range(limit):
        if focused(page) == element_id:
            return True
        page.keyboard.press("Tab")
    return focused(page) == element_id


def security_headers(headers: Dict[str, str], label: str) -> None:
    csp = headers.get("content-security-policy", "")
    check(f"{label}: CSP forbids scripts and framing", "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp)
    check_eq(f"{label}: X-Frame-Options", headers.get("x-frame-options", "").upper(), "DENY")


# --- checks ----------------------------------------------------------------------------------------


def hosted_password_sign_in(browser: Browser, client: WorkOSClient, app: App) -> None:
    global _page
    email = f"kb-{TAG}@browser.example"
    user = client.user_management.create_user(email=email, password=PasswordPlaintext(password=PASSWORD), email_verified=True)
    url = client.user_management.get_authorization_url(provider="authkit", redirect_uri=app.redirect_uri, state=f"st-{TAG}")
    context = browser.new_context()
    page = context.new_page()
    _page = page
    response = page.goto(url)
    check_eq("hosted sign-in: the page answers 200", response.status if response else None, 200)
    security_headers(response.headers if response else {}, "hosted sign-in page")
    axe_check(browser, page, "hosted sign-in page")
    # Keyboard only: Tab to the email, type, Tab to the password, type, Enter.
    check("keyboard: Tab reaches the email field", tab_to(page, "email"), focused(page))
    page.keyboard.type(email)
    check("keyboard: Tab reaches the password field", tab_to(page, "password"), focused(page))
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    got = app.callback()
    check_eq("hosted sign-in: the application receives its state back", got.get("state"), f"st-{TAG}")
    check("hosted sign-in: and a code", bool(got.get("code")), got)
    auth = client.user_management.authenticate_with_code(code=got["code"])
    check_eq("hosted sign-in: the code is exchanged for the same user (SDK)", auth.user.id, user.id)
    try:
        client.user_management.authenticate_with_code(code=got["code"])
        fail("hosted sign-in: a replayed code is refused", "accepted twice")
    except Exception as e:  # noqa: BLE001 - the SDK's error class is asserted by its status
        check_eq("hosted sign-in: a replayed code is refused (400)", getattr(e, "status_code", None), 400)
    context.close()


def wrong_password_shows_an_accessible_error(browser: Browser, client: WorkOSClient, app: App) -> None:
    global _page
    email = f"wrong-{TAG}@browser.example"
    client.user_management.create_user(email=email, password=PasswordPlaintext(password=PASSWORD), email_verified=True)
    url = client.user_management.get_authorization_url(provider="authkit", redirect_uri=app.redirect_uri, state="x")
    context = browser.new_context()
    page = context.new_page()
    _page = page
    page.goto(url)
    page.get_by_label("Email").first.fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    check("wrong password: the page says so", "password" in page.content().lower(), page.content()[:500])
    described = page.evaluate(
        "() => { const i = document.querySelector('[aria-invalid=true]');"
        " return i && i.getAttribute('aria-describedby') && document.getElementById(i.getAttribute('aria-describedby'))"
        " ? document.getElementById(i.getAttribute('aria-describedby')).textContent : null }"
    )
    check("wrong password: the error is tied to its field (aria-describedby)", bool(described), described)
    check("wrong password: still on keyledger", page.url.startswith(BASE), page.url)
    axe_check(browser, page, "sign-in page with an error")
    context.close()


def unregistered_redirect_uri_gets_an_error_page(browser: Browser, client: WorkOSClient) -> None:
    global _page
    url = client.user_management.get_authorization_url(
        provider="authkit", redirect_uri="http://127.0.0.1:9/not-registered", state="x"
    )
    context = browser.new_context()
    page = context.new_page()
    _page = page
    response = page.goto(url)
    check_eq("unregistered redirect_uri: an error page (400)", response.status if response else None, 400)
    check("unregistered redirect_uri: the browser stays on keyledger", page.url.startswith(BASE), page.url)
    axe_check(browser, page, "error page")
    context.close()


class Idp:
    """A test identity provider (node), stopped at exit; its first stdout line describes it."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            ["node", script, "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            fail(f"start {script}", "no answer (run npm ci in its folder)")
        self.info: Dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def organization_with_domain(client: WorkOSClient, domain: str) -> Any:
    from workos.common.models import OrganizationDomainDataState
    from workos.organizations.models import OrganizationDomainData

    return client.organizations.create_organization(
        name=f"Browser {domain}",
        domain_data=[OrganizationDomainData(domain=domain, state=OrganizationDomainDataState.VERIFIED)],
    )


def idp_login(page: Page, email: str) -> None:
    """The test IdPs' login form (email, password), by keyboard-free filling and a click."""
    page.wait_for_selector("#email")
    page.fill("#email", email)
    page.fill("#password", "idp-password")
    page.click("button[type=submit]")


def oidc_sso_through_the_sdk(browser: Browser, client: WorkOSClient, app: App) -> None:
    """The SDK's SSO API: get_authorization_url → the OIDC provider's login → get_profile_and_token."""
    global _page
    from workos.sso import CreateConnectionOIDCOptions, CreateProtocolOptionsOIDC

    script = os.environ.get("KEYLEDGER_TEST_OIDC_IDP", str(ROOT / "tests/idp/oidc/idp.js"))
    secret = f"oidc-secret-{TAG}"
    client_def = {"client_id": "kl", "client_secret": secret, "redirect_uris": [f"{BASE}/sso/oidc/callback"]}
    idp = Idp(script, "--client", json.dumps(client_def))
    try:
        org = organization_with_domain(client, f"oidc-{TAG}.example.com")
        conn = client.sso.create_connection(
            organization_id=org.id,
            protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                discovery_endpoint=f"{idp.info['issuer']}/.well-known/openid-configuration",
                client_id="kl", client_secret=secret)),
        )
        url = client.sso.get_authorization_url(connection=conn.id, redirect_uri=app.redirect_uri, state=f"oidc-{TAG}")
        context = browser.new_context()
        page = context.new_page()
        _page = page
        page.goto(url)
        check("OIDC SSO: keyledger sends the browser to the identity provider", page.url.startswith(idp.info["issuer"]), page.url)
        email = f"ann.lee@oidc-{TAG}.example.com"
        idp_login(page, email)
        got = app.callback()
        check_eq("OIDC SSO: the application gets its state back", got.get("state"), f"oidc-{TAG}")
        result = client.sso.get_profile_and_token(code=got["code"])
        check_eq("OIDC SSO: get_profile_and_token gives the IdP's user (SDK)", result.profile.email, email)
        check_eq("OIDC SSO: of the connection's organization", result.profile.organization_id, org.id)
        profile = client.sso.get_profile(access_token=result.access_token)
        check_eq("OIDC SSO: get_profile reads it with the access token (SDK)", profile.id, result.profile.id)
        context.close()
    finally:
        idp.stop()


def saml_sso_for_an_sso_only_domain(browser: Browser, client: WorkOSClient, app: App) -> None:
    """The hosted sign-in: an email at a domain whose organization requires SSO goes to its SAML
    IdP; the user is signed up by SSO and lands in the organization."""
    global _page
    from workos.sso import CreateConnectionSAMLOptions, CreateProtocolOptionsSAML

    script = os.environ.get("KEYLEDGER_TEST_SAML_IDP", str(ROOT / "tests/idp/saml/idp.js"))
    idp = Idp(script)
    try:
        domain = f"saml-{TAG}.example.com"
        org = organization_with_domain(client, domain)
        conn = client.sso.create_connection(
            organization_id=org.id,
            protocol_options=CreateProtocolOptionsSAML(saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=idp.info["entity_id"], idp_sso_url=idp.info["sso_url"],
                idp_signing_certs=[idp.info["certificate"]])),
        )
        check_eq("SAML SSO: the connection is active", str(getattr(conn.state, "value", conn.state)), "active")
        request = urllib.request.Request(
            f"{BASE}/organizations/{org.id}/policy", method="PUT",
            data=json.dumps({"authentication": "sso_required"}).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request).read()
        url = client.user_management.get_authorization_url(provider="authkit", redirect_uri=app.redirect_uri, state=f"saml-{TAG}")
        context = browser.new_context()
        page = context.new_page()
        _page = page
        page.goto(url)
        email = f"sam.jones@{domain}"
        page.fill("#email", email)
        page.fill("#password", "whatever-it-is-1")
        page.click("button[type=submit] >> nth=0")
        page.wait_for_url(lambda u: u.startswith(idp.info["sso_url"]), timeout=10000)
        ok("SAML SSO: the hosted sign-in moves an SSO-only email on to its identity provider")
        idp_login(page, email)
        got = app.callback()
        check_eq("SAML SSO: the application gets its state back", got.get("state"), f"saml-{TAG}")
        auth = client.user_management.authenticate_with_code(code=got["code"])
        check_eq("SAML SSO: the code signs in the IdP's user (SDK)", auth.user.email, email)
        check("SAML SSO: whose email counts as verified", auth.user.email_verified is True, auth.user)
        check_eq("SAML SSO: in the connection's organization", auth.organization_id, org.id)
        context.close()
    finally:
        idp.stop()


def admin_portal_pages(browser: Browser, client: WorkOSClient) -> None:
    """The Admin Portal's pages for each intent: accessible, with the keyboard reaching their
    forms; a link opens once."""
    global _page
    org = organization_with_domain(client, f"portal-{TAG}.example.com")
    for intent, heading_path in [("domain_verification", "/portal/domains"), ("sso", "/portal/sso"), ("audit_logs", "/portal/audit_logs")]:
        link = client.admin_portal.generate_link(organization=org.id, intent=intent, return_url="https://app.example/settings").link
        context = browser.new_context()
        page = context.new_page()
        _page = page
        response = page.goto(link)
        check_eq(f"portal ({intent}): the link opens the intent's page", urllib.parse.urlparse(page.url).path, heading_path)
        check_eq(f"portal ({intent}): 200", response.status if response else None, 200)
        security_headers(response.headers if response else {}, f"portal ({intent})")
        axe_check(browser, page, f"Admin Portal {intent} page")
        if intent == "sso":
            page.keyboard.press("Tab")
            check("portal (sso): the keyboard reaches a control", focused(page) not in ("", "BODY"), focused(page))
        again = context.new_page().goto(link)
        check("portal: a used link opens nothing", again is not None and again.status >= 400, again.status if again else None)
        context.close()


def main() -> None:
    if not BASE or not API_KEY:
        print("KEYLEDGER_BASE_URL and KEYLEDGER_API_KEY are required", file=sys.stderr)
        sys.exit(2)
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE + "/")
    app = App()
    client.user_management.create_redirect_uri(uri=app.redirect_uri)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            axe_canary(browser)
            hosted_password_sign_in(browser, client, app)
            wrong_password_shows_an_accessible_error(browser, client, app)
            unregistered_redirect_uri_gets_an_error_page(browser, client)
            oidc_sso_through_the_sdk(browser, client, app)
            saml_sso_for_an_sso_only_domain(browser, client, app)
            admin_portal_pages(browser, client)
        finally:
            browser.close()
    print(f"# {_count} browser checks passed", flush=True)


if __name__ == "__main__":
    main()
