"""Entitlement: lots, expiring-first atomic deduction, arrears, licences, services, account API."""
