"""The annotate web app: server-rendered pages of the paper's rating workflow (Sec. 3, Fig. 2).

A rater logs in and passes TRAINING (``/training``: the five levels of each dimension with the
criteria and the owner's example clips), the PILOT round and FORMAL rounds (``/rate``: one
video at a time, three dimensions on Bad … Excellent, a reason for Bad/Poor/Fair), with
feedback after each pilot video; a paused rater sees ``/paused``. The owner sees ``/owner``:
progress, Krippendorff's alpha, audits, paused raters, the review queue, and forms to mark
training examples and reference ratings and to export.

Every page works without JavaScript; ``static/rate.js`` only hides the reason fields of a
Good/Excellent rating and fills a time range from the player. Endpoints are plain functions run
in a thread pool (the store is synchronous); only reading a form is asynchronous
(:meth:`Auth.checked_form`). Every refusal is a 4xx page: a video or assignment a user does not
hold is 404, as is an unknown one, so nothing says whether it exists.
"""

from __future__ import annotations

import math
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from qsave.annotate.auth import CSRF_FIELD, Auth, FormLimits
from qsave.annotate.config import LEVELS, LOW_LEVELS, REASONS
from qsave.annotate.store import (
    REFERENCE_USES,
    Assignment,
    Project,
    RatingInput,
    Role,
    Session,
    Stage,
    User,
)
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotateError

HERE = Path(__file__).parent
EXPORT_FOLDER = "export"  # the owner page's export goes to PROJECT/export
SAVED = {  # ?done=… after an owner's form: what the owner page says (fixed texts only)
    "example": "Training example saved.",
    "reference": "Reference ratings saved.",
    "resume": "Rater resumed: back in the formal rounds.",
    "export": "Exported.",
}
HEADERS = {  # every response
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_app(project: Project, *, secure_cookies: bool,
               limits: FormLimits | None = None) -> FastAPI:
    """The app for ``project``; ``secure_cookies``: cookies only over https (the Secure flag)."""
    app = FastAPI(title="qsave annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project = project
    app.state.auth = Auth(project, secure_cookies, limits)
    app.state.templates = _templates(project)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _not_found)
    app.add_exception_handler(AnnotateError, _refused)
    app.add_middleware(SecurityHeaders)
    for routes in (_account_routes, _rater_routes, _owner_routes):
        routes(app)
    return app


# --- dependencies ------------------------------------------------------------------------
def _session(request: Request) -> Session:
    return request.app.state.auth.require(request)


def _owner(session: Annotated[Session, Depends(_session)]) -> Session:
    if session.user.role is not Role.OWNER:
        raise HTTPException(403, "This page is for the project's owners.")
    return session


def _rater(session: Annotated[Session, Depends(_session)]) -> Session:
    if session.user.role is not Role.RATER:
        raise HTTPException(403, "Owners do not rate; the owner page is /owner.")
    return session


async def _form(request: Request, session: Annotated[Session, Depends(_session)]) -> FormData:
    return await request.app.state.auth.checked_form(request, session)


async def _login_form(request: Request) -> FormData:
    return await request.app.state.auth.login_form(request)


SessionDep = Annotated[Session, Depends(_session)]
RaterDep = Annotated[Session, Depends(_rater)]
OwnerDep = Annotated[Session, Depends(_owner)]
FormDep = Annotated[FormData, Depends(_form)]


# --- pages -------------------------------------------------------------------------------
def _templates(project: Project) -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(levels=LEVELS, low_levels=LOW_LEVELS, reasons=REASONS,
                                 dimensions=DIMENSIONS, csrf_field=CSRF_FIELD,
                                 reference_uses=REFERENCE_USES,
                                 max_free_text=project.config.max_free_text)
    templates.env.filters["number"] = _number
    templates.env.filters["sentence"] = lambda text: str(text)[:1].upper() + str(text)[1:]
    return templates


def _number(value: float | None, digits: int = 2) -> str:
    """A figure for a table: rounded, "–" when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def page(request: Request, name: str, session: Session | None = None, status: int = 200,
         **context: Any) -> Response:
    """Render ``templates/name`` with the user and their CSRF token."""
    context.update(user=session.user if session else None,
                   csrf=session.csrf_token if session else None)
    return request.app.state.templates.TemplateResponse(request, name, context,
                                                        status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def home_of(user: User) -> str:
    """Where a user's work is: the owner page, or the page of the rater's stage."""
    if user.role is Role.OWNER:
        return "/owner"
    return {Stage.TRAINING: "/training", Stage.PAUSED: "/paused"}.get(user.stage, "/rate")


# --- errors ------------------------------------------------------------------------------
async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 401 and request.method in ("GET", "HEAD"):
        return redirect("/login")
    response = page(request, "message.html", status=error.status_code,
                    title=_TITLES.get(error.status_code, "Refused"), message=str(error.detail))
    if error.status_code == 413:
        response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


async def _not_found(request: Request, _: Exception) -> Response:
    return await _http_error(request, HTTPException(404, "There is no such page."))


async def _refused(request: Request, error: Exception) -> Response:
    return await _http_error(request, HTTPException(400, str(error)))


_TITLES = {400: "Not accepted", 401: "Please log in", 403: "Not allowed", 404: "Not found",
           409: "Already done", 413: "Too large", 415: "Not a form"}


class SecurityHeaders:
    """Pure ASGI: the :data:`HEADERS` on every response, ``no-store`` on every page."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in HEADERS.items():
                    headers.setdefault(key, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- login -------------------------------------------------------------------------------
def _account_routes(app: FastAPI) -> None:
    @app.get("/login")
    def login_page(request: Request) -> Response:
        auth: Auth = request.app.state.auth
        found = auth.session(request)
        if found is not None:
            return redirect(home_of(found.user))
        return _login_page(request, auth)

    @app.post("/login")
    def log_in(request: Request, form: Annotated[FormData, Depends(_login_form)]) -> Response:
        auth: Auth = request.app.state.auth
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        user = auth.project.authenticate(name, password) if name and password else None
        if user is None:
            return _login_page(request, auth, "Wrong name or password.", 401)
        response = redirect(home_of(user))
        auth.log_in(request, response, user)
        return response

    @app.post("/logout")
    def log_out(request: Request, _: FormDep) -> Response:
        response = redirect("/login")
        request.app.state.auth.log_out(request, response)
        return response

    @app.get("/")
    def home(session: SessionDep) -> Response:
        return redirect(home_of(session.user))


def _login_page(request: Request, auth: Auth, error: str | None = None,
                status: int = 200) -> Response:
    token = auth.login_token(request)
    response = page(request, "login.html", status=status, login_csrf=token, error=error)
    auth.set_login_cookie(request, response, token)
    return response


# --- raters ------------------------------------------------------------------------------
def _rater_routes(app: FastAPI) -> None:
    @app.get("/training")
    def training(request: Request, session: SessionDep) -> Response:
        project: Project = request.app.state.project
        guide = [(d, project.training(d.value)) for d in DIMENSIONS]
        return page(request, "training.html", session, guide=guide)

    @app.post("/training")
    def finish_training(request: Request, session: RaterDep, _: FormDep) -> Response:
        user = request.app.state.project.finish_training(session.user)
        return redirect(home_of(user))

    @app.get("/paused")
    def paused(request: Request, session: RaterDep) -> Response:
        if session.user.stage is not Stage.PAUSED:
            return redirect(home_of(session.user))
        return page(request, "paused.html", session)

    @app.get("/rate")
    def next_video(request: Request, session: RaterDep) -> Response:
        if session.user.stage in (Stage.TRAINING, Stage.PAUSED):
            return redirect(home_of(session.user))
        assignment = _open(request, session.user)
        if assignment is None:
            return page(request, "message.html", session, title="No work left",
                        message="Every video you could rate has its raters. Thank you! "
                                "New videos will appear here when the owner adds them.")
        return redirect(f"/rate/{assignment.id}")

    @app.get("/rate/{assignment_id}")
    def rate_page(request: Request, session: RaterDep, assignment_id: int) -> Response:
        assignment = _held(request, session.user, assignment_id)
        return page(request, "rate.html", session, assignment=assignment, values={})

    @app.post("/rate/{assignment_id}")
    def rate(request: Request, session: RaterDep, form: FormDep,
             assignment_id: int) -> Response:
        project: Project = request.app.state.project
        assignment = _held(request, session.user, assignment_id)
        try:
            feedback = project.submit(session.user, assignment.id, parse_ratings(form))
        except AnnotateError as error:
            return page(request, "rate.html", session, status=400, assignment=assignment,
                        values=dict(form.multi_items()), error=str(error))
        if feedback is None:
            return redirect("/rate")
        return page(request, "feedback.html", session, feedback=feedback,
                    video=assignment.video)

    @app.get("/video/{video_id:path}")
    def video(request: Request, session: SessionDep, video_id: str) -> Response:
        project: Project = request.app.state.project
        if not project.can_view(session.user, video_id):
            raise HTTPException(404, "There is no such video for you.")
        path = project.video(video_id).path
        if not path.is_file():
            raise HTTPException(404, f"The file of video {video_id!r} is missing on the "
                                     "server; tell the project's owner.")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind,
                            headers={"Cache-Control": "private, max-age=3600"})


def _open(request: Request, user: User) -> Assignment | None:
    """The rater's open assignment (a new one when none is open)."""
    try:
        return request.app.state.project.next_assignment(user)
    except AnnotateError as error:  # e.g. a pilot round without reference videos yet
        raise HTTPException(409, f"{error}. Ask the project's owner.") from None


def _held(request: Request, user: User, assignment_id: int) -> Assignment:
    """The assignment ``assignment_id`` when it is the rater's open one; 409 when they
    submitted it already (the first rating is kept), else 404."""
    project: Project = request.app.state.project
    if user.stage not in (Stage.PILOT, Stage.FORMAL, Stage.DONE):
        raise HTTPException(404, "There is no such assignment for you.")
    assignment = _open(request, user)
    if assignment is not None and assignment.id == assignment_id:
        return assignment
    if any(r.assignment_id == assignment_id for r in project.my_ratings(user)):
        raise HTTPException(409, "You rated this video already; your first rating is kept.")
    raise HTTPException(404, "There is no such assignment for you.")


def parse_ratings(form: FormData) -> dict[str, RatingInput]:
    """The three ratings of a rate form. Fields ``<dim>_level``, ``<dim>_reason`` (repeatable),
    ``<dim>_text``, ``<dim>_start``, ``<dim>_end``; the reason fields of a Good or Excellent
    rating are ignored (the page hides them; without JavaScript they are still posted)."""
    ratings = {}
    for dim in DIMENSIONS:
        level = str(form.get(f"{dim.value}_level", ""))
        if not level:
            raise AnnotateError(f"choose a level for {dim.title}")
        if level not in LOW_LEVELS:
            ratings[dim.value] = RatingInput(level)
            continue
        reasons = tuple(str(r) for r in form.getlist(f"{dim.value}_reason") if r)
        ratings[dim.value] = RatingInput(
            level, reasons, str(form.get(f"{dim.value}_text", "")),
            _seconds(form, dim, "start"), _seconds(form, dim, "end"))
    return ratings


def _seconds(form: FormData, dim: Dimension, end: str) -> float | None:
    text = str(form.get(f"{dim.value}_{end}", "")).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise AnnotateError(f"the {end} time of {dim.title} must be a number of seconds, "
                            f"not {text[:20]!r}") from None
    if not math.isfinite(value):
        raise AnnotateError(f"the {end} time of {dim.title} must be a finite number")
    return value


# --- owners ------------------------------------------------------------------------------
def _owner_routes(app: FastAPI) -> None:
    @app.get("/owner")
    def owner(request: Request, session: OwnerDep, done: str = "") -> Response:
        return _owner_page(request, session, message=SAVED.get(done))

    @app.post("/owner/resume")
    def resume(request: Request, session: OwnerDep, form: FormDep) -> Response:
        project: Project = request.app.state.project
        return _owner_action(request, session, "resume", lambda: project.resume(
            project.user(_int(form.get("user_id")))))

    @app.post("/owner/example")
    def example(request: Request, session: OwnerDep, form: FormDep) -> Response:
        project: Project = request.app.state.project
        return _owner_action(request, session, "example", lambda: project.set_example(
            _text(form, "video_id"), _text(form, "dimension"), _text(form, "level"),
            _text(form, "note")))

    @app.post("/owner/reference")
    def reference(request: Request, session: OwnerDep, form: FormDep) -> Response:
        project: Project = request.app.state.project
        levels = {d.value: _text(form, d.value) for d in DIMENSIONS}
        return _owner_action(request, session, "reference", lambda: project.set_reference(
            _text(form, "video_id"), levels, _text(form, "use")))

    @app.post("/owner/export")
    def export_(request: Request, session: OwnerDep, _: FormDep) -> Response:
        from qsave.annotate.export import export

        project: Project = request.app.state.project
        out = project.folder / EXPORT_FOLDER
        try:
            written = export(project, out)
        except AnnotateError as error:
            return _owner_page(request, session, error=str(error), status=400)
        return _owner_page(request, session, message=f"Exported to {out}: "
                           + ", ".join(sorted(p.name for p in written.values())))


def _owner_action(request: Request, session: Session, done: str,
                  action: Callable[[], object]) -> Response:
    """Run an owner's form action: back to the owner page, or the page with the error (400)."""
    try:
        action()
    except AnnotateError as error:
        return _owner_page(request, session, error=str(error), status=400)
    return redirect(f"/owner?done={done}")


def _owner_page(request: Request, session: Session, message: str | None = None,
                error: str | None = None, status: int = 200) -> Response:
    project: Project = request.app.state.project
    return page(request, "owner.html", session, status=status, message=message, error=error,
                progress=project.progress(), alpha=project.agreement(),
                audits=project.audits(), paused=project.paused(),
                review=project.review_queue(), videos=project.videos(),
                references=project.references(), config=project.config,
                folder=project.folder)


def _text(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise AnnotateError(f"not a number: {str(value)[:20]!r}") from None
