"""The control tower's web app: server-rendered pages (Jinja2), plots drawn by Chart.js (a
static file shipped with shopml; no build step), the API's keys.

``create_ui_app(settings)`` is the app on its own (``shopml ui``); ``mount_ui`` adds it to the
API at ``/ui`` (``SHOPML_SERVE_UI=true``), sharing the API's keys and, for the latency figures,
its metrics. Every page reads the stores afresh; nothing is cached between requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shopml.serving.app import Auth, auth_from_settings
from shopml.ui import actions
from shopml.ui.auth import COOKIE, SESSION_SECONDS, Caller, Sessions
from shopml.ui.data import STATUSES, Reader, prefect_url, report_file

if TYPE_CHECKING:
    from shopml.serving.app import ServiceState
    from shopml.settings import Settings
    from shopml.usecases.base import UseCase

log = logging.getLogger("shopml.ui")
HERE = Path(__file__).resolve().parent
# The plots' library, shipped as one file (see static/chart.js.LICENSE.md).
CHARTJS = "chart.umd.min.js"
CHARTJS_VERSION = "4.6.1"
# Scripts and styles only from the tower itself (no inline script: the plots' data travels as
# JSON in the page); the drift reports are Evidently's own pages and get a sandbox instead.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
REPORT_CSP = "sandbox allow-scripts"
MAX_FORM_BYTES = 16 * 1024


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if f != f:  # noqa: PLR0124 - NaN
        return "—"
    return f"{f:.{digits}g}"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ")[:16]
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["when"] = _when
    env.filters["tojson_attr"] = lambda v: json.dumps(v, default=str)
    return env


class Tower:
    """The pages and actions over one set of settings and keys."""

    def __init__(
        self,
        settings: Settings,
        auth: Auth,
        usecases: list[UseCase],
        service: ServiceState | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.sessions = Sessions(auth, settings.home)
        self.usecases = {uc.name: uc for uc in usecases}
        self.service = service
        self.env = _templates()

    # -- helpers -----------------------------------------------------------------------------
    def caller(self, request: Request) -> Caller | None:
        return self.sessions.caller(
            request.headers.get("authorization"), request.cookies.get(COOKIE)
        )

    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def page(
        self, request: Request, template: str, caller: Caller | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            base=self.base(request),
            caller=caller,
            csrf=self.sessions.csrf(caller) if caller else "",
            open_mode=self.auth.open,
            chartjs=CHARTJS,
            statuses=STATUSES,
            **ctx,
        )
        return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP})

    def usecase(self, name: str) -> UseCase:
        uc = self.usecases.get(name)
        if uc is None:
            raise HTTPException(404, f"no use case {name!r}; known: {', '.join(self.usecases)}")
        return uc

    async def read(self, fn: Any, *args: Any) -> Any:
        """Run a store read in a thread: the registry and the stores are blocking clients."""

        def go() -> Any:
            with Reader(self.settings, in_process=self.service is not None) as reader:
                return fn(reader, *args)

        return await asyncio.get_running_loop().run_in_executor(None, go)

    async def refresh_service(self) -> None:
        """Mounted in the API: swap a moved champion in now rather than at the next poll."""
        if self.service is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.service.models.refresh)


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (one value per field), size-capped."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "the form is not UTF-8") from None
    return {k: v[0] for k, v in parsed.items()}


def _positive(value: str | None, name: str, kind: type) -> Any:
    if value is None or value.strip() == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be a number, got {value!r}") from None
    if number < 0:
        raise HTTPException(422, f"{name} must not be negative, got {value!r}")
    return number


def build_app(tower: Tower) -> FastAPI:
    """The tower's routes, relative to where it is mounted."""
    app = FastAPI(title="shopml control tower", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", "") or request.headers.get(
            "authorization"
        ):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        try:
            caller = tower.caller(request)
        except HTTPException:
            caller = None
        if exc.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"{tower.base(request)}/login?{urlencode({'next': target})}", 303
            )
        return tower.page(request, "error.html", caller, exc.status_code, detail=exc.detail)

    def require(request: Request) -> Caller:
        caller = tower.caller(request)
        if caller is None:
            raise HTTPException(
                401, "sign in with an API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return caller

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        caller = require(request)
        rows = await tower.read(lambda r: r.overview(list(tower.usecases.values())))
        if request.query_params.get("format") == "json":
            from dataclasses import asdict

            return JSONResponse(json.loads(json.dumps([asdict(r) for r in rows], default=str)))
        return tower.page(request, "overview.html", caller, rows=rows)

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "") -> Response:
        return tower.page(request, "login.html", None, next=_safe_next(tower, request, next))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        nxt = _safe_next(tower, request, form.get("next", ""))
        key = form.get("key", "").strip()
        if tower.auth.open:
            return RedirectResponse(nxt, 303)
        try:
            token, _ = tower.sessions.issue(key)
        except HTTPException:
            return tower.page(
                request, "login.html", None, 401, next=nxt, error="unknown key: try again"
            )
        response = RedirectResponse(nxt, 303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=tower.base(request) or "/",
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{tower.base(request)}/login", 303)
        response.delete_cookie(COOKIE, path=tower.base(request) or "/")
        return response

    @app.get("/u/{name}", response_class=HTMLResponse)
    async def usecase_page(request: Request, name: str) -> Response:
        caller = require(request)
        uc = tower.usecase(name)
        detail = await tower.read(lambda r: r.detail(uc))
        job = actions.retrain_job(tower.settings, name)
        charts = {
            "drift_features": detail.drift_features,
            "drift_series": detail.drift_series,
            "performance_series": detail.performance_series,
            "performance_metric": detail.performance_metric,
            "higher_is_better": detail.row.higher_is_better,
        }
        return tower.page(
            request,
            "usecase.html",
            caller,
            d=detail,
            r=detail.row,
            job=job,
            charts=_script_json(charts),
            retrain_unavailable=actions.retrain_available(),
            prefect=prefect_url(tower.settings),
            message=request.query_params.get("done", ""),
        )

    @app.get("/u/{name}/confirm", response_class=HTMLResponse)
    async def confirm(request: Request, name: str, action: str, version: str = "") -> Response:
        caller = require(request)
        uc = tower.usecase(name)
        if action not in ("promote", "rollback", "retrain"):
            raise HTTPException(404, f"no action {action!r}: promote, rollback or retrain")
        if not caller.admin:
            raise HTTPException(403, "this API key has no admin scope: actions need an admin key")
        if action == "promote" and not version.strip().isdigit():
            raise HTTPException(422, f"choose a version number to promote, got {version!r}")
        row = await tower.read(lambda r: r.row(uc))
        return tower.page(
            request,
            "confirm.html",
            caller,
            r=row,
            action=action,
            version=version.strip(),
            retrain_unavailable=actions.retrain_available(),
        )

    @app.post("/u/{name}/promote")
    async def promote(request: Request, name: str) -> Response:
        form = await _form(request)
        caller = tower.sessions.check_action(tower.caller(request), form.get("csrf"))
        tower.usecase(name)
        version = form.get("version", "").strip()
        if not version.isdigit():
            raise HTTPException(422, f"version must be a version number, got {version!r}")
        if form.get("confirm") != "yes":
            raise HTTPException(400, "not confirmed: send confirm=yes")
        try:
            previous = await asyncio.get_running_loop().run_in_executor(
                None,
                partial(
                    actions.promote,
                    tower.settings,
                    name,
                    version,
                    form.get("reason", "")[:400],
                    caller.key_id,
                ),
            )
        except actions.ActionError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        await tower.refresh_service()
        return _done(
            request,
            tower,
            name,
            f"v{version} is now champion (was {'v' + previous if previous else 'none'}); "
            "recorded as a manual override",
            {"usecase": name, "champion": version, "previous": previous, "manual": True},
        )

    @app.post("/u/{name}/rollback")
    async def rollback(request: Request, name: str) -> Response:
        form = await _form(request)
        caller = tower.sessions.check_action(tower.caller(request), form.get("csrf"))
        tower.usecase(name)
        if form.get("confirm") != "yes":
            raise HTTPException(400, "not confirmed: send confirm=yes")
        try:
            old, new = await asyncio.get_running_loop().run_in_executor(
                None, partial(actions.rollback, tower.settings, name, caller.key_id)
            )
        except actions.ActionError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        await tower.refresh_service()
        return _done(
            request,
            tower,
            name,
            f"champion rolled back from v{old} to v{new}",
            {"usecase": name, "from": old, "to": new},
        )

    @app.post("/u/{name}/retrain")
    async def retrain(request: Request, name: str) -> Response:
        form = await _form(request)
        caller = tower.sessions.check_action(tower.caller(request), form.get("csrf"))
        tower.usecase(name)
        if form.get("confirm") != "yes":
            raise HTTPException(400, "not confirmed: send confirm=yes")
        trials = _positive(form.get("trials"), "trials", int)
        timeout = _positive(form.get("timeout"), "timeout", float)
        try:
            job = actions.start_retrain(tower.settings, name, caller.key_id, trials, timeout)
        except actions.ActionError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return _done(
            request,
            tower,
            name,
            f"retrain started (pid {job.pid}); the gate decides whether it is promoted",
            {"usecase": name, "retrain": "started", "pid": job.pid, "log": job.log},
        )

    @app.get("/u/{name}/report/{stamp}")
    async def report(request: Request, name: str, stamp: str) -> Response:
        require(request)
        tower.usecase(name)
        path = report_file(tower.settings, name, stamp)
        if path is None:
            raise HTTPException(404, f"no drift report {stamp} of {name} on this host")
        return FileResponse(
            path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP}
        )

    return app


def _script_json(value: Any) -> str:
    """JSON to put inside a <script> element: ``<``, ``>`` and ``&`` escaped as JSON escapes,
    so a value (a feature's name) cannot close the element or open another one."""
    text = json.dumps(value, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _done(
    request: Request, tower: Tower, name: str, message: str, payload: dict[str, Any]
) -> Response:
    """After an action: JSON for a script, else back to the use case's page (303, so a reload
    does not repeat the action) with the message."""
    if request.headers.get("authorization"):
        return JSONResponse(payload)
    return RedirectResponse(
        f"{tower.base(request)}/u/{quote(name)}?{urlencode({'done': message})}", 303
    )


def _safe_next(tower: Tower, request: Request, target: str) -> str:
    """Where to go after signing in: a path of the tower only (no open redirect)."""
    base = tower.base(request)
    if target.startswith(f"{base}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{base}/"


def create_ui_app(
    settings: Settings | None = None,
    *,
    auth: Auth | None = None,
    service: ServiceState | None = None,
    usecases: list[UseCase] | None = None,
) -> FastAPI:
    """The tower as an app of its own. Refuses (``ServingConfigError``) to run without keys
    unless open mode was opted into, as the API does."""
    from shopml.settings import get_settings
    from shopml.usecases import get_usecases

    settings = settings or get_settings()
    auth = auth or auth_from_settings(settings)
    chosen = usecases if usecases is not None else list(get_usecases().values())
    return build_app(Tower(settings, auth, chosen, service))


def standalone_app(settings: Settings | None = None, inner: FastAPI | None = None) -> FastAPI:
    """``shopml ui``: the tower at ``/ui`` (the URLs it has in the API), ``/`` sends there."""
    inner = inner or create_ui_app(settings)
    app = FastAPI(title="shopml control tower", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/", 307)

    @app.get("/ui", include_in_schema=False)
    async def bare() -> Response:
        return RedirectResponse("/ui/", 307)

    app.mount("/ui", inner)
    return app


def mount_ui(
    app: FastAPI,
    settings: Settings,
    auth: Auth,
    service: ServiceState | None = None,
    usecases: list[UseCase] | None = None,
) -> None:
    """Mount the tower in the API at ``/ui``, with the API's keys, use cases and metrics."""
    inner = create_ui_app(settings, auth=auth, service=service, usecases=usecases)

    @app.get("/ui", include_in_schema=False)
    async def bare() -> Response:
        return RedirectResponse("/ui/", 307)

    app.mount("/ui", inner)
