"""Expiry service: keeps every deadline from the ledger, commands entitlement when one falls due,
and sends reminders before it (SPEC 2.2-2.5, 3, 5.0)."""
