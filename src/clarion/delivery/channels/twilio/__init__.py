"""SMS through Twilio's Programmable Messaging API (2010-04-01): sends, status callbacks, inbound messages."""

from clarion.delivery.channels.twilio.config import TwilioConfig
from clarion.delivery.channels.twilio.provider import TwilioProvider
from clarion.delivery.channels.twilio.signature import twilio_signature

__all__ = ["TwilioConfig", "TwilioProvider", "twilio_signature"]
