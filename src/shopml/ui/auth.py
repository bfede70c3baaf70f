"""The control tower's sign-in: the API's own keys (:class:`shopml.serving.app.Auth`), in a
browser.

A page is read with a scoring or an admin key; an action (promote, rollback, retrain) needs an
admin key, as ``/v1/admin/*`` does. Scripts send ``Authorization: Bearer <key>`` as to the API.
A browser signs in once with its key and gets a session cookie: a signed token naming the key's
digest prefix, its scope and an expiry (HttpOnly, SameSite=Strict), never the key itself. The
token is checked against the keys configured now, so removing a key ends its sessions, and
stateless, so every worker of the API accepts it. Forms carry a CSRF token bound to the session
(and, in open mode, to this home): another site cannot make a signed-in browser act.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException

from shopml.serving.app import Auth

COOKIE = "shopml_ui"
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Caller:
    """Who is asking: ``admin`` may act; ``via`` is how the key came (header, cookie, open)."""

    admin: bool
    via: str
    key_id: str  # the first 12 hex digits of the key's digest (for the log; never the key)
    session: str = ""


class Sessions:
    """Signs and checks session tokens and CSRF tokens for one :class:`Auth`."""

    def __init__(self, auth: Auth, home: Path) -> None:
        self.auth = auth
        if auth.open:
            self.secret = _home_secret(home)
        else:
            # Derived from the configured keys (their digests are as secret as the keys): every
            # replica of the API signs alike, and a token signed under other keys never
            # verifies here.
            digests = b"".join(sorted(auth.score | auth.admin))
            self.secret = hashlib.sha256(b"shopml-ui\0" + digests).digest()

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def issue(self, key: str) -> tuple[str, Caller]:
        """A session token for a valid key (401/403 as the API answers otherwise)."""
        self.auth.check(key, admin=False)
        digest = Auth.digest(key)
        admin = digest in self.auth.admin
        key_id = digest.hex()[:12]
        expiry = int(time.time()) + SESSION_SECONDS
        payload = f"{'admin' if admin else 'score'}.{expiry}.{key_id}"
        token = f"{payload}.{self._sign(payload)}"
        return token, Caller(admin, "cookie", key_id, token)

    def verify(self, token: str) -> Caller | None:
        """The caller of a session token, or None (forged, expired, or its key removed)."""
        try:
            scope, expiry, key_id, sig = token.split(".")
            payload = f"{scope}.{expiry}.{key_id}"
            if not hmac.compare_digest(sig, self._sign(payload)) or int(expiry) < time.time():
                return None
        except ValueError:
            return None
        admin_ids = {d.hex()[:12] for d in self.auth.admin}
        score_ids = {d.hex()[:12] for d in self.auth.score}
        if scope == "admin" and key_id in admin_ids:
            return Caller(True, "cookie", key_id, token)
        if scope == "score" and key_id in score_ids | admin_ids:
            return Caller(False, "cookie", key_id, token)
        return None

    def caller(self, authorization: str | None, cookie: str | None) -> Caller | None:
        """The caller of a request: its bearer key (checked as the API checks it; a wrong key
        is a 401), else its session cookie; None when neither (the sign-in page)."""
        if self.auth.open:
            return Caller(True, "open", "open")
        key = Auth.bearer_key(authorization.encode("latin-1")) if authorization else None
        if key:
            self.auth.check(key, admin=False)
            digest = Auth.digest(key)
            return Caller(digest in self.auth.admin, "header", digest.hex()[:12])
        if cookie:
            return self.verify(cookie)
        return None

    def csrf(self, caller: Caller) -> str:
        """The form token of this caller's session (every form of the tower carries it)."""
        return self._sign(f"csrf.{caller.session or caller.via}")

    def check_action(self, caller: Caller | None, csrf: str | None) -> Caller:
        """An action's caller: signed in with an admin key (403 with a scoring key), and, when
        the browser sent its cookie or no key at all (open mode), the form's CSRF token."""
        if caller is None:
            raise HTTPException(401, "sign in with an admin key first")
        if not caller.admin:
            raise HTTPException(403, "this API key has no admin scope: actions need an admin key")
        if caller.via != "header" and not (
            csrf and hmac.compare_digest(csrf.encode(), self.csrf(caller).encode())
        ):
            raise HTTPException(403, "the form is stale or came from another site: reload it")
        return caller


def _home_secret(home: Path) -> bytes:
    """A random secret kept under the home (created once, atomically): open mode's CSRF tokens
    stay valid across restarts and workers of one installation."""
    path = home / "ui" / "secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".secret.{secrets.token_hex(4)}.tmp")
    tmp.write_text(secrets.token_hex(32))
    tmp.chmod(0o600)
    try:
        # A hard link, not a rename: the first writer wins and every process reads its secret.
        path.hardlink_to(tmp)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())
