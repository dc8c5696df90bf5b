"""Authenticated tracking API: conversions and bounce messages (/api/v1/conversions, /api/v1/bounces)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.datastructures import UploadFile

from clarion.db import SessionDep
from clarion.errors import ClarionError, Invalid, field_error
from clarion.tenancy.deps import WriteAuth
from clarion.tracking import service, tasks  # noqa: F401 - tasks registers the bounce Maildir loop with the worker
from clarion.tracking.schemas import BounceOutcome, ConversionCreate, ConversionRead

router = APIRouter(tags=["tracking"])

MAX_BOUNCE_BYTES = 10 * 1024 * 1024
_RAW_TYPES = ("message/rfc822", "text/plain", "application/octet-stream", "message/global")


@router.post("/conversions", status_code=status.HTTP_201_CREATED, response_model=ConversionRead,
             responses={200: {"model": ConversionRead, "description": "a replay of an idempotency key"}})
async def record_conversion(body: ConversionCreate, auth: WriteAuth, session: SessionDep, request: Request,
                            response: Response) -> ConversionRead:
    result = await service.record_conversion(session, auth.tenant_id, body, secret=request.app.state.secret_key)
    if result.duplicate:
        response.status_code = status.HTTP_200_OK
    return result


async def _bounce_bytes(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1)
        upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise Invalid("upload the bounce message as a file field",
                          errors=[field_error(["body", "file"], "a file is required", "missing")])
        raw = await upload.read(MAX_BOUNCE_BYTES + 1)
    elif content_type in _RAW_TYPES or not content_type:
        raw = await request.body()
    else:
        raise ClarionError(f"send the message as message/rfc822 or multipart/form-data, not {content_type}",
                           status=415, code="unsupported_media_type")
    if len(raw) > MAX_BOUNCE_BYTES:
        raise ClarionError("a bounce message may be at most 10 MiB", status=413, code="too_large")
    if not raw.strip():
        raise Invalid("the bounce message is empty", errors=[field_error(["body"], "empty message", "missing")])
    return raw


@router.post("/bounces", response_model=BounceOutcome,
             openapi_extra={"requestBody": {"content": {
                 "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}}})
async def receive_bounce(request: Request, auth: WriteAuth, session: SessionDep) -> BounceOutcome:
    """A raw DSN (or any bounce or auto-reply): hard bounces mark the address at once, soft ones after the
    threshold, auto-replies are ignored. `ignored` says why nothing happened."""
    raw = await _bounce_bytes(request)
    settings = request.app.state.settings
    return await service.handle_bounce(session, raw, tenant_id=auth.tenant_id,
                                       rules=service.BounceSettings.from_settings(settings))
