"""The points service: rules as data, an append-only idempotent ledger, balances."""
