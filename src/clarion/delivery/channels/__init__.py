"""Channel providers: each turns rendered messages into deliveries over one transport (see base.py)."""
