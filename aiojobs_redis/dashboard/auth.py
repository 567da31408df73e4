"""Who may see the dashboard, and which POSTs may change anything. Pure functions, no I/O.

Access: with a token, a request needs `Authorization: Bearer <token>`, or the session
cookie that `?token=<token>` sets once (the browser is then redirected to the URL without
it); with basic auth, the browser's `Authorization: Basic` header. Without either, anyone
who can reach the port may look (the server binds loopback unless told otherwise).

CSRF: every POST must carry the per-session token from the `aiojobs_csrf` cookie in the
`X-CSRF-Token` header or the `csrf` form field (double submit; the cookie is SameSite=Strict
and HttpOnly, the page hands the value to its forms and script). A cross-site `Origin` or
`Sec-Fetch-Site` is refused too. A request authenticated by a Bearer header, which browsers
never add by themselves, needs no CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigurationError

SESSION_COOKIE = "aiojobs_session"
CSRF_COOKIE = "aiojobs_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def parse_basic_auth(text: str) -> tuple[str, str]:
    """'user:password' as a pair; both parts must be non-empty."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError("basic auth must be given as USER:PASSWORD")
    return user, password


@dataclass(frozen=True, slots=True)
class Access:
    token: str | None = None
    basic: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 8:
            raise ConfigurationError("the dashboard token must be at least 8 characters")

    @property
    def required(self) -> bool:
        return self.token is not None or self.basic is not None

    def session_value(self) -> str:
        """The session cookie's value: derived from the token, never the token itself."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"aiojobs-redis dashboard session", hashlib.sha256).hexdigest()

    def bearer_ok(self, headers: Mapping[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return (
            self.token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), self.token.encode())
        )

    def allows(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        if not self.required:
            return True
        if self.token is not None:
            if self.bearer_ok(headers):
                return True
            cookie = cookies.get(SESSION_COOKIE, "")
            if cookie and hmac.compare_digest(cookie.encode(), self.session_value().encode()):
                return True
        if self.basic is not None:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return False
                want_user, want_password = self.basic
                return hmac.compare_digest(user.encode(), want_user.encode()) & hmac.compare_digest(
                    password.encode(), want_password.encode()
                )
        return False

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(cookie: str | None, given: str | None) -> bool:
    return bool(cookie) and bool(given) and hmac.compare_digest(str(cookie).encode(), str(given).encode())


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser says the request comes from another site (or an opaque origin).

    Only the host is compared with `Host`: behind a TLS-terminating proxy the schemes differ.
    """
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == headers.get("host", "")


def host_allowed(headers: Mapping[str, str], allowed: frozenset[str]) -> bool:
    """Whether the Host header names one of `allowed` (any port)."""
    host = headers.get("host", "").lower()
    if host.startswith("["):  # [::1]:8080
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in allowed
