#!/usr/bin/env python3
"""keyledger SDK conformance test.

Drives a running keyledger server through the official WorkOS Python SDK
(``workos==10.6.0``, sync client), changing nothing but the base URL, and checks
that every supported endpoint behaves as the SDK (and the WorkOS OpenAPI spec)
expects: users, organizations, organization domains, organization memberships,
events, audit logs and webhooks (endpoints through the SDK, a delivery to a receiver this
script runs, verified with the SDK's own signature check), password sign-in and sessions, Magic
Auth, email verification (the 403 email_verification_required flow and verify_email), password
reset, invitations, SSO connections and organization selection, including the failure paths the SDK surfaces as
exceptions. The server must run with its default sign-in settings (email verification required,
the default per-email rate limits: every check uses a fresh email).

Configuration (environment):
    KEYLEDGER_BASE_URL           e.g. http://127.0.0.1:8080            (required)
    KEYLEDGER_API_KEY            an sk_... key of the server            (required)
    KEYLEDGER_TEST_DNS_PORT      a free UDP port on 127.0.0.1: this script answers DNS there, and
                                 the server must run with --dns-nameserver 127.0.0.1:PORT, so
                                 domain verification never asks a real resolver (required)
    KEYLEDGER_CONSISTENCY_TIMEOUT seconds to wait for lists/events to show a write (default 10)
    KEYLEDGER_KEEP_DATA          set to 1 to skip the best-effort cleanup after a failure

Every expected error is pinned to its status class and its code (and, for validation errors,
the field code in `errors`). Output: one line per check ("ok N - label"); the first failure prints
"FAIL N - label -- detail" and the script exits 1 (2 for a setup problem).
Every name, email, domain and external id carries a per-run random tag, so the
script can run repeatedly against one server. Do not run two copies at once
against the same server: a few cursor checks expect this run's objects to be
the newest ones.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

SDK_VERSION = "10.6.0"
CLIENT_ID = "client_keyledger"

try:
    from importlib.metadata import version as _pkg_version

    from workos import (
        AuthenticationError,
        BadRequestError,
        ConflictError,
        NotFoundError,
        ServerError,
        UnprocessableEntityError,
        WorkOSClient,
    )
    from workos._errors import (
        APIError,
        AuthorizationError,
        EmailVerificationRequiredError,
        OrganizationSelectionRequiredError,
        SsoRequiredError,
    )
    from workos.audit_logs import (
        RetentionPeriod,
        RetentionPeriodInDays,
        AuditLogEvent,
        AuditLogEventActor,
        AuditLogEventContext,
        AuditLogEventTarget,
        AuditLogSchemaActor,
        AuditLogSchemaTarget,
    )
    from workos.common.models import OrganizationDomainDataState
    from workos.events.models import EventSchemaUnknown
    from workos.organization_membership import RoleSingle
    from workos.organizations.models import OrganizationDomainData
    from workos.user_management import PasswordPlaintext
except ImportError as _e:  # pragma: no cover - environment problem
    print(f"FAIL 0 - setup: cannot import the WorkOS SDK ({_e}); "
          f"install it with: pip install workos=={SDK_VERSION}", flush=True)
    sys.exit(2)


# --------------------------------------------------------------------------
# Check machinery
# --------------------------------------------------------------------------

class CheckFailed(AssertionError):
    """A labelled check failed; the run stops here."""


_count = 0


def _ok(label: str) -> None:
    global _count
    _count += 1
    print(f"ok {_count} - {label}", flush=True)


def check(label: str, cond: Any, detail: Any = "") -> None:
    """Plain assert with a label: prints one line, raises CheckFailed on failure."""
    if not cond:
        raise CheckFailed(f"{label} -- {detail}" if detail != "" else label)
    _ok(label)


def check_eq(label: str, got: Any, want: Any) -> None:
    check(label, got == want, f"expected {want!r}, got {got!r}")


def describe(e: BaseException) -> str:
    """A one-line description of an SDK exception, with the HTTP details."""
    if isinstance(e, APIError):
        body = (e.raw_body or "")[:600]
        return (f"{type(e).__name__}(status={e.status_code}, code={e.code!r}, "
                f"message={e.message!r}) on {e.request_method} {e.request_url} body={body!r}")
    cause = e.__cause__
    if cause is not None:
        return f"{type(e).__name__}: {e} (caused by {type(cause).__name__}: {cause})"
    return f"{type(e).__name__}: {e}"


def call(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an SDK call that must succeed; any exception fails the run under `label`."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - report everything the SDK raises
        raise CheckFailed(f"{label} -- unexpected {describe(e)}") from e


def expect_error(label: str, cls: Any, fn: Callable[..., Any], *args: Any,
                 code: str, field_code: Optional[str] = None, **kwargs: Any) -> APIError:
    """Run an SDK call that must raise `cls` (one SDK error class) with the error `code`.

    Also checks the error body is JSON {"code", "message"}; with `field_code` (a validation
    error, top-level code `invalid_request_parameters`), that `errors[0]` is
    {"field", "code": field_code, "message"} with a non-empty field and message.
    """
    try:
        result = fn(*args, **kwargs)
    except cls as e:  # type: ignore[misc]
        body = e.response_json
        if not isinstance(body, dict):
            raise CheckFailed(f"{label} -- {type(e).__name__} but the body is not a JSON object: "
                              f"{(e.raw_body or '')[:300]!r}") from e
        if not isinstance(body.get("message"), str) or not body.get("message"):
            raise CheckFailed(f"{label} -- error body lacks a non-empty 'message': {body!r}") from e
        if body.get("code") != code or e.code != code:
            raise CheckFailed(f"{label} -- expected error code {code!r}, got {body!r}") from e
        if field_code is not None:
            errors = body.get("errors")
            first = errors[0] if isinstance(errors, list) and errors else {}
            if not (isinstance(first, dict) and first.get("code") == field_code and first.get("field")
                    and isinstance(first.get("message"), str) and first.get("message")):
                raise CheckFailed(f"{label} -- expected errors[0] with code {field_code!r}, a field and a "
                                  f"message, got {body!r}") from e
        _ok(f"{label} -> {type(e).__name__} {e.status_code} {code}" + (f"/{field_code}" if field_code else ""))
        return e
    except Exception as e:  # noqa: BLE001
        raise CheckFailed(f"{label} -- expected {cls.__name__}, got {describe(e)}") from e
    raise CheckFailed(f"{label} -- expected {cls.__name__}, but the call succeeded: {_short(result)}")


INVALID = "invalid_request_parameters"
NOT_FOUND = "entity_not_found"


def invalid(label: str, fn: Callable[..., Any], *args: Any, field_code: str, **kwargs: Any) -> APIError:
    """A validation failure: 422 `invalid_request_parameters` with `field_code` in `errors`."""
    return expect_error(label, UnprocessableEntityError, fn, *args, code=INVALID, field_code=field_code, **kwargs)


def not_found(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> APIError:
    return expect_error(label, NotFoundError, fn, *args, code=NOT_FOUND, **kwargs)


def raw_get(path: str) -> Tuple[int, Any]:
    """GET with the API key, outside the SDK (to see fields the SDK's models hide)."""
    req = urllib.request.Request(BASE_URL.rstrip("/") + path, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own server
        return resp.status, json.loads(resp.read().decode("utf-8"))


def raw_put(path: str, body: Any) -> Tuple[int, Any]:
    """PUT JSON with the API key, outside the SDK (keyledger's extensions the SDK does not know)."""
    req = urllib.request.Request(BASE_URL.rstrip("/") + path, data=json.dumps(body).encode("utf-8"), method="PUT",
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own server
        return resp.status, json.loads(resp.read().decode("utf-8"))


def eventually(label: str, fetch: Callable[[], Any], why_not: Callable[[Any], Optional[str]],
               timeout: Optional[float] = None) -> Any:
    """Poll `fetch` until `why_not(value)` is None (success) or the timeout passes.

    Lists and events may lag a write slightly if the server projects them
    asynchronously; gets are expected to be read-your-writes.
    """
    deadline = time.monotonic() + (CONSISTENCY_TIMEOUT if timeout is None else timeout)
    while True:
        value = call(label, fetch)
        reason = why_not(value)
        if reason is None:
            _ok(label)
            return value
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{label} -- {reason}")
        time.sleep(0.25)


def _short(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 300 else s[:300] + "..."


def ids(items: Iterable[Any]) -> List[str]:
    return [i.id for i in items]


def tz_aware(dt: Any) -> bool:
    return isinstance(dt, datetime) and dt.tzinfo is not None


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

BASE_URL = os.environ.get("KEYLEDGER_BASE_URL", "").strip()
API_KEY = os.environ.get("KEYLEDGER_API_KEY", "").strip()
CONSISTENCY_TIMEOUT = float(os.environ.get("KEYLEDGER_CONSISTENCY_TIMEOUT", "10"))
KEEP_DATA = os.environ.get("KEYLEDGER_KEEP_DATA", "") == "1"
DNS_PORT = os.environ.get("KEYLEDGER_TEST_DNS_PORT", "").strip()
DNS: Any = None  # the _DnsResponder, started in setup()

RUN = uuid.uuid4().hex[:12]
RUN_START = datetime.now(timezone.utc)
PASSWORD = f"Kl-{uuid.uuid4().hex}-pw!"
PASSWORD2 = f"Kl-{uuid.uuid4().hex}-pw2!"
UNKNOWN = {
    "user": "user_01JZZZZZZZZZZZZZZZZZZZZZZZ",
    "org": "org_01JZZZZZZZZZZZZZZZZZZZZZZZ",
    "domain": "org_domain_01JZZZZZZZZZZZZZZZZZZZZZZZ",
    "om": "om_01JZZZZZZZZZZZZZZZZZZZZZZZ",
}


def email(tag: str) -> str:
    return f"kl-{RUN}-{tag}@example.com"


def domain(tag: str) -> str:
    return f"kl-{RUN}-{tag}.example.com"


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pause() -> None:
    """Keep consecutive creates in distinct milliseconds so creation order is unambiguous."""
    time.sleep(0.01)


# Everything this run created, for the best-effort cleanup after a failure.
CREATED: Dict[str, List[str]] = {"om": [], "user": [], "org": [], "we": []}
DELETED: set = set()


# --------------------------------------------------------------------------
# Generic pagination helpers
# --------------------------------------------------------------------------

def walk(label: str, list_fn: Callable[..., Any], limit: int, stop: Optional[Callable[[List[Any]], bool]] = None,
         max_pages: int = 500, **filters: Any) -> Tuple[List[Any], List[Any]]:
    """Follow list_metadata.after page by page. Returns (pages, items).

    Checks per page (failing under `label`): at most `limit` items; a page with
    a next cursor is full and its cursor is the id of its last item; the first
    page has no `before` cursor (where the list has one).
    """
    pages: List[Any] = []
    items: List[Any] = []
    after: Optional[str] = None
    while True:
        kwargs = dict(filters, limit=limit)
        if after is not None:
            kwargs["after"] = after
        page = call(f"{label} (page {len(pages) + 1})", list_fn, **kwargs)
        if len(page.data) > limit:
            raise CheckFailed(f"{label} -- page {len(pages) + 1} has {len(page.data)} items, limit {limit}")
        if not pages and getattr(page.list_metadata, "before", None) is not None:
            raise CheckFailed(f"{label} -- the first page has list_metadata.before="
                              f"{page.list_metadata.before!r}; it must be null at the start of the list")
        pages.append(page)
        items.extend(page.data)
        if page.after is None:
            break
        if len(page.data) != limit:
            raise CheckFailed(f"{label} -- page {len(pages)} has {len(page.data)} < {limit} items "
                              f"but a next cursor {page.after!r}")
        if page.after != page.data[-1].id:
            raise CheckFailed(f"{label} -- list_metadata.after {page.after!r} is not the id of the "
                              f"page's last item {page.data[-1].id!r}")
        if stop is not None and stop(items):
            break
        if len(pages) >= max_pages:
            raise CheckFailed(f"{label} -- still paging after {max_pages} pages")
        after = page.after
    return pages, items


def no_duplicates(label: str, got_ids: Sequence[str]) -> None:
    dups = sorted({i for i in got_ids if got_ids.count(i) > 1})
    check(label, not dups, f"duplicated ids across pages: {dups}")


def subsequence(label: str, got_ids: Sequence[str], want_in_order: Sequence[str]) -> None:
    """Items of `want_in_order` all appear in `got_ids`, in that order."""
    mine = [i for i in got_ids if i in set(want_in_order)]
    check(label, mine == list(want_in_order),
          f"expected these ids in this order {list(want_in_order)}, got {mine}")


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------

class State:
    """Objects shared between sections."""

    u1: Any = None
    u2: Any = None
    u1_ext: str = ""
    pusers: List[Any] = []
    org_a: Any = None
    org_b: Any = None
    porgs: List[Any] = []
    dom_a1: str = ""
    dom_a2: str = ""
    dom_b: str = ""
    dom_c: Any = None
    dom_v: str = ""
    m1: Any = None
    m2: Any = None
    m3: Any = None
    mpage: List[Any] = []
    mpage_users: List[Any] = []
    org_a_names: List[str] = []


S = State()


def section(name: str) -> None:
    print(f"# --- {name}", flush=True)


def setup() -> Tuple[WorkOSClient, WorkOSClient, WorkOSClient]:
    section("setup")
    if not BASE_URL or not API_KEY or not DNS_PORT.isdigit():
        print("FAIL 0 - setup: KEYLEDGER_BASE_URL, KEYLEDGER_API_KEY and KEYLEDGER_TEST_DNS_PORT must be set "
              "(the server runs with --dns-nameserver 127.0.0.1:$KEYLEDGER_TEST_DNS_PORT)", flush=True)
        sys.exit(2)
    global DNS
    try:
        DNS = _DnsResponder(int(DNS_PORT))
    except OSError as e:
        print(f"FAIL 0 - setup: cannot answer DNS on 127.0.0.1:{DNS_PORT} ({e})", flush=True)
        sys.exit(2)
    # The SDK falls back to these; keep the run independent of the caller's shell.
    for var in ("WORKOS_API_KEY", "WORKOS_CLIENT_ID", "WORKOS_BASE_URL"):
        os.environ.pop(var, None)
    check_eq("setup: installed SDK is workos==" + SDK_VERSION, _pkg_version("workos"), SDK_VERSION)
    common = dict(client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0, request_timeout=30)
    good = WorkOSClient(api_key=API_KEY, **common)
    bad = WorkOSClient(api_key=f"sk_test_keyledger_wrong_{RUN}", **common)
    keyless = WorkOSClient(**common)  # client id only: no Authorization header
    check_eq("setup: SDK base_url points at keyledger", good.base_url, BASE_URL.rstrip("/") + "/")
    print(f"# run tag {RUN}, base url {BASE_URL}", flush=True)
    return good, bad, keyless


def test_auth(bad: WorkOSClient, keyless: WorkOSClient) -> None:
    section("authentication")
    expect_error("auth: wrong API key, list_users", AuthenticationError, bad.user_management.list_users, code="unauthorized")
    expect_error("auth: wrong API key, get_user", AuthenticationError, bad.user_management.get_user, UNKNOWN["user"], code="unauthorized")
    expect_error("auth: wrong API key, create_organization", AuthenticationError,
                 bad.organizations.create_organization, name=f"KL never {RUN}", code="unauthorized")
    expect_error("auth: wrong API key, list_organization_memberships", AuthenticationError,
                 bad.organization_membership.list_organization_memberships, organization_id=UNKNOWN["org"],
                 code="unauthorized")
    expect_error("auth: wrong API key, list_events", AuthenticationError,
                 bad.events.list_events, events=["user.created"], code="unauthorized")
    expect_error("auth: no API key, list_organizations", AuthenticationError, keyless.organizations.list_organizations, code="unauthorized")


def check_user_shape(label: str, u: Any) -> None:
    check(f"{label}: id has the user_ prefix", isinstance(u.id, str) and u.id.startswith("user_"), u.id)
    check(f"{label}: created_at/updated_at are timezone-aware",
          tz_aware(u.created_at) and tz_aware(u.updated_at), (u.created_at, u.updated_at))
    check(f"{label}: updated_at >= created_at", u.updated_at >= u.created_at, (u.created_at, u.updated_at))


def test_users(c: WorkOSClient) -> None:
    section("users")
    um = c.user_management

    # create without password
    S.u1_ext = f"ext-u-{RUN}-1"
    u1 = call("users: create_user without password", um.create_user, email=email("u1"), first_name="Ada",
              last_name="Lovelace", external_id=S.u1_ext, metadata={"tier": "gold"}, email_verified=True)
    CREATED["user"].append(u1.id)
    S.u1 = u1
    check_user_shape("users: create_user (no password)", u1)
    check_eq("users: create_user echoes email", u1.email, email("u1"))
    check_eq("users: create_user echoes first/last name", (u1.first_name, u1.last_name), ("Ada", "Lovelace"))
    check_eq("users: create_user echoes external_id", u1.external_id, S.u1_ext)
    check_eq("users: create_user echoes metadata", u1.metadata, {"tier": "gold"})
    check_eq("users: create_user echoes email_verified", u1.email_verified, True)
    check_eq("users: new user has last_sign_in_at null", u1.last_sign_in_at, None)

    # create with password
    pause()
    u2 = call("users: create_user with password", um.create_user, email=email("u2"),
              password=PasswordPlaintext(password=PASSWORD), external_id=f"ext-u-{RUN}-2")
    CREATED["user"].append(u2.id)
    S.u2 = u2
    check_user_shape("users: create_user (password)", u2)
    check_eq("users: omitted names are null", (u2.first_name, u2.last_name), (None, None))
    check_eq("users: email_verified defaults to false", u2.email_verified, False)
    check("users: omitted metadata is empty", u2.metadata in (None, {}), u2.metadata)

    # invalid input
    invalid("users: create_user with an invalid email", um.create_user, email="not-an-email",
            field_code="invalid_email")
    invalid("users: create_user with a duplicate email", um.create_user, email=email("u1"),
            field_code="email_not_available")
    invalid("users: create_user with a duplicate email in other case", um.create_user, email=email("u1").upper(),
            field_code="email_not_available")
    invalid("users: create_user with a duplicate external_id", um.create_user, email=email("dup-ext"),
            external_id=S.u1_ext, field_code="external_id_not_available")

    # get
    g = call("users: get_user", um.get_user, u1.id)
    check_eq("users: get_user returns the created user",
             (g.id, g.email, g.first_name, g.external_id, g.metadata),
             (u1.id, u1.email, "Ada", S.u1_ext, {"tier": "gold"}))
    g = call("users: get_user_by_external_id", um.get_user_by_external_id, S.u1_ext)
    check_eq("users: get_user_by_external_id finds the user", g.id, u1.id)
    not_found("users: get_user unknown id", um.get_user, UNKNOWN["user"])
    not_found("users: get_user_by_external_id unknown", um.get_user_by_external_id,
                 f"ext-missing-{RUN}")

    # update
    new_ext = f"ext-u-{RUN}-1b"
    up = call("users: update_user names/metadata/external_id", um.update_user, u1.id, first_name="Augusta",
              metadata={"tier": "platinum", "team": "analytical"}, external_id=new_ext)
    check_eq("users: update_user returns the new values", (up.first_name, up.last_name, up.metadata, up.external_id),
             ("Augusta", "Lovelace", {"tier": "platinum", "team": "analytical"}, new_ext))
    check("users: update_user advances updated_at", up.updated_at >= u1.updated_at, (u1.updated_at, up.updated_at))
    g = call("users: get_user after update", um.get_user, u1.id)
    check_eq("users: get_user shows the update", (g.first_name, g.metadata, g.external_id, g.email),
             ("Augusta", {"tier": "platinum", "team": "analytical"}, new_ext, email("u1")))
    S.u1_ext = new_ext
    not_found("users: old external_id no longer resolves", um.get_user_by_external_id,
                 f"ext-u-{RUN}-1")
    g = call("users: get_user_by_external_id (new id)", um.get_user_by_external_id, new_ext)
    check_eq("users: new external_id resolves", g.id, u1.id)

    up = call("users: update_user password", um.update_user, u2.id, password=PasswordPlaintext(password=PASSWORD2))
    check_eq("users: update_user password returns the user", up.id, u2.id)
    up = call("users: update_user external_id=null clears it", um.update_user, u2.id, external_id=None)
    check_eq("users: external_id cleared", up.external_id, None)
    not_found("users: cleared external_id no longer resolves", um.get_user_by_external_id,
                 f"ext-u-{RUN}-2")
    invalid("users: update_user with an invalid email", um.update_user, u2.id, email="still not an email",
            field_code="invalid_email")
    invalid("users: update_user to another user's email", um.update_user, u2.id, email=email("u1"),
            field_code="email_not_available")
    not_found("users: update_user unknown id", um.update_user, UNKNOWN["user"], first_name="x")

    # list filters
    eventually("users: list_users email filter returns exactly that user",
               lambda: um.list_users(email=email("u1")),
               lambda p: None if ids(p.data) == [u1.id] else f"got {ids(p.data)}")
    page = call("users: list_users default", um.list_users)
    check("users: list_users default limit is 10", len(page.data) <= 10, len(page.data))

    # pagination over the whole (unfiltered) list
    for i in range(5):
        pause()
        pu = call(f"users: create pagination user {i + 1}", um.create_user, email=email(f"p{i + 1}"))
        CREATED["user"].append(pu.id)
        S.pusers.append(pu)
    mine = [u1.id, u2.id] + ids(S.pusers)  # creation order
    newest_first = list(reversed(mine))

    def seen_all(items: List[Any]) -> bool:
        return set(mine) <= set(ids(items))

    pages, items = walk("users: walk list_users limit=3 (desc) by after", um.list_users, 3, stop=seen_all)
    check("users: 7 users at limit 3 take at least 3 pages", len(pages) >= 3, len(pages))
    got = ids(items)
    no_duplicates("users: no duplicates across pages", got)
    subsequence("users: no misses, this run's users newest first", got, newest_first)
    p1, p2 = pages[0], pages[1]
    back = call("users: list_users before=<first id of page 2>", um.list_users, limit=3, before=p2.data[0].id)
    check_eq("users: before cursor returns page 1", ids(back.data), ids(p1.data))

    p = S.pusers
    r = call("users: list_users order=desc after=p5 limit=2", um.list_users, order="desc", after=p[4].id, limit=2)
    check_eq("users: desc+after gives the next older users", ids(r.data), [p[3].id, p[2].id])
    r = call("users: list_users order=desc before=p1 limit=2", um.list_users, order="desc", before=p[0].id, limit=2)
    check_eq("users: desc+before gives the nearest newer users, in list order", ids(r.data), [p[2].id, p[1].id])
    r = call("users: list_users order=asc after=p1", um.list_users, order="asc", after=p[0].id, limit=100)
    subsequence("users: asc+after lists newer users oldest first", ids(r.data), ids(p[1:]))
    check("users: asc+after excludes the cursor and older users",
          not {p[0].id, u1.id, u2.id} & set(ids(r.data)), ids(r.data))
    r = call("users: list_users order=asc before=p5 limit=2", um.list_users, order="asc", before=p[4].id, limit=2)
    check_eq("users: asc+before gives the nearest older users, in list order", ids(r.data), [p[2].id, p[3].id])
    r = call("users: list_users order=normal", um.list_users, order="normal", limit=100)
    subsequence("users: order=normal lists newest first", ids(r.data), ids(reversed(p)))
    invalid("users: list_users limit=101 is rejected", um.list_users, limit=101, field_code="invalid_limit")
    invalid("users: list_users order=sideways is rejected", um.list_users, order="sideways",
            field_code="invalid_order")

    # delete
    victim = p[4]
    r = call("users: delete_user", um.delete_user, victim.id)
    check_eq("users: delete_user returns nothing", r, None)
    DELETED.add(victim.id)
    not_found("users: get_user after delete", um.get_user, victim.id)
    not_found("users: delete_user again", um.delete_user, victim.id)
    not_found("users: delete_user unknown id", um.delete_user, UNKNOWN["user"])
    eventually("users: deleted user leaves the email filter", lambda: um.list_users(email=victim.email),
               lambda pg: None if ids(pg.data) == [] else f"got {ids(pg.data)}")


def check_org_shape(label: str, o: Any) -> None:
    check(f"{label}: id has the org_ prefix", isinstance(o.id, str) and o.id.startswith("org_"), o.id)
    check(f"{label}: timestamps are timezone-aware", tz_aware(o.created_at) and tz_aware(o.updated_at))
    check(f"{label}: metadata is an object", isinstance(o.metadata, dict), o.metadata)


def domain_states(o: Any) -> Dict[str, str]:
    return {d.domain: (d.state.value if hasattr(d.state, "value") else d.state) for d in o.domains}


def test_organizations(c: WorkOSClient) -> None:
    section("organizations")
    orgs = c.organizations
    S.dom_a1, S.dom_a2, S.dom_b = domain("a1"), domain("a2"), domain("b")
    name_a = f"KL Org A {RUN}"
    ext_a = f"ext-o-{RUN}-a"

    a = call("orgs: create_organization with domain_data pending+verified", orgs.create_organization,
             name=name_a, external_id=ext_a, metadata={"plan": "pro"},
             domain_data=[OrganizationDomainData(domain=S.dom_a1, state=OrganizationDomainDataState.PENDING),
                          OrganizationDomainData(domain=S.dom_a2, state=OrganizationDomainDataState.VERIFIED)])
    CREATED["org"].append(a.id)
    S.org_a = a
    S.org_a_names.append(name_a)
    check_org_shape("orgs: create_organization", a)
    check_eq("orgs: create echoes name/external_id/metadata", (a.name, a.external_id, a.metadata),
             (name_a, ext_a, {"plan": "pro"}))
    check_eq("orgs: domain_data states are kept", domain_states(a), {S.dom_a1: "pending", S.dom_a2: "verified"})
    check("orgs: each domain is an organization_domain of this org",
          all(d.organization_id == a.id and d.id.startswith("org_domain_") and tz_aware(d.created_at)
              for d in a.domains), [d.to_dict() for d in a.domains])

    pause()
    b = call("orgs: create_organization minimal + pending domain", orgs.create_organization, name=f"KL Org B {RUN}",
             domain_data=[OrganizationDomainData(domain=S.dom_b, state=OrganizationDomainDataState.PENDING)])
    CREATED["org"].append(b.id)
    S.org_b = b
    check_org_shape("orgs: create_organization (minimal)", b)
    check_eq("orgs: minimal org has no external_id and empty metadata", (b.external_id, b.metadata), (None, {}))

    # invalid input
    invalid("orgs: create_organization with an invalid domain", orgs.create_organization, name=f"KL bad {RUN}",
            domain_data=[OrganizationDomainData(domain="not a domain", state=OrganizationDomainDataState.PENDING)],
            field_code="invalid_domain")
    invalid("orgs: create_organization with too much metadata", orgs.create_organization, name=f"KL bad {RUN}",
            metadata={f"k{i}": "v" for i in range(51)}, field_code="invalid_metadata")
    expect_error("orgs: create_organization claiming a domain verified elsewhere",
                 ConflictError, orgs.create_organization, code="domain_verified_by_another_organization",
                 name=f"KL thief {RUN}",
                 domain_data=[OrganizationDomainData(domain=S.dom_a2, state=OrganizationDomainDataState.VERIFIED)])
    expect_error("orgs: create_organization with a duplicate external_id", ConflictError,
                 orgs.create_organization, name=f"KL dup {RUN}", external_id=ext_a, code="external_id_not_available")

    # get
    g = call("orgs: get_organization", orgs.get_organization, a.id)
    check_eq("orgs: get_organization returns the org", (g.id, g.name, g.external_id, domain_states(g)),
             (a.id, name_a, ext_a, {S.dom_a1: "pending", S.dom_a2: "verified"}))
    g = call("orgs: get_organization_by_external_id", orgs.get_organization_by_external_id, ext_a)
    check_eq("orgs: get_organization_by_external_id finds the org", g.id, a.id)
    not_found("orgs: get_organization unknown id", orgs.get_organization, UNKNOWN["org"])
    not_found("orgs: get_organization_by_external_id unknown", orgs.get_organization_by_external_id, f"ext-missing-{RUN}")

    # list filters (the SDK sends domains as ONE comma-joined value)
    eventually("orgs: list_organizations domains=[a2]", lambda: orgs.list_organizations(domains=[S.dom_a2]),
               lambda p: None if ids(p.data) == [a.id] else f"got {ids(p.data)}")
    eventually("orgs: list_organizations domains=[a1,b] (comma-joined)",
               lambda: orgs.list_organizations(domains=[S.dom_a1, S.dom_b], limit=100),
               lambda p: None if sorted(ids(p.data)) == sorted([a.id, b.id]) else f"got {ids(p.data)}")
    r = call("orgs: list_organizations domains=[unused]", orgs.list_organizations, domains=[domain("unused")])
    check_eq("orgs: unknown domain matches nothing", ids(r.data), [])

    # update
    name_a2 = f"KL Org A renamed {RUN}"
    ext_a2 = f"ext-o-{RUN}-a2"
    up = call("orgs: update_organization name/metadata/external_id", orgs.update_organization, a.id,
              name=name_a2, metadata={"plan": "enterprise"}, external_id=ext_a2)
    S.org_a_names.append(name_a2)
    check_eq("orgs: update returns the new values", (up.name, up.metadata, up.external_id),
             (name_a2, {"plan": "enterprise"}, ext_a2))
    check_eq("orgs: update leaves domains alone", domain_states(up), {S.dom_a1: "pending", S.dom_a2: "verified"})
    g = call("orgs: get_organization after update", orgs.get_organization, a.id)
    check_eq("orgs: get shows the update", (g.name, g.metadata, g.external_id), (name_a2, {"plan": "enterprise"}, ext_a2))
    not_found("orgs: old external_id no longer resolves", orgs.get_organization_by_external_id, ext_a)
    not_found("orgs: update_organization unknown id", orgs.update_organization, UNKNOWN["org"],
                 name="x")

    # pagination
    for i in range(4):
        pause()
        po = call(f"orgs: create pagination org {i + 1}", orgs.create_organization, name=f"KL Org P{i + 1} {RUN}")
        CREATED["org"].append(po.id)
        S.porgs.append(po)
    mine = [a.id, b.id] + ids(S.porgs)
    pages, items = walk("orgs: walk list_organizations limit=2 (desc) by after", orgs.list_organizations, 2,
                        stop=lambda it: set(mine) <= set(ids(it)))
    check("orgs: 6 organizations at limit 2 take at least 3 pages", len(pages) >= 3, len(pages))
    got = ids(items)
    no_duplicates("orgs: no duplicates across pages", got)
    subsequence("orgs: no misses, this run's orgs newest first", got, list(reversed(mine)))
    back = call("orgs: list_organizations before=<first id of page 2>", orgs.list_organizations, limit=2,
                before=pages[1].data[0].id)
    check_eq("orgs: before cursor returns page 1", ids(back.data), ids(pages[0].data))
    p = S.porgs
    r = call("orgs: list_organizations order=asc after=P1", orgs.list_organizations, order="asc", after=p[0].id,
             limit=100)
    subsequence("orgs: asc+after lists newer orgs oldest first", ids(r.data), ids(p[1:]))
    check("orgs: asc+after excludes the cursor and older orgs", not {p[0].id, a.id, b.id} & set(ids(r.data)))
    r = call("orgs: list_organizations order=desc before=P1 limit=2", orgs.list_organizations, order="desc",
             before=p[0].id, limit=2)
    check_eq("orgs: desc+before gives the nearest newer orgs", ids(r.data), [p[2].id, p[1].id])

    # delete
    victim = p[3]
    call("orgs: delete_organization", orgs.delete_organization, victim.id)
    DELETED.add(victim.id)
    not_found("orgs: get_organization after delete", orgs.get_organization, victim.id)
    not_found("orgs: delete_organization again", orgs.delete_organization, victim.id)


def test_domains(c: WorkOSClient) -> None:
    section("organization domains")
    od = c.organization_domains
    a = S.org_a
    dom = domain("c")

    d = call("domains: create_organization_domain", od.create_organization_domain, domain=dom, organization_id=a.id)
    S.dom_c = d
    check("domains: id has the org_domain_ prefix", d.id.startswith("org_domain_"), d.id)
    check_eq("domains: create echoes domain and organization_id", (d.domain, d.organization_id), (dom, a.id))
    state = getattr(d.state, "value", d.state)
    check_eq("domains: a new domain is pending", state, "pending")
    check_eq("domains: verification strategy is dns", getattr(d.verification_strategy, "value", d.verification_strategy),
             "dns")
    check("domains: a verification token is issued", isinstance(d.verification_token, str) and d.verification_token,
          d.verification_token)
    check("domains: timestamps are timezone-aware", tz_aware(d.created_at) and tz_aware(d.updated_at))

    g = call("domains: get_organization_domain", od.get_organization_domain, d.id)
    check_eq("domains: get returns the domain", (g.id, g.domain, g.organization_id, g.verification_token),
             (d.id, dom, a.id, d.verification_token))
    o = call("domains: get_organization after adding a domain", c.organizations.get_organization, a.id)
    check("domains: the organization lists the new domain", d.id in ids(o.domains), ids(o.domains))
    eventually("domains: list_organizations finds the org by the new domain",
               lambda: c.organizations.list_organizations(domains=[dom]),
               lambda p: None if ids(p.data) == [a.id] else f"got {ids(p.data)}")

    expect_error("domains: create the same domain again", ConflictError, od.create_organization_domain,
                 domain=dom, organization_id=a.id, code="domain_already_exists")
    not_found("domains: create for an unknown organization", od.create_organization_domain,
              domain=domain("orphan"), organization_id=UNKNOWN["org"])
    invalid("domains: create an invalid domain", od.create_organization_domain, domain="not a domain",
            organization_id=a.id, field_code="invalid_domain")
    not_found("domains: get unknown id", od.get_organization_domain, UNKNOWN["domain"])

    # verify: the server asks this script's DNS responder (KEYLEDGER_TEST_DNS_PORT), which has no
    # record for this domain, so the one answer is 201 with the domain `failed`.
    challenge = f"_keyledger-challenge.{dom}"
    v = call("domains: verify_organization_domain without a TXT record", od.verify_organization_domain, d.id)
    check_eq("domains: verify without a record answers the domain, failed",
             (v.id, getattr(v.state, "value", v.state)), (d.id, "failed"))
    check("domains: the lookup went to this script's DNS responder",
          (challenge, 16) in DNS.questions(), DNS.questions()[-5:])
    g = call("domains: get after the failed verification", od.get_organization_domain, d.id)
    check_eq("domains: the failure is recorded", getattr(g.state, "value", g.state), "failed")

    # ... and with the token published, `verified`.
    dv = call("domains: create a domain to verify", od.create_organization_domain, domain=domain("v"),
              organization_id=a.id)
    DNS.publish(f"_keyledger-challenge.{dv.domain}", dv.verification_token)
    v = call("domains: verify_organization_domain with the token published", od.verify_organization_domain, dv.id)
    check_eq("domains: verify with the token answers the domain, verified",
             (v.id, getattr(v.state, "value", v.state)), (dv.id, "verified"))
    S.dom_v = dv.id

    verified = [x for x in a.domains if getattr(x.state, "value", x.state) == "verified"]
    expect_error("domains: verify an already verified domain", BadRequestError, od.verify_organization_domain,
                 verified[0].id, code="domain_already_verified")
    not_found("domains: verify unknown id", od.verify_organization_domain, UNKNOWN["domain"])

    r = call("domains: delete_organization_domain", od.delete_organization_domain, d.id)
    check_eq("domains: delete returns nothing", r, None)
    not_found("domains: get after delete", od.get_organization_domain, d.id)
    not_found("domains: delete again", od.delete_organization_domain, d.id)
    o = call("domains: get_organization after deleting a domain", c.organizations.get_organization, a.id)
    check("domains: the organization no longer lists it", d.id not in ids(o.domains), ids(o.domains))


def check_membership(label: str, m: Any, user: Any, org_id: str, role: str, status: str,
                     org_name: Optional[str] = None) -> None:
    st = getattr(m.status, "value", m.status)
    check(f"{label}: id has the om_ prefix", isinstance(m.id, str) and m.id.startswith("om_"), m.id)
    check_eq(f"{label}: user_id/organization_id/status/role",
             (m.user_id, m.organization_id, st, m.role.slug), (user.id, org_id, status, role))
    check_eq(f"{label}: roles lists the role", [r.slug for r in m.roles], [role])
    check_eq(f"{label}: embedded user", (m.user.id, m.user.email), (user.id, user.email))
    check_eq(f"{label}: directory_managed is false", m.directory_managed, False)
    check(f"{label}: timestamps are timezone-aware", tz_aware(m.created_at) and tz_aware(m.updated_at))
    if org_name is not None:
        check_eq(f"{label}: organization_name is the organization's current name", m.organization_name, org_name)


def test_memberships(c: WorkOSClient) -> None:
    section("organization memberships")
    oms = c.organization_membership
    a, b, u1, u2 = S.org_a, S.org_b, S.u1, S.u2
    name_a = S.org_a_names[-1]

    m1 = call("memberships: create (default role)", oms.create_organization_membership, user_id=u1.id,
              organization_id=a.id)
    CREATED["om"].append(m1.id)
    S.m1 = m1
    check_membership("memberships: create default", m1, u1, a.id, "member", "active", name_a)
    pause()
    m2 = call("memberships: create role_slug=admin", oms.create_organization_membership, user_id=u2.id,
              organization_id=a.id, role=RoleSingle(role_slug="admin"))
    CREATED["om"].append(m2.id)
    S.m2 = m2
    check_membership("memberships: create admin", m2, u2, a.id, "admin", "active", name_a)
    pause()
    m3 = call("memberships: create in a second org", oms.create_organization_membership, user_id=u1.id,
              organization_id=b.id)
    CREATED["om"].append(m3.id)
    S.m3 = m3
    check_membership("memberships: create in org B", m3, u1, b.id, "member", "active", b.name)

    invalid("memberships: duplicate membership", oms.create_organization_membership, user_id=u1.id,
            organization_id=a.id, field_code="organization_membership_already_exists")
    expect_error("memberships: unknown role slug (the spec's top-level invalid_role)", UnprocessableEntityError,
                 oms.create_organization_membership, user_id=S.pusers[0].id, organization_id=a.id,
                 role=RoleSingle(role_slug=f"no-such-role-{RUN}"), code="invalid_role", field_code="invalid_role")
    not_found("memberships: unknown user", oms.create_organization_membership,
                 user_id=UNKNOWN["user"], organization_id=a.id)
    not_found("memberships: unknown organization", oms.create_organization_membership,
                 user_id=u1.id, organization_id=UNKNOWN["org"])

    g = call("memberships: get", oms.get_organization_membership, m1.id)
    check_membership("memberships: get", g, u1, a.id, "member", "active", name_a)
    not_found("memberships: get unknown id", oms.get_organization_membership, UNKNOWN["om"])

    # list filters
    eventually("memberships: list organization_id=A", lambda: oms.list_organization_memberships(organization_id=a.id),
               lambda p: None if sorted(ids(p.data)) == sorted([m1.id, m2.id]) else f"got {ids(p.data)}")
    eventually("memberships: list user_id=u1", lambda: oms.list_organization_memberships(user_id=u1.id),
               lambda p: None if sorted(ids(p.data)) == sorted([m1.id, m3.id]) else f"got {ids(p.data)}")
    r = call("memberships: list user_id+organization_id", oms.list_organization_memberships, user_id=u1.id,
             organization_id=a.id)
    check_eq("memberships: both filters narrow to one", ids(r.data), [m1.id])
    check("memberships: listed items carry role, roles and user",
          r.data and r.data[0].role.slug == "member" and r.data[0].user.id == u1.id, _short(r.data))
    expect_error("memberships: list without user_id or organization_id", BadRequestError,
                 oms.list_organization_memberships, code="missing_user_id_or_organization_id")

    # update role
    up = call("memberships: update role to admin", oms.update_organization_membership, m1.id,
              role=RoleSingle(role_slug="admin"))
    check_membership("memberships: update", up, u1, a.id, "admin", "active")
    g = call("memberships: get after update", oms.get_organization_membership, m1.id)
    check_eq("memberships: get shows the new role", g.role.slug, "admin")
    expect_error("memberships: update to an unknown role", UnprocessableEntityError,
                 oms.update_organization_membership, m1.id, role=RoleSingle(role_slug=f"no-such-role-{RUN}"),
                 code="invalid_role", field_code="invalid_role")
    not_found("memberships: update unknown id", oms.update_organization_membership,
                 UNKNOWN["om"], role=RoleSingle(role_slug="member"))

    # deactivate / reactivate (PUT without a body)
    d = call("memberships: deactivate", oms.deactivate_organization_membership, m2.id)
    check_eq("memberships: deactivate -> inactive", getattr(d.status, "value", d.status), "inactive")
    check_eq("memberships: deactivate keeps the role", d.role.slug, "admin")
    d = call("memberships: deactivate again (no-op)", oms.deactivate_organization_membership, m2.id)
    check_eq("memberships: still inactive", getattr(d.status, "value", d.status), "inactive")
    # The spec: "By default only active memberships are returned".
    eventually("memberships: default list shows only active memberships",
               lambda: oms.list_organization_memberships(organization_id=a.id),
               lambda p: None if ids(p.data) == [m1.id] else f"got {ids(p.data)}")
    eventually("memberships: default list by user shows no inactive membership",
               lambda: oms.list_organization_memberships(user_id=u2.id),
               lambda p: None if ids(p.data) == [] else f"got {ids(p.data)}")
    eventually("memberships: statuses=[inactive]",
               lambda: oms.list_organization_memberships(organization_id=a.id, statuses=["inactive"]),
               lambda p: None if ids(p.data) == [m2.id] else f"got {ids(p.data)}")
    eventually("memberships: statuses=[active,inactive] (comma-joined)",
               lambda: oms.list_organization_memberships(organization_id=a.id, statuses=["active", "inactive"]),
               lambda p: None if sorted(ids(p.data)) == sorted([m1.id, m2.id]) else f"got {ids(p.data)}")
    not_found("memberships: deactivate unknown id", oms.deactivate_organization_membership,
                 UNKNOWN["om"])
    # The spec: a create matching an inactive membership activates it with the given role.
    again = call("memberships: create matching the inactive membership", oms.create_organization_membership,
                 user_id=u2.id, organization_id=a.id, role=RoleSingle(role_slug="member"))
    check_eq("memberships: the match is reactivated with the new role, same id",
             (again.id, getattr(again.status, "value", again.status), again.role.slug), (m2.id, "active", "member"))
    call("memberships: deactivate after the reactivating create", oms.deactivate_organization_membership, m2.id)
    rct = call("memberships: reactivate", oms.reactivate_organization_membership, m2.id)
    check_eq("memberships: reactivate -> active, role retained",
             (getattr(rct.status, "value", rct.status), rct.role.slug), ("active", "member"))
    not_found("memberships: reactivate unknown id", oms.reactivate_organization_membership,
                 UNKNOWN["om"])

    # organization_name follows a rename of the organization
    name_a3 = f"KL Org A third {RUN}"
    call("memberships: rename the organization", c.organizations.update_organization, a.id, name=name_a3)
    S.org_a_names.append(name_a3)
    g = call("memberships: get after org rename", oms.get_organization_membership, m1.id)
    check_eq("memberships: organization_name follows the rename", g.organization_name, name_a3)

    # pagination within one organization
    for i in range(4):
        pause()
        mu = call(f"memberships: create user for membership page {i + 1}", c.user_management.create_user,
                  email=email(f"m{i + 1}"))
        CREATED["user"].append(mu.id)
        S.mpage_users.append(mu)
        pause()
        mm = call(f"memberships: create membership {i + 1} for pagination", oms.create_organization_membership,
                  user_id=mu.id, organization_id=a.id)
        CREATED["om"].append(mm.id)
        S.mpage.append(mm)
    want = [m1.id, m2.id] + ids(S.mpage)
    pages, items = walk("memberships: walk list organization_id=A limit=2 by after",
                        oms.list_organization_memberships, 2, organization_id=a.id)
    got = ids(items)
    no_duplicates("memberships: no duplicates across pages", got)
    check_eq("memberships: pages cover exactly the org's memberships, newest first", got, list(reversed(want)))
    first = call("memberships: first page for auto_paging_iter", oms.list_organization_memberships,
                 organization_id=a.id, limit=2, order="asc")
    auto = call("memberships: SDK auto_paging_iter (order=asc, limit=2)", lambda: list(first.auto_paging_iter()))
    check_eq("memberships: auto_paging_iter yields all, oldest first", ids(auto), want)
    r = call("users: list_users organization_id=A",
             c.user_management.list_users, organization_id=a.id, limit=100)
    check_eq("users: list_users organization_id filter returns the org's members",
             sorted(ids(r.data)), sorted([u1.id, u2.id] + ids(S.mpage_users)))

    # delete
    r = call("memberships: delete", oms.delete_organization_membership, m2.id)
    check_eq("memberships: delete returns nothing", r, None)
    DELETED.add(m2.id)
    not_found("memberships: get after delete", oms.get_organization_membership, m2.id)
    not_found("memberships: delete again", oms.delete_organization_membership, m2.id)
    eventually("memberships: deleted membership leaves every status list",
               lambda: oms.list_organization_memberships(user_id=u2.id, statuses=["active", "inactive", "pending"]),
               lambda p: None if ids(p.data) == [] else f"got {ids(p.data)}")
    m2b = call("memberships: the same user can join again after delete", oms.create_organization_membership,
               user_id=u2.id, organization_id=a.id)
    CREATED["om"].append(m2b.id)
    call("memberships: delete the re-created membership", oms.delete_organization_membership, m2b.id)
    DELETED.add(m2b.id)


def test_deletes(c: WorkOSClient) -> None:
    """Delete the run's objects in dependency order, checking what deletion frees."""
    section("deletes")
    oms, um, orgs = c.organization_membership, c.user_management, c.organizations
    for om_id in [S.m1.id, S.m3.id] + ids(S.mpage):
        call(f"deletes: delete membership {om_id}", oms.delete_organization_membership, om_id)
        DELETED.add(om_id)

    u1 = S.u1
    call("deletes: delete user u1", um.delete_user, u1.id)
    DELETED.add(u1.id)
    not_found("deletes: get_user u1 after delete", um.get_user, u1.id)
    not_found("deletes: external_id of a deleted user no longer resolves", um.get_user_by_external_id, S.u1_ext)
    again = call("deletes: a deleted user's email can be used again", um.create_user, email=u1.email)
    CREATED["user"].append(again.id)
    call("deletes: delete the re-created user", um.delete_user, again.id)
    DELETED.add(again.id)
    for uid in [S.u2.id] + ids(S.pusers[:4]) + ids(S.mpage_users):
        call(f"deletes: delete user {uid}", um.delete_user, uid)
        DELETED.add(uid)

    a = S.org_a
    call("deletes: delete organization A", orgs.delete_organization, a.id)
    DELETED.add(a.id)
    not_found("deletes: get_organization A after delete", orgs.get_organization, a.id)
    for d in a.domains:
        not_found(f"deletes: domain {d.domain} of a deleted organization is gone", c.organization_domains.get_organization_domain, d.id)
    eventually("deletes: a deleted organization's domains match nothing",
               lambda: orgs.list_organizations(domains=[S.dom_a2]),
               lambda p: None if ids(p.data) == [] else f"got {ids(p.data)}")
    again = call("deletes: a released verified domain can be claimed again", orgs.create_organization,
                 name=f"KL Org again {RUN}",
                 domain_data=[OrganizationDomainData(domain=S.dom_a2, state=OrganizationDomainDataState.VERIFIED)])
    CREATED["org"].append(again.id)
    check_eq("deletes: the reclaimed domain is verified", domain_states(again), {S.dom_a2: "verified"})
    call("deletes: delete the reclaiming organization", orgs.delete_organization, again.id)
    DELETED.add(again.id)
    for oid in [S.org_b.id] + ids(S.porgs[:3]):
        call(f"deletes: delete organization {oid}", orgs.delete_organization, oid)
        DELETED.add(oid)


ORG_EVENT_NAMES = [
    "organization.created", "organization.updated", "organization.deleted",
    "organization_domain.created", "organization_domain.updated", "organization_domain.verified",
    "organization_domain.verification_failed", "organization_domain.deleted",
    "organization_membership.created", "organization_membership.updated", "organization_membership.deleted",
]
USER_EVENT_NAMES = ["user.created", "user.updated", "user.deleted"]


def ev_name(e: Any) -> Optional[str]:
    if isinstance(e, EventSchemaUnknown):
        return e.raw_data.get("event")
    return getattr(e, "event", None)


def ev_subject(e: Any) -> Tuple[Optional[str], Optional[str]]:
    """(id of the object the event is about, its organization id if any)."""
    d = getattr(e, "data", None)
    if d is None:
        return None, None
    if hasattr(d, "organization_domain"):  # organization_domain.verification_failed
        d = d.organization_domain
    return getattr(d, "id", None), getattr(d, "organization_id", None)


def positions(evs: Sequence[Any], name: str, subject: str) -> List[int]:
    return [i for i, e in enumerate(evs) if ev_name(e) == name and ev_subject(e)[0] == subject]


def test_events(c: WorkOSClient) -> None:
    section("events")
    ev = c.events
    a = S.org_a
    since = iso(RUN_START - timedelta(minutes=2))

    def all_org_events(order: str, limit: int = 100) -> List[Any]:
        _, items = walk(f"events: walk organization_id=A order={order} limit={limit}", ev.list_events, limit,
                        events=ORG_EVENT_NAMES, organization_id=a.id, order=order)
        return items

    expected_tail = [("organization.deleted", a.id)]

    def org_events_complete(evs: List[Any]) -> Optional[str]:
        need = [("organization.created", a.id), ("organization.updated", a.id),
                ("organization_domain.created", S.dom_c.id), ("organization_domain.deleted", S.dom_c.id),
                ("organization_membership.created", S.m1.id), ("organization_membership.updated", S.m1.id),
                ("organization_membership.deleted", S.m1.id), ("organization_membership.created", S.m2.id),
                ("organization_membership.deleted", S.m2.id)] + expected_tail
        need.append(("organization_domain.verification_failed", S.dom_c.id))
        need.append(("organization_domain.verified", S.dom_v))
        missing = [n for n in need if not positions(evs, n[0], n[1])]
        return None if not missing else f"missing events {missing}; got {[(ev_name(e), ev_subject(e)[0]) for e in evs]}"

    evs = eventually("events: organization A's events are all listed (asc)", lambda: all_org_events("asc"),
                     org_events_complete)
    names = [ev_name(e) for e in evs]
    check("events: every event is a known WorkOS event model (not EventSchemaUnknown)",
          not [e for e in evs if isinstance(e, EventSchemaUnknown)],
          [e.raw_data for e in evs if isinstance(e, EventSchemaUnknown)][:3])
    check("events: only the requested event names are returned", set(names) <= set(ORG_EVENT_NAMES), set(names))
    strays = [(ev_name(e), ev_subject(e)) for e in evs if a.id not in ev_subject(e)]
    check("events: organization_id filter returns only organization A's events", not strays, strays[:5])
    check("events: the second organization's membership is not included",
          not positions(evs, "organization_membership.created", S.m3.id))
    check_eq("events: event ids are unique", len({e.id for e in evs}), len(evs))
    check("events: event ids have the event_ prefix", all(e.id.startswith("event_") for e in evs),
          [e.id for e in evs][:3])
    check("events: created_at is timezone-aware and non-decreasing in asc order",
          all(tz_aware(e.created_at) for e in evs)
          and all(evs[i].created_at <= evs[i + 1].created_at for i in range(len(evs) - 1)),
          [iso(e.created_at) for e in evs])

    def first(name: str, subject: str) -> int:
        return positions(evs, name, subject)[0]

    def last(name: str, subject: str) -> int:
        return positions(evs, name, subject)[-1]

    check("events: organization.created comes first for A",
          first("organization.created", a.id) == 0 and names.count("organization.created") == 1, names)
    check("events: organization.updated (>= 2) after organization.created",
          len(positions(evs, "organization.updated", a.id)) >= 2
          and first("organization.updated", a.id) > first("organization.created", a.id), names)
    dc = S.dom_c.id
    check("events: organization_domain created < verification_failed < deleted",
          first("organization_domain.created", dc) < first("organization_domain.verification_failed", dc)
          < first("organization_domain.deleted", dc), names)
    vf = evs[first("organization_domain.verification_failed", dc)]
    check("events: verification_failed carries a reason and the failed domain",
          isinstance(getattr(vf.data, "reason", None), (str,)) and
          getattr(vf.data.organization_domain.state, "value", vf.data.organization_domain.state) == "failed",
          _short(vf))
    check("events: organization_domain.verified for the domain with its token published",
          first("organization_domain.created", S.dom_v) < first("organization_domain.verified", S.dom_v), names)
    check("events: no organization_domain.verified for the unverifiable domain",
          not positions(evs, "organization_domain.verified", dc))
    dcreated = evs[first("organization_domain.created", dc)]
    check_eq("events: organization_domain.created data is the domain",
             (dcreated.data.domain, dcreated.data.organization_id), (S.dom_c.domain, a.id))

    m1, m2 = S.m1.id, S.m2.id
    check("events: membership m1 created < updated < deleted",
          first("organization_membership.created", m1) < first("organization_membership.updated", m1)
          < first("organization_membership.deleted", m1), names)
    m1c = evs[first("organization_membership.created", m1)]
    check_eq("events: organization_membership.created data", (m1c.data.user_id, m1c.data.organization_id,
             m1c.data.role.slug, getattr(m1c.data.status, "value", m1c.data.status)), (S.u1.id, a.id, "member", "active"))
    m1u = evs[first("organization_membership.updated", m1)]
    check_eq("events: organization_membership.updated data has the new role", m1u.data.role.slug, "admin")
    m2u = positions(evs, "organization_membership.updated", m2)
    # deactivate; the no-op deactivate emits none; the reactivating create (reactivation, then the
    # role change, both showing the object after the command); deactivate; reactivate.
    check_eq("events: m2 updated events show each change",
             [(getattr(evs[i].data.status, "value", evs[i].data.status), evs[i].data.role.slug) for i in m2u],
             [("inactive", "admin"), ("active", "member"), ("active", "member"), ("inactive", "member"),
              ("active", "member")])
    check("events: m2 created < updated < deleted",
          first("organization_membership.created", m2) < m2u[0] and m2u[-1] < first("organization_membership.deleted", m2),
          names)
    od = first("organization.deleted", a.id)
    before_delete = [first("organization_domain.deleted", dc), last("organization_membership.deleted", m1),
                     last("organization.updated", a.id)]
    check("events: organization.deleted comes after everything done before the delete", od > max(before_delete), names)
    check_eq("events: organization.deleted data is the organization", evs[od].data.id, a.id)

    # desc is the reverse of asc
    desc = all_org_events("desc")
    check_eq("events: order=desc is the reverse of order=asc", [e.id for e in desc], [e.id for e in reversed(evs)])

    # small pages, walked by the after cursor (and by the SDK's auto_paging_iter)
    small = all_org_events("asc", limit=2)
    check_eq("events: limit=2 pages walked by after equal the single big page", [e.id for e in small],
             [e.id for e in evs])
    p1 = call("events: first page limit=3", ev.list_events, events=ORG_EVENT_NAMES, organization_id=a.id,
              order="asc", limit=3)
    check_eq("events: limit=3 returns 3 events", len(p1.data), 3)
    p2 = call("events: list_events after=<3rd event>", ev.list_events, events=ORG_EVENT_NAMES, organization_id=a.id,
              order="asc", limit=3, after=p1.data[-1].id)
    check_eq("events: after cursor continues right after the cursor", [e.id for e in p2.data],
             [e.id for e in evs[3:6]])
    auto = call("events: SDK auto_paging_iter", lambda: list(p1.auto_paging_iter()))
    check_eq("events: auto_paging_iter yields every event once", [e.id for e in auto], [e.id for e in evs])

    # events filter narrows by name
    only = call("events: events=[organization.updated] organization_id=A", ev.list_events,
                events=["organization.updated"], organization_id=a.id, order="asc", limit=100)
    check("events: a one-name filter returns only that name",
          only.data and all(ev_name(e) == "organization.updated" for e in only.data),
          [ev_name(e) for e in only.data])

    # user and organization creations since the run started, via a two-name filter (comma-joined)
    def created_since() -> List[Any]:
        _, items = walk("events: walk events=[user.created,organization.created] since run start", ev.list_events,
                        100, events=["user.created", "organization.created"], range_start=since, order="asc")
        return items

    want_users = [S.u1.id, S.u2.id] + ids(S.pusers) + ids(S.mpage_users)
    want_orgs = [a.id, S.org_b.id] + ids(S.porgs)

    def creations_complete(items: List[Any]) -> Optional[str]:
        bad = {ev_name(e) for e in items} - {"user.created", "organization.created"}
        if bad:
            return f"unrequested event names {bad}"
        got_u = [ev_subject(e)[0] for e in items if ev_name(e) == "user.created"]
        got_o = [ev_subject(e)[0] for e in items if ev_name(e) == "organization.created"]
        mu = [i for i in got_u if i in set(want_users)]
        mo = [i for i in got_o if i in set(want_orgs)]
        if mu != want_users or mo != want_orgs:
            return f"expected users {want_users} and orgs {want_orgs} in creation order, got {mu} and {mo}"
        return None

    items = eventually("events: user.created and organization.created for this run, in creation order",
                       created_since, creations_complete)
    uc = [e for e in items if ev_name(e) == "user.created" and ev_subject(e)[0] == S.u1.id][0]
    check_eq("events: user.created data is the user at creation", (uc.data.email, uc.data.first_name),
             (S.u1.email, "Ada"))
    oc = [e for e in items if ev_name(e) == "organization.created" and ev_subject(e)[0] == a.id][0]
    check_eq("events: organization.created data is the organization at creation",
             (oc.data.name, sorted(d.domain for d in oc.data.domains)), (S.org_a_names[0], sorted([S.dom_a1, S.dom_a2])))

    # the lifecycle of user u1
    def user_events() -> List[Any]:
        _, items = walk("events: walk user.* since run start", ev.list_events, 100, events=USER_EVENT_NAMES,
                        range_start=since, order="asc")
        return [e for e in items if ev_subject(e)[0] == S.u1.id]

    u1evs = eventually("events: u1 has user.created, user.updated, user.deleted", user_events,
                       lambda xs: None if {"user.created", "user.updated", "user.deleted"} <= {ev_name(e) for e in xs}
                       else f"got {[ev_name(e) for e in xs]}")
    un = [ev_name(e) for e in u1evs]
    check("events: u1's events are in order created < updated < deleted",
          un[0] == "user.created" and un[-1] == "user.deleted" and "user.updated" in un[1:-1], un)
    upd = u1evs[un.index("user.updated")]
    check_eq("events: user.updated data shows the update", (upd.data.first_name, upd.data.metadata),
             ("Augusta", {"tier": "platinum", "team": "analytical"}))
    check_eq("events: user.deleted data is the user", u1evs[-1].data.id, S.u1.id)


def test_audit_logs(c: WorkOSClient) -> None:
    section("audit logs")
    al = c.audit_logs
    org = call("audit: create_organization for the audit trail", c.organizations.create_organization,
               name=f"KL Audit {RUN}")
    CREATED["org"].append(org.id)
    action = f"kl_{RUN}.invoice.paid"

    schema = call("audit: create_schema", al.create_schema, action,
                  targets=[AuditLogSchemaTarget(type="invoice", metadata={
                      "type": "object", "properties": {"cost": {"type": "number"}}})],
                  actor=AuditLogSchemaActor(metadata={"type": "object", "properties": {"role": {"type": "string"}}}))
    check_eq("audit: the first schema is version 1", (schema.object, schema.version), ("audit_log_schema", 1))
    check("audit: schema created_at is tz-aware", tz_aware(schema.created_at), schema.created_at)
    page = call("audit: list_action_schemas", al.list_action_schemas, action)
    check_eq("audit: list_action_schemas has the version", [x.version for x in page.data], [1])
    actions = call("audit: list_actions", al.list_actions, limit=100)
    check("audit: list_actions has the action with its latest schema",
          any(a.name == action and a.schema.version == 1 for a in actions.data),
          [(a.name, a.schema.version) for a in actions.data])

    occurred = datetime.now(timezone.utc) - timedelta(minutes=5)
    event = AuditLogEvent(
        action=action,
        occurred_at=occurred,
        actor=AuditLogEventActor(id=f"user_{RUN}", type="user", name="Ada", metadata={"role": "admin"}),
        targets=[AuditLogEventTarget(id=f"inv_{RUN}", type="invoice", metadata={"cost": 12.5})],
        context=AuditLogEventContext(location="203.0.113.7", user_agent="conformance"),
        metadata={"run": RUN},
    )
    key = str(uuid.uuid4())
    r1 = call("audit: create_event with an idempotency key", al.create_event, organization_id=org.id,
              event=event, idempotency_key=key)
    check_eq("audit: create_event answers success", r1.success, True)
    r2 = call("audit: create_event repeated with the same key", al.create_event, organization_id=org.id,
              event=event, idempotency_key=key)
    check_eq("audit: the repeat answers the same", r2.success, True)
    bad = AuditLogEvent(action=action, occurred_at=occurred,
                        actor=AuditLogEventActor(id="u", type="user", metadata={"role": "admin"}),
                        targets=[AuditLogEventTarget(id="t", type="team")],
                        context=AuditLogEventContext(location="203.0.113.7"))
    err = expect_error("audit: an event against its schema's target types", BadRequestError,
                       al.create_event, organization_id=org.id, event=bad, code="invalid_audit_log_event")
    check("audit: the 400 lists instancePath errors",
          any(isinstance(x, dict) and str(x.get("instancePath", "")).startswith("/targets")
              for x in (err.response_json or {}).get("errors", [])), err.response_json)
    not_found("audit: create_event for an unknown organization", al.create_event,
              organization_id=UNKNOWN["org"], event=event)

    start, end = iso(occurred - timedelta(minutes=1)), iso(occurred + timedelta(minutes=1))
    expect_error("audit: create_export with range_start after range_end", BadRequestError, al.create_export,
                 organization_id=org.id, range_start=end, range_end=start,
                 code="invalid_audit_log_export_range_date")
    export = call("audit: create_export", al.create_export, organization_id=org.id, range_start=start,
                  range_end=end, actions=[action])
    check("audit: export id and state", export.id.startswith("audit_log_export_")
          and str(getattr(export.state, "value", export.state)) in ("pending", "ready"), export.to_dict())
    got = call("audit: get_export", al.get_export, export.id)
    check("audit: get_export is ready with a url", str(getattr(got.state, "value", got.state)) == "ready"
          and isinstance(got.url, str) and got.url.startswith(BASE_URL.rstrip("/")), got.to_dict())
    with urllib.request.urlopen(got.url, timeout=30) as resp:  # noqa: S310 - our own server
        status = resp.status
        text = resp.read().decode("utf-8")
    lines = [line for line in text.split("\r\n") if line]
    check_eq("audit: the export URL serves CSV without an API key", status, 200)
    check("audit: the CSV has a header and exactly one row for the idempotent event",
          len(lines) == 2 and lines[0].startswith('"id","action"') and action in lines[1], lines)
    not_found("audit: get_export of an unknown id", al.get_export, "audit_log_export_01JZZZZZZZZZZZZZZZZZZZZZZZ")


def test_contract(c: WorkOSClient) -> None:
    """The spec's validation shape, plain messages, NFC emails, user names, stripe_customer_id,
    cursors and the audit log retention operations, through the SDK."""
    section("contract")
    um, orgs, oms = c.user_management, c.organizations, c.organization_membership

    # The 422 shape: top-level invalid_request_parameters, the field's own code in `errors`.
    e = invalid("contract: an invalid email", um.create_user, email=f"kl-{RUN}-no-at", field_code="invalid_email")
    check_eq("contract: errors[0] names the field", e.errors[0]["field"], "email")
    # Body errors in plain words (the SDK sends what it is given).
    e = invalid("contract: an email that is not a string", um.create_user, email=12345, field_code="invalid_type")
    check_eq("contract: wrong type in plain words", (e.message, e.errors[0]["field"]),
             ("email must be a string", "email"))
    e = invalid("contract: email_verified that is not a boolean", um.create_user, email=email("wt"),
                email_verified="yes", field_code="invalid_type")
    check_eq("contract: boolean expected, in plain words", e.message, "email_verified must be a boolean")
    e = invalid("contract: metadata that is not an object", um.create_user, email=email("wt2"), metadata=["x"],
                field_code="invalid_type")
    check_eq("contract: object expected, in plain words", e.message, "metadata must be an object")

    # Emails: NFC before uniqueness, invisible and direction characters refused.
    composed, decomposed = f"kl-{RUN}-caf\u00e9@example.com", f"kl-{RUN}-cafe\u0301@example.com"
    cafe = call("contract: create café (composed)", um.create_user, email=composed)
    CREATED["user"].append(cafe.id)
    check_eq("contract: the email is stored in NFC", cafe.email, composed)
    invalid("contract: café decomposed is the same email", um.create_user, email=decomposed,
            field_code="email_not_available")
    found = call("contract: list_users by the decomposed spelling", um.list_users, email=decomposed)
    check_eq("contract: the email filter normalises too", ids(found.data), [cafe.id])
    invalid("contract: a zero-width space in an email", um.create_user, email=f"kl-{RUN}-a\u200bb@example.com",
            field_code="invalid_email")
    invalid("contract: a right-to-left override in an email", um.create_user,
            email=f"kl-{RUN}-ab\u202e@example.com", field_code="invalid_email")

    # `name`, and the end user's ip_address/user_agent (recorded in the event's metadata).
    named = call("contract: create_user with name, ip_address and user_agent", um.create_user,
                 email=email("named"), name="Ada King", ip_address="203.0.113.9", user_agent="conformance/1")
    CREATED["user"].append(named.id)
    check_eq("contract: the user's name is returned", named.name, "Ada King")
    up = call("contract: update_user name", um.update_user, named.id, name="Ada Lovelace King")
    check_eq("contract: the new name is returned", up.name, "Ada Lovelace King")
    check_eq("contract: get_user shows the name", call("contract: get_user", um.get_user, named.id).name,
             "Ada Lovelace King")
    invalid("contract: an ip_address that is not one", um.create_user, email=email("badip"), ip_address="nope",
            field_code="invalid_ip_address")

    # stripe_customer_id: the spec types it a string; absent (never null) while unset.
    org = call("contract: create_organization", orgs.create_organization, name=f"KL contract {RUN}")
    CREATED["org"].append(org.id)
    status, raw = raw_get(f"/organizations/{org.id}")
    check("contract: stripe_customer_id is absent while unset", status == 200 and "stripe_customer_id" not in raw,
          raw)
    up = call("contract: update_organization stripe_customer_id", orgs.update_organization, org.id,
              stripe_customer_id=f"cus_{RUN}")
    check_eq("contract: stripe_customer_id is returned once set", up.stripe_customer_id, f"cus_{RUN}")

    # Garbage cursors are refused on every list, like /events.
    for label, fn, kwargs in [
        ("list_users after=garbage", um.list_users, {"after": "garbage"}),
        ("list_users before=<an organization id>", um.list_users, {"before": org.id}),
        ("list_organizations after=garbage", orgs.list_organizations, {"after": "garbage"}),
        ("list_organization_memberships before=garbage", oms.list_organization_memberships,
         {"organization_id": org.id, "before": "garbage"}),
        ("list_events after=garbage", c.events.list_events, {"events": ["user.created"], "after": "garbage"}),
        ("list_webhook_endpoints after=garbage", c.webhooks.list_webhook_endpoints, {"after": "garbage"}),
    ]:
        invalid(f"contract: {label}", fn, field_code="invalid_cursor", **kwargs)

    # Audit log configuration and retention.
    al = c.audit_logs
    conf = call("contract: get_audit_log_configuration", orgs.get_audit_log_configuration, org.id)
    check_eq("contract: configuration of a new organization",
             (conf.organization_id, conf.retention_period_in_days, getattr(conf.state, "value", conf.state),
              conf.log_stream), (org.id, 30, "active", None))
    r = call("contract: get_organization_audit_logs_retention", al.get_organization_audit_logs_retention, org.id)
    check_eq("contract: retention is null until set", r.retention_period_in_days, None)
    r = call("contract: set retention 365 days", al.update_organization_audit_logs_retention, org.id,
             retention=RetentionPeriodInDays(retention_period_in_days=365))
    check_eq("contract: the new retention is answered", r.retention_period_in_days, 365)
    r = call("contract: get retention after setting it", al.get_organization_audit_logs_retention, org.id)
    check_eq("contract: retention reads back", r.retention_period_in_days, 365)
    conf = call("contract: configuration after setting it", orgs.get_audit_log_configuration, org.id)
    check_eq("contract: configuration shows the retention", conf.retention_period_in_days, 365)
    r = call("contract: set retention as retention_period 1_MONTH", al.update_organization_audit_logs_retention,
             org.id, retention=RetentionPeriod(retention_period="1_MONTH"))
    check_eq("contract: 1_MONTH is 30 days", r.retention_period_in_days, 30)
    invalid("contract: a retention the spec does not allow", al.update_organization_audit_logs_retention, org.id,
            retention=RetentionPeriodInDays(retention_period_in_days=7), field_code="invalid_retention_period")
    not_found("contract: retention of an unknown organization", al.get_organization_audit_logs_retention,
              UNKNOWN["org"])
    not_found("contract: configuration of an unknown organization", orgs.get_audit_log_configuration,
              UNKNOWN["org"])
    status, trail = raw_get(f"/audit_logs/events?organization_id={org.id}&order=asc&limit=100")
    changes = [e for e in trail.get("data", []) if e.get("action") == "audit_logs_retention.updated"]
    check_eq("contract: both retention changes are in the organization's audit trail",
             (status, [e["metadata"]["retention_period_in_days"] for e in changes]), (200, [365, 30]))


class _DnsResponder:
    """An authoritative DNS server for the server's verification lookups, on 127.0.0.1 (UDP).

    Serves the TXT records in `records` (lower-case name without the trailing dot -> strings);
    other names get NXDOMAIN, known names asked for another type an empty NOERROR. Records every
    question it is asked, so a check can show the lookup came here.
    """

    def __init__(self, port: int) -> None:
        self.records: Dict[str, List[str]] = {}
        self.asked: List[Tuple[str, int]] = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def publish(self, name: str, value: str) -> None:
        with self.lock:
            self.records[name.lower().rstrip(".")] = [value]

    def questions(self) -> List[Tuple[str, int]]:
        with self.lock:
            return list(self.asked)

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _answer(self, q: bytes) -> Optional[bytes]:
        if len(q) < 12:
            return None
        qid, flags, qdcount = struct.unpack(">HHH", q[:6])
        if qdcount != 1:
            return struct.pack(">HHHHHH", qid, 0x8000 | (flags & 0x0100) | 1, 0, 0, 0, 0)  # FORMERR
        labels, i = [], 12
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        if i + 5 > len(q):
            return None
        qtype, _qclass = struct.unpack(">HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        with self.lock:
            self.asked.append((name, qtype))
            txt = self.records.get(name)
        answers = b""
        rcode, count = 0, 0
        if txt is None:
            rcode = 3  # NXDOMAIN
        elif qtype in (16, 255):  # TXT or ANY
            for value in txt:
                raw = value.encode("utf-8")
                rdata = b"".join(bytes([len(raw[k:k + 255])]) + raw[k:k + 255] for k in range(0, len(raw), 255))
                answers += struct.pack(">HHHIH", 0xC00C, 16, 1, 0, len(rdata)) + rdata
                count += 1
        header = struct.pack(">HHHHHH", qid, 0x8000 | 0x0400 | (flags & 0x0100) | rcode, 1, count, 0, 0)
        return header + question + answers

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


class _Receiver:
    """A webhook receiver on loopback (stdlib http.server in a thread) that records POSTs."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        got: List[Tuple[Dict[str, str], bytes]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                with lock:
                    got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.got = got
        self.lock = lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{RUN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> List[Tuple[Dict[str, str], bytes]]:
        with self.lock:
            return list(self.got)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sign_in(c: WorkOSClient) -> None:
    """Password sign-in, the access token checked offline against the JWKS with PyJWT's
    PyJWKClient, the SDK's sealed-session helpers (authenticate, refresh), sessions, revocation."""
    section("sign-in and sessions")
    import jwt as pyjwt
    from workos.session import seal_session_from_auth_response
    from cryptography.fernet import Fernet

    um = c.user_management
    addr = email(f"signin-{RUN}")
    password = f"pw-{RUN}-long enough"
    user = call("sign-in: create user with a password", um.create_user, email=addr,
                password=PasswordPlaintext(password=password), email_verified=True)
    auth = call("sign-in: authenticate_with_password", um.authenticate_with_password,
                email=addr, password=password, ip_address="203.0.113.5", user_agent="conformance")
    check_eq("sign-in: the response names the user", auth.user.id, user.id)
    check_eq("sign-in: authentication_method", str(getattr(auth.authentication_method, "value",
                                                          auth.authentication_method)), "Password")
    jwks = pyjwt.PyJWKClient(um.get_jwks_url())
    key = jwks.get_signing_key_from_jwt(auth.access_token)
    claims = pyjwt.decode(auth.access_token, key.key, algorithms=["RS256"], options={"verify_aud": False})
    check_eq("sign-in: access token sub is the user (verified by PyJWKClient)", claims.get("sub"), user.id)
    sid = claims.get("sid", "")
    check("sign-in: access token carries the session id", sid.startswith("session_"), claims)
    check("sign-in: access token expires within 5 minutes",
          0 < claims["exp"] - claims["iat"] <= 300, claims)
    expect_error("sign-in: wrong password", BadRequestError, um.authenticate_with_password,
                 email=addr, password="wrong password!", code="invalid_credentials")
    expect_error("sign-in: unknown email (same answer)", BadRequestError, um.authenticate_with_password,
                 email=email(f"nobody-{RUN}"), password=password, code="invalid_credentials")

    cookie_password = Fernet.generate_key().decode()
    sealed = seal_session_from_auth_response(access_token=auth.access_token, refresh_token=auth.refresh_token,
                                             user=auth.user.to_dict(), cookie_password=cookie_password)
    session = um.load_sealed_session(session_data=sealed, cookie_password=cookie_password)
    got = session.authenticate()
    check("sign-in: load_sealed_session().authenticate() accepts the token", got.authenticated, got)
    check_eq("sign-in: the session helper reads the session id", got.session_id, sid)
    refreshed = session.refresh()
    check("sign-in: Session.refresh() rotates the refresh token", refreshed.authenticated, refreshed)
    check_eq("sign-in: the refreshed session is the same session", refreshed.session_id, sid)
    again = call("sign-in: authenticate_with_refresh_token (the previous token, in its grace window)",
                 um.authenticate_with_refresh_token, refresh_token=auth.refresh_token)
    check("sign-in: a grace-window refresh returns a refresh token", bool(again.refresh_token), again)

    sessions = call("sign-in: list_sessions", um.list_sessions, user.id)
    listed = {s.id: s for s in sessions.data}
    check("sign-in: the session is listed", sid in listed, list(listed))
    check_eq("sign-in: the listed session is active", str(getattr(listed[sid].status, "value", listed[sid].status)),
             "active")
    check("sign-in: logout URL points at keyledger",
          um.get_logout_url(session_id=sid).startswith(BASE_URL.rstrip("/") + "/user_management/sessions/logout"))
    call("sign-in: revoke_session", um.revoke_session, session_id=sid)
    expect_error("sign-in: a revoked session's refresh token", BadRequestError,
                 um.authenticate_with_refresh_token, refresh_token=again.refresh_token, code="invalid_grant")
    denied = um.load_sealed_session(session_data=refreshed.sealed_session, cookie_password=cookie_password).refresh()
    check("sign-in: Session.refresh() of a revoked session is refused", not denied.authenticated, denied)

    expect_error("sign-in: wrong client id", AuthenticationError, WorkOSClient(
        api_key=API_KEY, client_id="client_someone_else", base_url=BASE_URL, max_retries=0
    ).user_management.authenticate_with_password, email=addr, password=password, code="invalid_client")


def test_sso_required(c: WorkOSClient) -> None:
    """An organization policy (keyledger's extension, set with a plain HTTP call) requiring SSO
    for its verified domain: the SDK's password sign-in raises SsoRequiredError."""
    section("organization policy: sso_required")
    um = c.user_management
    dom = domain("sso")
    org = call("sso: create an organization with a verified domain", c.organizations.create_organization,
               name=f"SSO {RUN}",
               domain_data=[OrganizationDomainData(domain=dom, state=OrganizationDomainDataState.VERIFIED)])
    status, policy = raw_put(f"/organizations/{org.id}/policy", {"authentication": "sso_required"})
    check_eq("sso: PUT /organizations/{id}/policy", (status, policy.get("authentication")), (200, "sso_required"))
    addr = f"ann-{RUN}@{dom}"
    password = f"pw-{RUN}-long enough"
    call("sso: create a verified user at the domain", um.create_user, email=addr,
         password=PasswordPlaintext(password=password), email_verified=True)
    e = expect_error("sso: authenticate_with_password at an SSO-only domain", SsoRequiredError,
                     um.authenticate_with_password, email=addr, password=password, code="sso_required")
    check_eq("sso: SsoRequiredError.email", e.email, addr)
    check_eq("sso: SsoRequiredError.connection_ids", e.connection_ids, [])
    check("sso: SsoRequiredError.pending_authentication_token", bool(e.pending_authentication_token), e)
    expect_error("sso: a wrong password is still invalid_credentials", BadRequestError,
                 um.authenticate_with_password, email=addr, password="wrong password!", code="invalid_credentials")
    raw_put(f"/organizations/{org.id}/policy", {"authentication": "any"})
    call("sso: signs in once the policy allows any method", um.authenticate_with_password,
         email=addr, password=password)


def enum_str(x: Any) -> str:
    return str(getattr(x, "value", x))


def check_code_object(label: str, obj: Any, kind: str, addr: str, user_id: Optional[str]) -> None:
    """The shape shared by magic_auth and email_verification objects (a 6-digit code)."""
    check(f"{label}: id has the {kind}_ prefix", isinstance(obj.id, str) and obj.id.startswith(f"{kind}_"), obj.id)
    check_eq(f"{label}: object", obj.object, kind)
    check_eq(f"{label}: email", obj.email, addr)
    if user_id is not None:
        check_eq(f"{label}: user_id", obj.user_id, user_id)
    else:
        check(f"{label}: user_id has the user_ prefix", str(obj.user_id).startswith("user_"), obj.user_id)
    check(f"{label}: the code is 6 digits", isinstance(obj.code, str) and len(obj.code) == 6 and obj.code.isdigit(),
          obj.code)
    check(f"{label}: timestamps are timezone-aware, expires_at after created_at",
          tz_aware(obj.created_at) and tz_aware(obj.expires_at) and obj.expires_at > obj.created_at,
          (obj.created_at, obj.expires_at))


def wrong_code(code: str) -> str:
    """A 6-digit code that differs from `code`."""
    return f"{(int(code) + 1) % 1000000:06d}"


def token_claims(token: str) -> Dict[str, Any]:
    """The claims of an access token (its signature is checked in the sign-in section)."""
    import jwt as pyjwt

    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def check_signed_in(label: str, auth: Any, user_id: str, method: str) -> None:
    check_eq(f"{label}: the response names the user", auth.user.id, user_id)
    check_eq(f"{label}: authentication_method", enum_str(auth.authentication_method), method)
    check(f"{label}: access and refresh tokens", bool(auth.access_token) and bool(auth.refresh_token), auth)
    check_eq(f"{label}: the access token's sub", token_claims(auth.access_token).get("sub"), user_id)


def verified_user(c: WorkOSClient, label: str, addr: str, password: Optional[str] = None,
                  verified: bool = True) -> Any:
    kwargs: Dict[str, Any] = {"email": addr, "email_verified": verified}
    if password is not None:
        kwargs["password"] = PasswordPlaintext(password=password)
    u = call(label, c.user_management.create_user, **kwargs)
    CREATED["user"].append(u.id)
    return u


def test_magic_auth(c: WorkOSClient) -> None:
    """Magic Auth: a code for a new email signs the user up (verified); one for an existing user
    signs them in; wrong, replayed and unknown codes are refused with WorkOS's codes."""
    section("magic auth")
    um = c.user_management
    new_addr = email("magic-new")
    m = call("magic auth: create_magic_auth (new email)", um.create_magic_auth, email=new_addr)
    check_code_object("magic auth: create response", m, "magic_auth", new_addr, None)
    got = call("magic auth: get_magic_auth", um.get_magic_auth, m.id)
    check_eq("magic auth: get_magic_auth returns the same id, code and user_id", (got.id, got.code, got.user_id),
             (m.id, m.code, m.user_id))
    check_code_object("magic auth: get response", got, "magic_auth", new_addr, m.user_id)
    not_found("magic auth: get_magic_auth of an unknown id", um.get_magic_auth,
              "magic_auth_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    expect_error("magic auth: wrong code", BadRequestError,
                 lambda: um.authenticate_with_magic_auth(code=wrong_code(m.code), email=new_addr),
                 code="invalid_one_time_code")
    expect_error("magic auth: the code of another email", BadRequestError,
                 lambda: um.authenticate_with_magic_auth(code=m.code, email=email("magic-other")),
                 code="invalid_one_time_code")
    auth = call("magic auth: authenticate_with_magic_auth signs up the new email",
                um.authenticate_with_magic_auth, code=m.code, email=new_addr)
    CREATED["user"].append(auth.user.id)
    check_signed_in("magic auth (new email)", auth, m.user_id, "MagicAuth")
    check_eq("magic auth: the new user's email", auth.user.email, new_addr)
    check("magic auth: the new user's email is verified", auth.user.email_verified is True, auth.user)
    stored = call("magic auth: get_user of the new user", um.get_user, m.user_id)
    check_eq("magic auth: the new user exists, verified", (stored.email, stored.email_verified), (new_addr, True))
    expect_error("magic auth: a used code", BadRequestError,
                 lambda: um.authenticate_with_magic_auth(code=m.code, email=new_addr),
                 code="one_time_code_previously_used")

    old_addr = email("magic-old")
    old = verified_user(c, "magic auth: create an existing, unverified user", old_addr, verified=False)
    m2 = call("magic auth: create_magic_auth (existing user)", um.create_magic_auth, email=old_addr)
    check_code_object("magic auth: create response (existing user)", m2, "magic_auth", old_addr, old.id)
    code2 = call("magic auth: get_magic_auth (existing user)", um.get_magic_auth, m2.id).code
    auth2 = call("magic auth: authenticate_with_magic_auth signs in the existing user",
                 um.authenticate_with_magic_auth, code=code2, email=old_addr)
    check_signed_in("magic auth (existing user)", auth2, old.id, "MagicAuth")
    check("magic auth: the code verified the existing user's email", auth2.user.email_verified is True, auth2.user)

    invalid("magic auth: create_magic_auth with an invalid email", um.create_magic_auth, email="not an email",
            field_code="invalid_email")


def test_email_verification(c: WorkOSClient) -> None:
    """A password sign-in of an unverified user is held with email_verification_required until
    the code is given; send_verification_email / verify_email verify another user."""
    section("email verification")
    um = c.user_management
    addr = email("verify-signin")
    password = f"pw-{RUN}-verify-signin"
    user = verified_user(c, "email verification: create an unverified user with a password", addr,
                         password=password, verified=False)
    e = expect_error("email verification: authenticate_with_password of an unverified user",
                     EmailVerificationRequiredError, um.authenticate_with_password, email=addr, password=password,
                     code="email_verification_required")
    check_eq("email verification: the 403 status", e.status_code, 403)
    body = e.response_json or {}
    pending = body.get("pending_authentication_token")
    ev_id = body.get("email_verification_id")
    check("email verification: the body carries pending_authentication_token",
          isinstance(pending, str) and bool(pending), body)
    check("email verification: the body carries email_verification_id",
          isinstance(ev_id, str) and ev_id.startswith("email_verification_"), body)
    check_eq("email verification: the SDK reads the token and the id",
             (e.pending_authentication_token, e.email_verification_id, e.email),  # type: ignore[attr-defined]
             (pending, ev_id, addr))
    ev = call("email verification: get_email_verification", um.get_email_verification, ev_id)
    check_code_object("email verification: get response", ev, "email_verification", addr, user.id)
    not_found("email verification: get_email_verification of an unknown id", um.get_email_verification,
              "email_verification_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    expect_error("email verification: wrong code", BadRequestError,
                 lambda: um.authenticate_with_email_verification(code=wrong_code(ev.code),
                                                                 pending_authentication_token=pending),
                 code="invalid_one_time_code")
    expect_error("email verification: an unknown pending token", BadRequestError,
                 lambda: um.authenticate_with_email_verification(code=ev.code,
                                                                 pending_authentication_token=f"nope-{RUN}"),
                 code="invalid_pending_authentication_token")
    auth = call("email verification: authenticate_with_email_verification (after a wrong code)",
                um.authenticate_with_email_verification, code=ev.code, pending_authentication_token=pending)
    check_signed_in("email verification", auth, user.id, "Password")
    check("email verification: the user is now verified", auth.user.email_verified is True, auth.user)
    expect_error("email verification: the pending token works once", BadRequestError,
                 lambda: um.authenticate_with_email_verification(code=ev.code, pending_authentication_token=pending),
                 code="invalid_pending_authentication_token")
    again = call("email verification: the next password sign-in needs no code", um.authenticate_with_password,
                 email=addr, password=password)
    check_eq("email verification: signed in directly", again.user.id, user.id)

    addr2 = email("verify-api")
    password2 = f"pw-{RUN}-verify-api"
    other = verified_user(c, "email verification: create another unverified user", addr2, password=password2,
                          verified=False)
    sent = call("email verification: send_verification_email", um.send_verification_email, other.id)
    check_eq("email verification: send_verification_email returns the user", sent.user.id, other.id)
    check("email verification: still unverified after sending", sent.user.email_verified is False, sent.user)
    not_found("email verification: send_verification_email to an unknown user", um.send_verification_email,
              UNKNOWN["user"])
    # The API answers the code only through get_email_verification; a sign-in names the newest one.
    e2 = expect_error("email verification: the other user's sign-in is held", EmailVerificationRequiredError,
                      um.authenticate_with_password, email=addr2, password=password2,
                      code="email_verification_required")
    code2 = call("email verification: get_email_verification (other user)", um.get_email_verification,
                 e2.email_verification_id).code  # type: ignore[attr-defined]
    expect_error("email verification: verify_email with a wrong code", BadRequestError,
                 lambda: um.verify_email(other.id, code=wrong_code(code2)), code="email_verification_code_incorrect")
    not_found("email verification: verify_email of an unknown user",
              lambda: um.verify_email(UNKNOWN["user"], code=code2))
    verified = call("email verification: verify_email", um.verify_email, other.id, code=code2)
    check_eq("email verification: verify_email returns the user", verified.user.id, other.id)
    check("email verification: verify_email verified the email", verified.user.email_verified is True,
          verified.user)
    expect_error("email verification: verify_email of a verified email", BadRequestError,
                 lambda: um.verify_email(other.id, code=code2), code="email_previously_verified")
    check("email verification: get_user agrees", call("email verification: get_user", um.get_user,
                                                      other.id).email_verified is True)
    signed = call("email verification: the verified user signs in with the password", um.authenticate_with_password,
                  email=addr2, password=password2)
    check_eq("email verification: signed in", signed.user.id, other.id)


def test_password_reset(c: WorkOSClient) -> None:
    """Password reset: the SDK's reset_password(email) creates the token, get_password_reset
    reads it, confirm_password_reset(token, new_password) sets the password once."""
    section("password reset")
    um = c.user_management
    addr = email("reset")
    old_pw = f"pw-{RUN}-before reset"
    new_pw = f"pw-{RUN}-after reset"
    user = verified_user(c, "password reset: create a user with a password", addr, password=old_pw)
    pr = call("password reset: reset_password (create the token)", um.reset_password, email=addr)
    check("password reset: id has the password_reset_ prefix", str(pr.id).startswith("password_reset_"), pr.id)
    check_eq("password reset: object/user_id/email", (pr.object, pr.user_id, pr.email),
             ("password_reset", user.id, addr))
    check("password reset: a token and a URL carrying it",
          bool(pr.password_reset_token) and pr.password_reset_token in pr.password_reset_url, pr)
    check("password reset: expires_at after created_at, timezone-aware",
          tz_aware(pr.created_at) and tz_aware(pr.expires_at) and pr.expires_at > pr.created_at, pr)
    got = call("password reset: get_password_reset", um.get_password_reset, pr.id)
    check_eq("password reset: get_password_reset returns the same reset", (got.id, got.user_id, got.email,
             got.password_reset_token), (pr.id, user.id, addr, pr.password_reset_token))
    not_found("password reset: get_password_reset of an unknown id", um.get_password_reset,
              "password_reset_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    not_found("password reset: reset_password of an unknown email", um.reset_password, email=email("reset-nobody"))
    expect_error("password reset: a wrong token", BadRequestError, um.confirm_password_reset,
                 token=f"wrong-{RUN}", new_password=new_pw, code="password_reset_error",
                 field_code="password_reset_token_invalid")
    invalid("password reset: a too short new password", um.confirm_password_reset,
            token=pr.password_reset_token, new_password="short", field_code="password_strength_error")
    done = call("password reset: confirm_password_reset", um.confirm_password_reset,
                token=pr.password_reset_token, new_password=new_pw)
    check_eq("password reset: the response names the user", done.user.id, user.id)
    auth = call("password reset: the new password signs in", um.authenticate_with_password, email=addr,
                password=new_pw)
    check_eq("password reset: signed in with the new password", auth.user.id, user.id)
    expect_error("password reset: the old password fails", BadRequestError, um.authenticate_with_password,
                 email=addr, password=old_pw, code="invalid_credentials")
    expect_error("password reset: the token works once", BadRequestError, um.confirm_password_reset,
                 token=pr.password_reset_token, new_password=f"{new_pw} again", code="password_reset_error",
                 field_code="password_reset_token_previously_used")


def check_invitation(label: str, inv: Any, addr: str, org_id: str, role: Optional[str], state: str) -> None:
    check(f"{label}: id has the invitation_ prefix", str(inv.id).startswith("invitation_"), inv.id)
    check_eq(f"{label}: object/email/organization_id/role_slug/state",
             (inv.object, inv.email, inv.organization_id, inv.role_slug, enum_str(inv.state)),
             ("invitation", addr, org_id, role, state))
    check(f"{label}: a token and an accept URL carrying it",
          bool(inv.token) and inv.token in inv.accept_invitation_url, (inv.token, inv.accept_invitation_url))
    check(f"{label}: timestamps are timezone-aware, expires_at after created_at",
          tz_aware(inv.created_at) and tz_aware(inv.updated_at) and tz_aware(inv.expires_at)
          and inv.expires_at > inv.created_at, inv)


def test_invitations(c: WorkOSClient) -> None:
    """Invitations through the SDK: send, get, find by token, list, resend, revoke, and
    acceptance by a password sign-in with the invitation token and by accept_invitation."""
    section("invitations")
    um = c.user_management
    oms = c.organization_membership
    org = call("invitations: create an organization", c.organizations.create_organization, name=f"kl-{RUN}-invites")
    CREATED["org"].append(org.id)
    inviter = verified_user(c, "invitations: create the inviter", email("inviter"))

    addr1 = email("invitee-1")
    inv1 = call("invitations: send_invitation (role admin, inviter)", um.send_invitation, email=addr1,
                organization_id=org.id, role_slug="admin", inviter_user_id=inviter.id)
    check_invitation("invitations: sent", inv1, addr1, org.id, "admin", "pending")
    check_eq("invitations: inviter_user_id; not accepted nor revoked",
             (inv1.inviter_user_id, inv1.accepted_at, inv1.revoked_at, inv1.accepted_user_id),
             (inviter.id, None, None, None))
    days = (inv1.expires_at - inv1.created_at).total_seconds() / 86400
    check("invitations: expires in 7 days by default", 6.99 < days < 7.01, days)
    got = call("invitations: get_invitation", um.get_invitation, inv1.id)
    check_invitation("invitations: get", got, addr1, org.id, "admin", "pending")
    check_eq("invitations: get_invitation returns the same token", got.token, inv1.token)
    found = call("invitations: find_invitation_by_token", um.find_invitation_by_token, inv1.token)
    check_eq("invitations: find_invitation_by_token finds it", found.id, inv1.id)
    not_found("invitations: get_invitation of an unknown id", um.get_invitation,
              "invitation_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    not_found("invitations: find_invitation_by_token of an unknown token", um.find_invitation_by_token,
              f"nosuchtoken{RUN}")
    expect_error("invitations: the same email to the same organization again", BadRequestError,
                 um.send_invitation, email=addr1, organization_id=org.id, code="email_already_invited_to_organization")
    not_found("invitations: send_invitation to an unknown organization", um.send_invitation, email=email("invitee-x"),
              organization_id=UNKNOWN["org"])
    invalid("invitations: send_invitation with an invalid email", um.send_invitation, email="not an email",
            organization_id=org.id, field_code="invalid_email")

    addr2 = email("invitee-2")
    inv2 = call("invitations: send_invitation (default role)", um.send_invitation, email=addr2, organization_id=org.id)
    addr3 = email("invitee-3")
    inv3 = call("invitations: send_invitation (to revoke)", um.send_invitation, email=addr3, organization_id=org.id)
    eventually("invitations: list_invitations(organization_id=...) lists the three",
               lambda: um.list_invitations(organization_id=org.id, limit=100),
               lambda p: None if {inv1.id, inv2.id, inv3.id} <= set(ids(p.data)) else f"listed {ids(p.data)}")
    by_email = call("invitations: list_invitations(email=...)", um.list_invitations, email=addr2)
    check_eq("invitations: the email filter", ids(by_email.data), [inv2.id])

    resent = call("invitations: resend_invitation", um.resend_invitation, inv1.id)
    check_eq("invitations: resend keeps the invitation pending", (resent.id, enum_str(resent.state)),
             (inv1.id, "pending"))

    revoked = call("invitations: revoke_invitation", um.revoke_invitation, inv3.id)
    check_eq("invitations: revoked state", (revoked.id, enum_str(revoked.state)), (inv3.id, "revoked"))
    check("invitations: revoked_at is set", tz_aware(revoked.revoked_at), revoked)
    expect_error("invitations: resend a revoked invitation", BadRequestError, um.resend_invitation, inv3.id,
                 code="invite_revoked")
    expect_error("invitations: accept a revoked invitation", BadRequestError, um.accept_invitation, inv3.id,
                 code="invite_not_pending")
    expect_error("invitations: revoke twice", BadRequestError, um.revoke_invitation, inv3.id,
                 code="invite_not_pending")
    not_found("invitations: revoke an unknown invitation", um.revoke_invitation,
              "invitation_01JZZZZZZZZZZZZZZZZZZZZZZZ")

    # Accepted by a password sign-in that carries the invitation token.
    pw1 = f"pw-{RUN}-invitee-1"
    u1 = verified_user(c, "invitations: the first invitee signs up", addr1, password=pw1)
    auth = call("invitations: authenticate_with_password(invitation_token=...)", um.authenticate_with_password,
                email=addr1, password=pw1, invitation_token=inv1.token)
    check_eq("invitations: the sign-in is in the invitation's organization", auth.organization_id, org.id)
    check_eq("invitations: the access token's org_id", token_claims(auth.access_token).get("org_id"), org.id)
    acc = call("invitations: get_invitation after the sign-in", um.get_invitation, inv1.id)
    check_eq("invitations: accepted by the user", (enum_str(acc.state), acc.accepted_user_id), ("accepted", u1.id))
    check("invitations: accepted_at is set", tz_aware(acc.accepted_at), acc)
    ms = call("invitations: list_organization_memberships of the first invitee",
              oms.list_organization_memberships, user_id=u1.id, organization_id=org.id)
    check_eq("invitations: an active membership with the invitation's role",
             [(enum_str(m.status), m.role.slug) for m in ms.data], [("active", "admin")])
    for m in ms.data:
        CREATED["om"].append(m.id)
    expect_error("invitations: revoke an accepted invitation", BadRequestError, um.revoke_invitation, inv1.id,
                 code="invite_not_pending")
    expect_error("invitations: resend an accepted invitation", BadRequestError, um.resend_invitation, inv1.id,
                 code="invite_accepted")

    # Accepted through accept_invitation by an existing user.
    u2 = verified_user(c, "invitations: the second invitee exists", addr2)
    acc2 = call("invitations: accept_invitation", um.accept_invitation, inv2.id)
    check_eq("invitations: accept_invitation answers the accepted invitation",
             (acc2.id, enum_str(acc2.state), acc2.accepted_user_id), (inv2.id, "accepted", u2.id))
    ms2 = call("invitations: list_organization_memberships of the second invitee",
               oms.list_organization_memberships, user_id=u2.id, organization_id=org.id)
    check_eq("invitations: an active membership with the default role",
             [(enum_str(m.status), m.role.slug) for m in ms2.data], [("active", "member")])
    for m in ms2.data:
        CREATED["om"].append(m.id)
    expect_error("invitations: accept twice", BadRequestError, um.accept_invitation, inv2.id,
                 code="invite_not_pending")

    # Accepted through a Magic Auth sign-in of a new email with the invitation token.
    addr4 = email(f"invitee4-{RUN}")
    inv4 = call("invitations: send_invitation (for Magic Auth)", um.send_invitation, email=addr4,
                organization_id=org.id, role_slug="admin")
    m = call("invitations: create_magic_auth with the invitation token", um.create_magic_auth, email=addr4,
             invitation_token=inv4.token)
    code = call("invitations: get_magic_auth", um.get_magic_auth, m.id).code
    auth4 = call("invitations: authenticate_with_magic_auth with the invitation token",
                 um.authenticate_with_magic_auth, code=code, email=addr4, invitation_token=inv4.token)
    check_eq("invitations: the Magic Auth sign-in lands in the invitation's organization",
             auth4.organization_id, org.id)
    check_eq("invitations: with the invited role", token_claims(auth4.access_token).get("role"), "admin")
    check_eq("invitations: the invitation is accepted",
             enum_str(call("invitations: get (accepted by Magic Auth)", um.get_invitation, inv4.id).state),
             "accepted")


def test_connections(c: WorkOSClient) -> None:
    """SSO connections through the SDK: create_connection (OIDC complete: active at once; SAML by
    manual IdP fields; OIDC without its secret: a draft), get_connection, list_connections and its
    filters, update_connection (options merged, the draft completed), delete_connection, and the
    connection.* events; the client secret never comes back."""
    section("connections")
    from workos.sso import (
        CreateConnectionOIDCOptions,
        CreateConnectionSAMLOptions,
        CreateProtocolOptionsOIDC,
        CreateProtocolOptionsSAML,
        PatchConnectionOIDCOptions,
        PatchProtocolOptionsOIDC,
    )

    sso = c.sso
    domain = f"kl-{RUN}-conn.example.com"
    org = call("connections: create an organization with a domain", c.organizations.create_organization,
               name=f"kl-{RUN}-sso", domain_data=[OrganizationDomainData(domain=domain, state=OrganizationDomainDataState.VERIFIED)])
    CREATED["org"].append(org.id)
    secret = f"kl-{RUN}-client-secret"
    discovery = "https://idp.example.com/.well-known/openid-configuration"
    oidc = call("connections: create_connection (OIDC, complete)", sso.create_connection, organization_id=org.id,
                name=f"kl-{RUN}-oidc", external_id=f"kl-{RUN}-oidc",
                protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                    discovery_endpoint=discovery, client_id="kl-client", client_secret=secret)))
    check("connections: the id has the conn_ prefix", oidc.id.startswith("conn_"), oidc.id)
    check_eq("connections: GenericOIDC, active at once",
             (enum_str(oidc.connection_type), enum_str(oidc.state), oidc.organization_id),
             ("GenericOIDC", "active", org.id))
    check_eq("connections: domains are the organization's", [d.domain for d in oidc.domains], [domain])
    check("connections: timestamps are timezone-aware", tz_aware(oidc.created_at) and tz_aware(oidc.updated_at),
          oidc)
    again = call("connections: create_connection with the same external_id", sso.create_connection,
                 organization_id=org.id, external_id=f"kl-{RUN}-oidc",
                 protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                     discovery_endpoint=discovery, client_id="kl-client", client_secret=secret)))
    check_eq("connections: the same external_id answers that connection", again.id, oidc.id)

    cert = ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXzkeyledger\n-----END CERTIFICATE-----\n")
    saml = call("connections: create_connection (SAML, manual IdP fields)", sso.create_connection,
                organization_id=org.id, connection_type="OktaSAML",
                protocol_options=CreateProtocolOptionsSAML(saml_options=CreateConnectionSAMLOptions(
                    idp_entity_id=f"urn:kl:{RUN}", idp_sso_url="https://idp.example.com/saml/sso",
                    idp_signing_certs=[cert])))
    check_eq("connections: OktaSAML, active, named after the organization",
             (enum_str(saml.connection_type), enum_str(saml.state), saml.name), ("OktaSAML", "active", org.name))
    draft = call("connections: create_connection (OIDC without its secret)", sso.create_connection,
                 organization_id=org.id, name=f"kl-{RUN}-draft",
                 protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                     discovery_endpoint=discovery, client_id="kl-draft")))
    check_eq("connections: incomplete options make a draft", enum_str(draft.state), "draft")

    got = call("connections: get_connection", sso.get_connection, oidc.id)
    check_eq("connections: get_connection returns it", (got.id, got.name), (oidc.id, f"kl-{RUN}-oidc"))
    raw = urllib.request.Request(f"{BASE_URL.rstrip('/')}/connections/{oidc.id}",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(raw, timeout=30) as resp:  # noqa: S310 - the server under test
        body = resp.read().decode()
    check("connections: the client secret is never returned", secret not in body, body)
    not_found("connections: get_connection of an unknown id", sso.get_connection, "conn_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    not_found("connections: create_connection in an unknown organization", sso.create_connection,
              organization_id=UNKNOWN["org"],
              protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                  discovery_endpoint=discovery, client_id="x", client_secret="y")))
    invalid("connections: create_connection with a discovery endpoint that is no URL", sso.create_connection,
            organization_id=org.id, field_code="invalid_url",
            protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
                discovery_endpoint="not a url", client_id="x", client_secret="y")))

    listed = eventually("connections: list_connections(organization_id=...) lists the three",
                        lambda: sso.list_connections(organization_id=org.id, limit=100),
                        lambda p: None if {oidc.id, saml.id, draft.id} == set(ids(p.data)) else f"listed {ids(p.data)}")
    check_eq("connections: newest first", ids(listed.data), [draft.id, saml.id, oidc.id])
    by_type = call("connections: list_connections(connection_type=OktaSAML)", sso.list_connections,
                   organization_id=org.id, connection_type="OktaSAML")
    check_eq("connections: the type filter", ids(by_type.data), [saml.id])
    by_domain = call("connections: list_connections(domain=...)", sso.list_connections, domain=domain, limit=100)
    check_eq("connections: the domain filter", set(ids(by_domain.data)), {oidc.id, saml.id, draft.id})
    page1 = call("connections: list_connections(limit=1)", sso.list_connections, organization_id=org.id, limit=1)
    check_eq("connections: one per page", ids(page1.data), [draft.id])
    everything = [x.id for x in page1.auto_paging_iter()] if hasattr(page1, "auto_paging_iter") else None
    if everything is not None:
        check_eq("connections: paging follows the cursors", everything, [draft.id, saml.id, oidc.id])

    completed = call("connections: update_connection completes the draft", sso.update_connection, draft.id,
                     name=f"kl-{RUN}-completed",
                     protocol_options=PatchProtocolOptionsOIDC(oidc_options=PatchConnectionOIDCOptions(
                         client_secret=f"kl-{RUN}-second")))
    check_eq("connections: completed draft is active and renamed",
             (enum_str(completed.state), completed.name), ("active", f"kl-{RUN}-completed"))
    expect_error("connections: update_connection cannot change the type", UnprocessableEntityError,
                 sso.update_connection, oidc.id, connection_type="GenericSAML", code=INVALID,
                 field_code="connection_type_immutable")
    not_found("connections: update_connection of an unknown id", sso.update_connection,
              "conn_01JZZZZZZZZZZZZZZZZZZZZZZZ", name="x")

    call("connections: delete_connection", sso.delete_connection, saml.id)
    not_found("connections: get_connection after delete", sso.get_connection, saml.id)
    not_found("connections: delete_connection twice", sso.delete_connection, saml.id)
    for name, want in (("connection.activated", {oidc.id, saml.id, draft.id}), ("connection.deleted", {saml.id})):
        eventually(f"connections: list_events({name})",
                   lambda name=name: c.events.list_events(events=[name], organization_id=org.id, limit=100),
                   lambda p, want=want: None if want <= {getattr(e.data, "id", None) for e in p.data}
                   else f"events {[getattr(e.data, 'id', None) for e in p.data]}")


def test_organization_selection(c: WorkOSClient) -> None:
    """A user in two organizations: the password sign-in answers organization_selection_required,
    authenticate_with_organization_selection finishes it in the chosen one."""
    section("organization selection")
    um = c.user_management
    oms = c.organization_membership
    addr = email("two-orgs")
    password = f"pw-{RUN}-two orgs"
    user = verified_user(c, "org selection: create a user with a password", addr, password=password)
    orgs = []
    for tag in ("x", "y"):
        o = call(f"org selection: create organization {tag}", c.organizations.create_organization,
                 name=f"kl-{RUN}-select-{tag}")
        CREATED["org"].append(o.id)
        m = call(f"org selection: membership in {tag}", oms.create_organization_membership, user_id=user.id,
                 organization_id=o.id)
        CREATED["om"].append(m.id)
        orgs.append(o)
    x, y = orgs
    outsider = call("org selection: an organization the user is not in", c.organizations.create_organization,
                    name=f"kl-{RUN}-select-z")
    CREATED["org"].append(outsider.id)

    e = expect_error("org selection: authenticate_with_password", OrganizationSelectionRequiredError,
                     um.authenticate_with_password, email=addr, password=password,
                     code="organization_selection_required")
    check_eq("org selection: the 403 status", e.status_code, 403)
    pending = e.pending_authentication_token  # type: ignore[attr-defined]
    check("org selection: the body carries pending_authentication_token",
          isinstance(pending, str) and bool(pending) and pending == (e.response_json or {}).get(
              "pending_authentication_token"), e.response_json)
    listed = {o.get("id"): o.get("name") for o in (e.organizations or [])}  # type: ignore[attr-defined]
    check_eq("org selection: the body lists both organizations with their names", listed,
             {x.id: x.name, y.id: y.name})
    check_eq("org selection: the body names the user", (e.user or {}).get("id"), user.id)  # type: ignore[attr-defined]
    auth = call("org selection: authenticate_with_organization_selection", um.authenticate_with_organization_selection,
                pending_authentication_token=pending, organization_id=y.id)
    check_eq("org selection: signed in to the chosen organization", (auth.user.id, auth.organization_id),
             (user.id, y.id))
    check_eq("org selection: the access token's org_id", token_claims(auth.access_token).get("org_id"), y.id)
    check_eq("org selection: authentication_method", enum_str(auth.authentication_method), "Password")
    expect_error("org selection: the pending token works once", BadRequestError,
                 um.authenticate_with_organization_selection, pending_authentication_token=pending,
                 organization_id=x.id, code="invalid_pending_authentication_token")

    e2 = expect_error("org selection: sign in again", OrganizationSelectionRequiredError,
                      um.authenticate_with_password, email=addr, password=password,
                      code="organization_selection_required")
    expect_error("org selection: an organization the user is not in", BadRequestError,
                 um.authenticate_with_organization_selection,
                 pending_authentication_token=e2.pending_authentication_token,  # type: ignore[attr-defined]
                 organization_id=outsider.id, code="organization_membership_not_found")
    expect_error("org selection: an unknown pending token", BadRequestError,
                 um.authenticate_with_organization_selection, pending_authentication_token=f"nope-{RUN}",
                 organization_id=x.id, code="invalid_pending_authentication_token")


def test_webhooks(c: WorkOSClient) -> None:
    section("webhooks")
    rx = _Receiver()
    try:
        ep = call("webhooks: create_webhook_endpoint", c.webhooks.create_webhook_endpoint,
                  endpoint_url=rx.url, events=["organization.created"])
        CREATED["we"].append(ep.id)
        check("webhooks: endpoint id has the we_ prefix", ep.id.startswith("we_"), ep.id)
        check("webhooks: endpoint secret is whsec_...", str(ep.secret).startswith("whsec_"), ep.secret)
        check_eq("webhooks: endpoint status", getattr(ep.status, "value", ep.status), "enabled")
        check_eq("webhooks: endpoint events", list(ep.events), ["organization.created"])
        listed = call("webhooks: list_webhook_endpoints", c.webhooks.list_webhook_endpoints, limit=100)
        check("webhooks: the endpoint is listed", ep.id in ids(listed.data), ids(listed.data))
        invalid("webhooks: unknown event name", c.webhooks.create_webhook_endpoint, endpoint_url=rx.url + "/other",
                events=["organization.exploded"], field_code="unknown_event_type")
        invalid("webhooks: invalid URL", c.webhooks.create_webhook_endpoint, endpoint_url="not a url",
                events=["organization.created"], field_code="invalid_url")
        expect_error("webhooks: duplicate URL", ConflictError,
                     c.webhooks.create_webhook_endpoint, endpoint_url=rx.url,
                     events=["organization.created"], code="duplicate_endpoint")
        not_found("webhooks: update unknown endpoint", c.webhooks.update_webhook_endpoint, "we_01JZZZZZZZZZZZZZZZZZZZZZZZ", status="disabled")

        org = call("webhooks: create an organization to cause an event",
                   c.organizations.create_organization, name=f"kl-{RUN}-webhook")
        CREATED["org"].append(org.id)

        def mine(items: List[Tuple[Dict[str, str], bytes]]) -> Optional[Tuple[Dict[str, str], bytes]]:
            for headers, body in items:
                try:
                    data = json.loads(body)
                except ValueError:
                    continue
                if data.get("event") == "organization.created" and data.get("data", {}).get("id") == org.id:
                    return headers, body
            return None

        got = eventually("webhooks: the organization.created delivery arrives", rx.received,
                         lambda items: None if mine(items) else f"received {len(items)} deliveries, none for {org.id}")
        headers, body = mine(got) or ({}, b"")
        sig = headers.get("workos-signature", "")
        check("webhooks: WorkOS-Signature header is t=..., v1=...",
              sig.startswith("t=") and ", v1=" in sig, sig)
        event = call("webhooks: the SDK's verify_event accepts the delivery", c.webhooks.verify_event,
                     event_body=body, event_signature=sig, secret=ep.secret)
        check_eq("webhooks: verified event id", event.id, json.loads(body)["id"])
        check_eq("webhooks: verified event name", getattr(event, "event", None), "organization.created")
        tampered = body.replace(org.id.encode(), b"org_01JTAMPEREDTAMPEREDTAMPERE")
        try:
            c.webhooks.verify_event(event_body=tampered, event_signature=sig, secret=ep.secret)
            raise CheckFailed("webhooks: a tampered body is rejected -- verify_event accepted it")
        except ValueError:
            _ok("webhooks: a tampered body is rejected (ValueError)")
        try:
            c.webhooks.verify_event(event_body=body, event_signature=sig, secret=ep.secret + "x")
            raise CheckFailed("webhooks: a wrong secret is rejected -- verify_event accepted it")
        except ValueError:
            _ok("webhooks: a wrong secret is rejected (ValueError)")

        up = call("webhooks: update_webhook_endpoint (disable)", c.webhooks.update_webhook_endpoint,
                  ep.id, status="disabled")
        check_eq("webhooks: updated status", getattr(up.status, "value", up.status), "disabled")
        call("webhooks: delete_webhook_endpoint", c.webhooks.delete_webhook_endpoint, ep.id)
        DELETED.add(ep.id)
        not_found("webhooks: delete twice", c.webhooks.delete_webhook_endpoint, ep.id)
    finally:
        rx.stop()


def cleanup(c: Optional[WorkOSClient]) -> None:
    if c is None or KEEP_DATA:
        return
    for kind, fn in (("we", c.webhooks.delete_webhook_endpoint),
                     ("om", c.organization_membership.delete_organization_membership),
                     ("user", c.user_management.delete_user),
                     ("org", c.organizations.delete_organization)):
        for obj_id in CREATED[kind]:
            if obj_id in DELETED:
                continue
            try:
                fn(obj_id)
            except Exception:  # noqa: BLE001 - best effort
                pass
    print("# cleanup: deleted what this run left behind (best effort)", flush=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The hosted pages' browser reads a redirect instead of following it (the callback is not
    a server of this run)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class HostedBrowser:
    """A browser without JavaScript for the hosted pages: one cookie jar, plain form posts, no
    redirects followed. The standard library's urllib (with http.cookiejar) stands in for
    `requests`, which the SDK does not bring (it uses httpx), so the venv stays workos only."""

    def __init__(self) -> None:
        import http.cookiejar

        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def _send(self, req: urllib.request.Request) -> Tuple[int, Dict[str, str], str]:
        import urllib.error

        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    def get(self, url: str) -> Tuple[int, Dict[str, str], str]:
        return self._send(urllib.request.Request(url))

    def post(self, path: str, fields: Dict[str, str]) -> Tuple[int, Dict[str, str], str]:
        import urllib.parse

        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(BASE_URL.rstrip("/") + path, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return self._send(req)


def csrf_of(page: str) -> str:
    marker = 'name="csrf_token" value="'
    at = page.find(marker)
    if at < 0:
        raise CheckFailed(f"hosted sign-in: no CSRF token in the page: {page[:300]!r}")
    rest = page[at + len(marker):]
    return rest[:rest.index('"')]


def hosted_sign_in(label: str, url: str, addr: str, password: str) -> Dict[str, List[str]]:
    """Drives the sign-in page with an email and password; returns the callback's query."""
    import urllib.parse

    browser = HostedBrowser()
    status, headers, page = browser.get(url)
    check_eq(f"{label}: the sign-in page", status, 200)
    check(f"{label}: the page sets a strict CSP and X-Frame-Options",
          "default-src 'none'" in headers.get("content-security-policy", "")
          and headers.get("x-frame-options") == "DENY", headers)
    status, headers, body = browser.post("/user_management/authorize/password",
                                         {"csrf_token": csrf_of(page), "email": addr, "password": password})
    check_eq(f"{label}: the form redirects (303)", status, 303)
    location = headers.get("location", "")
    check(f"{label}: to the registered redirect URI", location.startswith(HOSTED_CALLBACK), location)
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)


HOSTED_CALLBACK = "http://127.0.0.1:9/callback"


def test_hosted_sign_in(c: WorkOSClient) -> None:
    """Hosted sign-in: create_redirect_uri, get_authorization_url (and its PKCE variant), the
    pages driven like a browser, then authenticate_with_code (and authenticate_with_code_pkce)."""
    section("hosted sign-in")
    um = c.user_management
    callback = f"{HOSTED_CALLBACK}/{RUN}"
    created = call("hosted: create_redirect_uri", um.create_redirect_uri, uri=callback)
    check_eq("hosted: the redirect URI object", (created.uri, created.id.startswith("redirect_uri_")),
             (callback, True))
    expect_error("hosted: the same redirect URI again", UnprocessableEntityError, um.create_redirect_uri,
                 uri=callback, code=INVALID, field_code="redirect_uri_already_exists")
    expect_error("hosted: a plain-http redirect URI on a public host", UnprocessableEntityError,
                 um.create_redirect_uri, uri="http://app.example.com/callback", code=INVALID,
                 field_code="invalid_redirect_uri")
    listed = call("hosted: list_redirect_uris", um.list_redirect_uris, limit=100)
    check("hosted: the redirect URI is listed", callback in [u.uri for u in listed.data], listed)

    addr = email(f"hosted-{RUN}")
    password = f"pw-{RUN}-hosted pages"
    user = verified_user(c, "hosted: create a user with a password", addr, password=password)

    url = um.get_authorization_url(redirect_uri=callback, state=f"st-{RUN}", login_hint=addr)
    check("hosted: get_authorization_url points at keyledger",
          url.startswith(BASE_URL.rstrip("/") + "/user_management/authorize?"), url)
    query = hosted_sign_in("hosted: password via the pages", url, addr, password)
    check_eq("hosted: the state comes back", query.get("state"), [f"st-{RUN}"])
    code = (query.get("code") or [""])[0]
    auth = call("hosted: authenticate_with_code", um.authenticate_with_code, code=code,
                ip_address="203.0.113.7", user_agent="conformance")
    check_signed_in("hosted: authenticate_with_code", auth, user.id, "Password")
    replayed = code
    expect_error("hosted: the code again", BadRequestError, lambda: um.authenticate_with_code(code=replayed),
                 code="invalid_grant")

    pkce = um.get_authorization_url_with_pkce(redirect_uri=callback)
    query = hosted_sign_in("hosted: PKCE via the pages", pkce["url"], addr, password)
    check_eq("hosted: the PKCE state comes back", query.get("state"), [pkce["state"]])
    code = (query.get("code") or [""])[0]
    spent = code
    expect_error("hosted: a wrong code_verifier", BadRequestError,
                 lambda: um.authenticate_with_code_pkce(code=spent, code_verifier="x" * 43), code="invalid_grant")
    query = hosted_sign_in("hosted: PKCE via the pages again", pkce["url"], addr, password)
    code = (query.get("code") or [""])[0]
    auth = call("hosted: authenticate_with_code_pkce", um.authenticate_with_code_pkce, code=code,
                code_verifier=pkce["code_verifier"])
    check_signed_in("hosted: authenticate_with_code_pkce", auth, user.id, "Password")

    status, headers, page = HostedBrowser().get(
        um.get_authorization_url(redirect_uri="https://evil.example.com/callback"))
    check("hosted: an unregistered redirect_uri gets an error page, not a redirect",
          status == 400 and "location" not in headers and "<html" in page, (status, headers))


def test_admin_portal(c: WorkOSClient) -> None:
    """Admin Portal: admin_portal.generate_link for each intent and its errors; each link opened
    once like a browser (urllib with a cookie jar, redirects followed) onto its page."""
    section("admin portal")
    import http.cookiejar
    import urllib.error

    org = call("portal: create an organization", c.organizations.create_organization, name=f"Portal {RUN}")
    pages = {"sso": "/portal/sso", "domain_verification": "/portal/domains", "audit_logs": "/portal/audit_logs"}
    for intent, page in pages.items():
        link = call(f"portal: generate_link ({intent})", c.admin_portal.generate_link, organization=org.id,
                    intent=intent, return_url="https://app.example/settings", success_url="https://app.example/done")
        check(f"portal: the {intent} link points at keyledger",
              link.link.startswith(BASE_URL.rstrip("/") + "/portal/launch?secret="), link.link)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(link.link, timeout=30) as resp:  # noqa: S310 - our own server
            body = resp.read().decode("utf-8")
            check_eq(f"portal: the {intent} link opens its page", (resp.status, resp.geturl().endswith(page)),
                     (200, True))
            check(f"portal: the {intent} page names the organization", org.name in body, body[:300])
            check(f"portal: the {intent} page has its security headers",
                  resp.headers.get("X-Frame-Options") == "DENY"
                  and "default-src 'none'" in (resp.headers.get("Content-Security-Policy") or ""), dict(resp.headers))
        check(f"portal: the {intent} session cookie", [ck.name for ck in jar] == ["kl_portal"], list(jar))
        try:
            opener.open(link.link, timeout=30)  # noqa: S310 - our own server
            raise CheckFailed(f"portal: the {intent} link opened twice")
        except urllib.error.HTTPError as e:
            check_eq(f"portal: the {intent} link opens once", e.code, 410)
    for intent in ("dsync", "log_streams"):
        invalid(f"portal: generate_link ({intent}) is not served", c.admin_portal.generate_link,
                organization=org.id, intent=intent, field_code="invalid_intent")
    invalid("portal: generate_link with a non-http return_url", c.admin_portal.generate_link, organization=org.id,
            intent="sso", return_url="javascript:alert(1)", field_code="invalid_url")
    not_found("portal: generate_link for an unknown organization", c.admin_portal.generate_link,
              organization="org_01NOSUCHORGANIZATION00000", intent="sso")


def main() -> int:
    client: Optional[WorkOSClient] = None
    failed = False
    try:
        client, bad, keyless = setup()
        test_auth(bad, keyless)
        test_users(client)
        test_organizations(client)
        test_domains(client)
        test_memberships(client)
        test_deletes(client)
        test_events(client)
        test_audit_logs(client)
        test_contract(client)
        test_sign_in(client)
        test_sso_required(client)
        test_magic_auth(client)
        test_email_verification(client)
        test_password_reset(client)
        test_invitations(client)
        test_connections(client)
        test_organization_selection(client)
        test_hosted_sign_in(client)
        test_admin_portal(client)
        test_webhooks(client)
    except CheckFailed as e:
        failed = True
        print(f"FAIL {_count + 1} - {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - a bug in this script or an SDK surprise
        failed = True
        print(f"FAIL {_count + 1} - unexpected {describe(e)}", flush=True)
        traceback.print_exc()
    finally:
        if failed:
            cleanup(client)
        if DNS is not None:
            DNS.stop()
    if failed:
        return 1
    print(f"# all {_count} checks passed (run {RUN})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
