"""Limits against enumeration and probing, shared by verification services and scorecards."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VerificationLimits(_Frozen):
    """Against enumeration and probing; every window is a fixed window in UTC."""

    consumer_per_minute: int = Field(600, ge=1)
    organisation_per_minute: int = Field(1200, ge=1)
    distinct_keys_per_day: int = Field(1000, ge=1)
    """How many different entities one consumer may ask about in a UTC day."""
    probe_window_seconds: int = Field(86_400, ge=60, le=30 * 86_400)
    probe_checks_per_key: int = Field(4, ge=1, le=100)
    """How many different questions (field and supplied value or threshold) one consumer may
    ask about one entity in a window: a threshold cannot be binary-searched, nor a name guessed."""
