"""Errors as application/problem+json (RFC 9457), one shape for every failure."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from facespeech.errors import InputError

PROBLEM_JSON = "application/problem+json"


class ProblemDetail(BaseModel):
    """What every error response holds (RFC 9457); `errors` lists schema violations."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


# Documented on every router, so the OpenAPI schema says what errors look like.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ProblemDetail,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
    }
    for status, description in {
        400: "Malformed request",
        401: "Missing, unknown or revoked API key",
        403: "Invalid or expired link",
        404: "No such object for this tenant",
        409: "The object is not in a usable state",
        413: "Upload or audio over the limit",
        422: "Invalid input",
        429: "A per-tenant limit was reached; see Retry-After",
        503: "Database or queue unreachable; see Retry-After",
    }.items()
}


class Problem(Exception):
    """An error response; retry_after (seconds) becomes the Retry-After header."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        retry_after: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra
        self.retry_after = retry_after


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "Not Found", f"no {what} with id {ident!r}")


def problem_response(
    status: int, title: str, detail: str = "", headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return problem_response(exc.status, exc.title, exc.detail, headers, **exc.extra)

    @app.exception_handler(InputError)
    async def on_input_error(_: Request, exc: InputError) -> JSONResponse:
        return problem_response(422, "Unprocessable Input", str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            "Invalid Request",
            "the request does not match the schema",
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, str(exc.detail), str(exc.detail), headers)

    @app.exception_handler(OperationalError)
    async def on_database_down(_: Request, exc: OperationalError) -> JSONResponse:
        return problem_response(
            503,
            "Service Unavailable",
            "the database is unreachable; try again shortly",
            headers={"Retry-After": "5"},
        )
