"""Provider sandboxes: small ASGI apps that speak a provider's real wire format (WhatsApp Cloud API, Twilio,
Telegram Bot API, a Web Push service).

They are the fakes the provider tests run against over real HTTP, and the built-in sandbox accounts
`make demo` sends through (mounted under /sandbox/<provider>), so a new user sees statuses move without an
account anywhere. Each records what it received, can be told to fail the next requests in the provider's own
error formats, and produces status webhooks signed the way the provider signs them.
"""
