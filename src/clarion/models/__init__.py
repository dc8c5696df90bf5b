"""All ORM models; importing this package registers every table on Base.metadata."""

from clarion.models.audience import Contact, ContactSubscription, Segment, SegmentMember
from clarion.models.base import Base
from clarion.models.campaign import Campaign, CampaignRecipient
from clarion.models.content import Template
from clarion.models.delivery import OutboxMessage
from clarion.models.jobs import Job, WorkerTick
from clarion.models.tenancy import ApiKey, DomainEvent, Tenant

__all__ = ["ApiKey", "Base", "Campaign", "CampaignRecipient", "Contact", "ContactSubscription",
           "DomainEvent", "Job", "OutboxMessage", "Segment", "SegmentMember", "Template", "Tenant",
           "WorkerTick"]
