from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["read", "write"]


class TenantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    plan: str
    default_region: str | None
    created_at: datetime


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    default_region: str | None = Field(default=None, description="ISO 3166-1 alpha-2 region for phone numbers; "
                                       "null removes it")

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, value: str | None) -> str:
        # The field is optional in a PATCH, but a tenant always has a name: an explicit null is an error.
        if value is None:
            raise ValueError("name cannot be null")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        import phonenumbers

        if value is None:
            return None
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use an ISO 3166-1 alpha-2 code such as US or DE")
        return value


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(default_factory=lambda: ["read", "write"], min_length=1)


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The full key. Shown once; only its hash is stored.")
