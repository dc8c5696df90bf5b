"""The send pipeline: channel providers, message building, the outbox."""
