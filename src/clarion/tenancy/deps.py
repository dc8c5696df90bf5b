"""Named dependencies for endpoints: who is calling, and may they write."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from clarion.db import SessionDep
from clarion.tenancy.service import AuthContext, authenticate, require_write


async def _read_auth(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> AuthContext:
    return await authenticate(session, authorization)


async def _write_auth(auth: Annotated[AuthContext, Depends(_read_auth)]) -> AuthContext:
    return require_write(auth)


ReadAuth = Annotated[AuthContext, Depends(_read_auth)]
WriteAuth = Annotated[AuthContext, Depends(_write_auth)]
