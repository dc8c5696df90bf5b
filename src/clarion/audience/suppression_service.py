"""The per-tenant suppression list: addresses that never receive marketing on a channel.

Enforcement is not here but in `audience.service.subscribed_on`, the one condition every send path uses.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import normalize
from clarion.audience.suppression_repository import SuppressionRepo
from clarion.audience.suppression_schemas import (
    InvalidAddress,
    SuppressionCheck,
    SuppressionCheckResult,
    SuppressionCreate,
    SuppressionRead,
    SuppressionsAdded,
)
from clarion.errors import Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.pagination import PageRows
from clarion.models import Suppression
from clarion.tenancy import service as tenancy


async def add_suppressions(session: AsyncSession, tenant_id: uuid.UUID, data: SuppressionCreate) -> SuppressionsAdded:
    """Add addresses to the list. Invalid ones are reported (422 only when none is valid); ones already on the
    list keep their original entry."""
    tenant = await tenancy.get_tenant(session, tenant_id)
    valid: dict[str, None] = {}
    invalid: list[InvalidAddress] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(data.addresses):
        try:
            valid[normalize.normalize_address(data.channel, raw, tenant.default_region)] = None
        except ValueError as exc:
            invalid.append(InvalidAddress(address=raw, error=str(exc)))
            errors.append(field_error(["body", "addresses", index], str(exc)))
    if not valid:
        raise Invalid(f"no valid {data.channel} address given: {errors[0]['msg']}", errors=errors)
    addresses = list(valid)
    repo = SuppressionRepo(session, tenant_id)
    added = await repo.insert_missing(data.channel, addresses, reason=data.reason, note=data.note, at=utcnow())
    rows = await repo.of_addresses(data.channel, addresses)
    return SuppressionsAdded(added=added, already_suppressed=len(addresses) - added, invalid=invalid,
                             items=[SuppressionRead.model_validate(r) for r in sorted(rows, key=lambda r: r.id)])


async def suppress(session: AsyncSession, tenant_id: uuid.UUID, channel: str, addresses: list[str], *,
                   reason: str, note: str | None = None) -> int:
    """Put already-normalised addresses on the list (bounces, complaints); returns how many were new."""
    if not addresses:
        return 0
    return await SuppressionRepo(session, tenant_id).insert_missing(
        channel, list(dict.fromkeys(addresses)), reason=reason, note=note, at=utcnow())


async def list_suppressions(session: AsyncSession, tenant_id: uuid.UUID, *, channel: str | None, q: str | None,
                            limit: int, cursor: str | None) -> PageRows[Suppression]:
    return await SuppressionRepo(session, tenant_id).list_page(channel=channel, q=q, limit=limit, cursor=cursor)


async def delete_suppression(session: AsyncSession, tenant_id: uuid.UUID, suppression_id: uuid.UUID) -> None:
    """Lift a suppression: the address may receive marketing again if its contact is subscribed."""
    repo = SuppressionRepo(session, tenant_id)
    await repo.remove(await repo.get(suppression_id))
    await session.flush()


async def check(session: AsyncSession, tenant_id: uuid.UUID, data: SuppressionCheck) -> SuppressionCheckResult:
    tenant = await tenancy.get_tenant(session, tenant_id)
    try:
        address = normalize.normalize_address(data.channel, data.address, tenant.default_region)
    except ValueError as exc:
        raise Invalid(str(exc), errors=[field_error(["body", "address"], str(exc))]) from exc
    found = await SuppressionRepo(session, tenant_id).find_address(data.channel, address)
    return SuppressionCheckResult(channel=data.channel, address=address, suppressed=found is not None,
                                  reason=found.reason if found else None, suppression_id=found.id if found else None)
