"""The twin HTTP API (FastAPI): list, search and get twins, their history, events and
what-if simulations; attribute updates by JSON merge patch with ETag / If-Match.

Thin: the state lives in ``twin.state.TwinStore``, the physics in ``twin.model``;
history comes from a ``History`` (the warehouse roll-ups in production). Every
endpoint but ``/health`` needs a bearer token: the read token reads, the write token
reads and writes (``twin.auth``). OpenAPI at ``/docs``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Protocol

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ConfigDict, Field, create_model

from twin.auth import Tokens
from twin.model import SCENARIO_FIELDS, CalibrationError, Observations, Scenario, ScenarioError, calibrate, what_if
from twin.state import PatchError, PreconditionFailed, PreconditionRequired, TwinStore

MERGE_PATCH = "application/merge-patch+json"
STATIC = Path(__file__).resolve().parent / "static"
#: Seconds between two city updates on the live stream.
STREAM_INTERVAL_S = 1.0


class History(Protocol):
    """Where telemetry history comes from (ClickHouse in production)."""

    def telemetry(self, home_id: str, start_ms: int, end_ms: int, step: str) -> list[dict]: ...

    def observations(self, home_id: str, end_ms: int) -> Observations: ...

    def recent(self, home_id: str, start_ms: int, end_ms: int) -> dict: ...

    def regions(self, start_ms: int, end_ms: int) -> list[dict]: ...


# The request model of a what-if, derived from the model's one declaration of fields.
WhatIfRequest = create_model(
    "WhatIfRequest",
    __config__=ConfigDict(extra="forbid"),
    **{
        name: (Optional[int] if name == "horizon_days" else Optional[float],
               Field(default=None, ge=lo, le=hi, description=f"{doc} ({unit})" if unit else doc))
        for name, (lo, hi, unit, doc) in SCENARIO_FIELDS.items()
    },
    start_ms=(Optional[int], Field(default=None, ge=0, description="start of the horizon (default: now)")),
)


def create_app(store: TwinStore, tokens: Tokens, history: History, building_of: Callable[[str], Any],
               clock: Callable[[], float] = time.time, feed=None) -> FastAPI:
    """``building_of(home_id)`` gives the model's ``Building`` of a home."""
    app = FastAPI(title="EcoRetrofit twins", version="1",
                  description="A digital twin per home: attributes, live state, history, what-if.")
    bearer = HTTPBearer(auto_error=False)

    def now_ms() -> int:
        return int(clock() * 1000)

    def scope(needed: str):
        def check(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
            if cred is None:
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            have = tokens.scope_of(cred.credentials)
            if have is None:
                raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
            if needed == "write" and have != "write":
                raise HTTPException(403, "this token may only read")
        return check

    read, write = Depends(scope("read")), Depends(scope("write"))

    def twin_or_404(home_id: str):
        t = store.get(home_id)
        if t is None:
            raise HTTPException(404, f"unknown home {home_id!r}")
        return t

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_: Request, exc: RequestValidationError):
        errs = exc.errors()
        field = ".".join(str(p) for p in errs[0]["loc"] if p != "body") if errs else ""
        return JSONResponse(status_code=422, content={"detail": errs[0]["msg"] if errs else "invalid",
                                                      "field": field, "errors": jsonable(errs)})

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        live = None if feed is None else {"ready": feed.ready.is_set(), **feed.stats}
        return {"status": "ok", "homes": len(store.twins), "readings": store.readings, "live": live}

    @app.get("/twins", dependencies=[read])
    def list_twins(region: str | None = None, status: Literal["online", "silent", "alert"] | None = None,
                   in_alert: bool | None = None, compliance_overdue: bool | None = None,
                   q: str | None = Query(None, max_length=100), offset: int = Query(0, ge=0),
                   limit: int = Query(50, ge=1, le=1000)) -> dict:
        total, items = store.search(now_ms(), region, status, in_alert, compliance_overdue, q, offset, limit)
        return {"total": total, "offset": offset, "limit": limit, "items": items}

    @app.get("/twins/{home_id}", dependencies=[read])
    def get_twin(home_id: str, response: Response) -> dict:
        t = twin_or_404(home_id)
        response.headers["ETag"] = t.etag
        return t.document(now_ms())

    @app.patch("/twins/{home_id}", dependencies=[write])
    async def patch_twin(home_id: str, request: Request, response: Response,
                         if_match: str | None = Header(None)) -> dict:
        twin_or_404(home_id)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype not in (MERGE_PATCH, "application/json"):
            raise HTTPException(415, f"send a JSON merge patch ({MERGE_PATCH})")
        try:
            patch = await request.json()
        except ValueError:
            return JSONResponse(status_code=422, content={"detail": "body is not JSON", "field": "(document)"})
        try:
            t = store.patch(home_id, patch, if_match)
        except PreconditionRequired as e:
            raise HTTPException(428, str(e)) from None
        except PreconditionFailed as e:
            raise HTTPException(412, str(e)) from None
        except PatchError as e:
            return JSONResponse(status_code=422, content={"detail": str(e), "field": e.field})
        response.headers["ETag"] = t.etag
        return t.document(now_ms())

    @app.get("/twins/{home_id}/telemetry", dependencies=[read])
    def telemetry(home_id: str, start_ms: int | None = Query(None, ge=0), end_ms: int | None = Query(None, ge=0),
                  step: Literal["hour", "day"] = "hour") -> dict:
        twin_or_404(home_id)
        end = now_ms() if end_ms is None else end_ms
        start = end - 86_400_000 if start_ms is None else start_ms
        if start >= end:
            raise HTTPException(422, "start_ms must be before end_ms")
        if end - start > 400 * 86_400_000:
            raise HTTPException(422, "at most 400 days per request")
        return {"home_id": home_id, "step": step, "rows": history.telemetry(home_id, start, end, step)}

    @app.get("/twins/{home_id}/anomalies", dependencies=[read])
    def anomalies(home_id: str) -> list[dict]:
        return list(twin_or_404(home_id).anomalies)

    @app.get("/twins/{home_id}/alerts", dependencies=[read])
    def alerts(home_id: str, state: Literal["firing", "resolved"] | None = None) -> list[dict]:
        return [a for a in twin_or_404(home_id).alerts.values() if state is None or a["state"] == state]

    @app.get("/twins/{home_id}/work-orders", dependencies=[read])
    def work_orders(home_id: str, status: Literal["open", "closed"] | None = None) -> list[dict]:
        return [o for o in twin_or_404(home_id).work_orders.values() if status is None or o["status"] == status]

    @app.get("/twins/{home_id}/predictions", dependencies=[read])
    def predictions(home_id: str) -> list[dict]:
        return list(twin_or_404(home_id).predictions.values())

    @app.post("/twins/{home_id}/what-if", dependencies=[read])
    def post_what_if(home_id: str, body: WhatIfRequest) -> dict:  # type: ignore[valid-type]
        twin_or_404(home_id)
        fields = body.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        start = fields.pop("start_ms", None)
        building = building_of(home_id)
        try:
            scenario = Scenario(**fields).validate(building)
        except ScenarioError as e:
            return JSONResponse(status_code=422, content={"detail": str(e), "field": e.field})
        end = now_ms()
        try:
            cal = calibrate(history.observations(home_id, end), building)
        except CalibrationError as e:
            raise HTTPException(409, f"cannot calibrate this home yet: {e}") from None
        return what_if(cal, scenario, start_ms=end if start is None else start).as_dict()

    @app.get("/city", dependencies=[read])
    def city() -> dict:
        return store.city(now_ms())

    @app.get("/city/energy", dependencies=[read])
    def city_energy(hours: int = Query(24, ge=1, le=24 * 14)) -> dict:
        end = now_ms()
        return {"rows": history.regions(end - hours * 3_600_000, end)}

    @app.get("/city/stream", dependencies=[read])
    async def city_stream(request: Request) -> StreamingResponse:
        """Server-sent events: the city summary every second, with readings/s."""
        async def events():
            last = (time.monotonic(), store.readings)
            while not await request.is_disconnected():
                t, n = time.monotonic(), store.readings
                body = store.city(now_ms())
                body["readings_per_s"] = round((n - last[1]) / max(t - last[0], 1e-3), 1) if t > last[0] else 0.0
                last = (t, n)
                yield f"event: city\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"
                await asyncio.sleep(STREAM_INTERVAL_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/twins/{home_id}/recent", dependencies=[read])
    def recent(home_id: str, hours: float = Query(3.0, gt=0, le=48)) -> dict:
        twin_or_404(home_id)
        end = now_ms()
        return {"home_id": home_id, "series": history.recent(home_id, end - int(hours * 3_600_000), end),
                "anomalies": list(store.get(home_id).anomalies)}

    # ---- the dashboard: static pages; their data comes from the API with the token
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def city_page() -> FileResponse:
        return FileResponse(STATIC / "city.html")

    @app.get("/homes/{home_id}", include_in_schema=False)
    def home_page(home_id: str) -> FileResponse:
        return FileResponse(STATIC / "home.html")

    return app


def jsonable(errs: list[dict]) -> list[dict]:
    return [{k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in e.items()}
            for e in errs]
