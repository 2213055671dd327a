"""Logins, session cookies and CSRF checks of the annotate web app (issue item 5).

The store keeps the sessions (a table, so a login survives a restart of the server); this
module is the web glue on top of :meth:`Project.create_session` and :meth:`Project.session`:

- the session cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when asked
  (``--secure-cookies``) or when the request came over https; it holds the token only, the
  store keeps its sha256;
- every form POST carries the session's CSRF token in a hidden field (``csrf_token``), compared
  in constant time; the login form, posted before any session exists, carries a random token
  that must match a short-lived cookie of its own (double submit);
- a form is read only when it is a small urlencoded body (:class:`FormLimits`): a larger one is
  refused from its ``Content-Length`` or as it streams in, before anything is parsed or saved.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, Response
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect

from qsave.annotate.store import Project, Session, User

SESSION_COOKIE = "qsave_session"
LOGIN_COOKIE = "qsave_login"  # the login form's double-submit CSRF token
CSRF_FIELD = "csrf_token"
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class FormLimits:
    """What a posted form may be (every page's form is urlencoded and small)."""

    max_bytes: int = 64 * 1024  # a rating form is < 20 KiB even with 3 × 2000 characters of text
    max_fields: int = 64  # a rating form has 17 fields, the owner's forms fewer
    login_minutes: int = 30  # a login form's CSRF cookie lasts this long


class CsrfRefused(HTTPException):
    """403: a POST without the CSRF token of its session (or of the login form)."""

    def __init__(self) -> None:
        super().__init__(403, "This form did not carry a valid security token (CSRF check). "
                              "It may be stale or come from another site: go back, reload "
                              "the page and send it again.")


class LoginRequired(HTTPException):
    """401: no session, or one that ended or expired."""

    def __init__(self) -> None:
        super().__init__(401, "You are not logged in, or your session has ended or expired. "
                              "Log in again.")


class Auth:
    """Cookies and CSRF of one app (``secure``: the cookies' ``Secure`` flag)."""

    def __init__(self, project: Project, secure: bool, limits: FormLimits | None = None) -> None:
        self.project, self.secure, self.limits = project, secure, limits or FormLimits()

    # --- sessions ------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        """The live session of the request's cookie."""
        token = request.cookies.get(SESSION_COOKIE)
        return self.project.session(token) if token else None

    def require(self, request: Request) -> Session:
        """The live session, else :class:`LoginRequired`."""
        found = self.session(request)
        if found is None:
            raise LoginRequired()
        return found

    def log_in(self, request: Request, response: Response, user: User) -> None:
        """A new session for ``user``, its token in the session cookie."""
        token, _ = self.project.create_session(user)
        self._cookie(request, response, SESSION_COOKIE, token,
                     int(self.project.config.session_hours * 3600))
        response.delete_cookie(LOGIN_COOKIE, path="/")

    def log_out(self, request: Request, response: Response) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.project.end_session(token)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self.secure, httponly=True,
                               samesite="strict")

    def login_token(self, request: Request) -> str:
        """The login form's CSRF token: its cookie's when the browser has one, else a new one
        (set it with :meth:`set_login_cookie`)."""
        return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)

    def set_login_cookie(self, request: Request, response: Response, token: str) -> None:
        self._cookie(request, response, LOGIN_COOKIE, token, self.limits.login_minutes * 60)

    def _cookie(self, request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
        """An HttpOnly, SameSite=Strict cookie; Secure with ``secure`` or over https (also
        behind a proxy on loopback that sends X-Forwarded-Proto, which uvicorn trusts)."""
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                            samesite="strict",
                            secure=self.secure or request.url.scheme == "https")

    # --- forms ---------------------------------------------------------------------------
    async def read_form(self, request: Request) -> FormData:
        """The posted urlencoded form (an empty body is an empty form), within
        :class:`FormLimits`; 413, 415 or 400 otherwise.

        A client that hangs up mid-upload gets 400 (which it never reads): nothing is saved,
        since nothing is parsed before the whole body has arrived.
        """
        limit = self.limits.max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"the form is larger than {limit // 1024} KiB")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise HTTPException(413, f"the form is larger than {limit // 1024} KiB")
        except ClientDisconnect:
            raise HTTPException(400, "the form did not arrive whole (the client hung up)"
                                ) from None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and kind != FORM_TYPE:
            raise HTTPException(415, f"forms are posted as {FORM_TYPE}, not {kind or 'nothing'}")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=self.limits.max_fields)
        except UnicodeDecodeError:
            raise HTTPException(400, "the form is not UTF-8") from None
        except ValueError:
            raise HTTPException(413, f"the form has more than {self.limits.max_fields} fields"
                                ) from None
        return FormData(pairs)

    async def checked_form(self, request: Request, session: Session) -> FormData:
        """The form of a logged-in POST, after its CSRF token is checked (403 otherwise)."""
        form = await self.read_form(request)
        if not _same(form.get(CSRF_FIELD), session.csrf_token):
            raise CsrfRefused()
        return form

    async def login_form(self, request: Request) -> FormData:
        """The login form, after its token is checked against the login cookie."""
        form = await self.read_form(request)
        if not _same(form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)):
            raise CsrfRefused()
        return form


def _same(given: object, expected: str | None) -> bool:
    """A constant-time comparison of a posted token with the expected one."""
    return (isinstance(given, str) and bool(expected)
            and hmac.compare_digest(given.encode(), str(expected).encode()))
