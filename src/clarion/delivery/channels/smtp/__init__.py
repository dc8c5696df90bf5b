"""The SMTP email channel."""

from clarion.delivery.channels.smtp.config import DkimConfig, SmtpConfig
from clarion.delivery.channels.smtp.dkim import DkimKey, sign_message
from clarion.delivery.channels.smtp.provider import SmtpProvider

__all__ = ["DkimConfig", "DkimKey", "SmtpConfig", "SmtpProvider", "sign_message"]
