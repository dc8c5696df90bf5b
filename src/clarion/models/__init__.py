"""All ORM models; importing this package registers every table on Base.metadata."""

from clarion.models.audience import (
    Contact,
    ContactSubscription,
    PushSubscription,
    Segment,
    SegmentMember,
    Suppression,
)
from clarion.models.base import Base
from clarion.models.campaign import AccountReach, Campaign, CampaignRecipient, CampaignSendSchedule
from clarion.models.campaign_events import CampaignEvent, CampaignLink
from clarion.models.content import Template
from clarion.models.delivery import ChannelConfig, OutboxMessage, RateBucket
from clarion.models.jobs import Job, WorkerTick
from clarion.models.tenancy import ApiKey, DomainEvent, Tenant
from clarion.models.tracking import BounceRecord, Conversion, TrackingClient, WebhookCall

__all__ = [
           "AccountReach",
           "ApiKey",
           "Base",
           "BounceRecord",
           "Campaign",
           "CampaignEvent",
           "CampaignLink",
           "CampaignRecipient",
           "CampaignSendSchedule",
           "ChannelConfig",
           "Contact",
           "ContactSubscription",
           "Conversion",
           "DomainEvent",
           "Job",
           "OutboxMessage",
           "PushSubscription",
           "RateBucket",
           "Segment",
           "SegmentMember",
           "Suppression",
           "Template",
           "Tenant",
           "TrackingClient",
           "WebhookCall",
           "WorkerTick",
]
