-- Before SPEC 7.3 was built, a use was claimed in the inbox under its bare usage id; it is now
-- claimed as '<org>:<usage id>'. A use processed before the upgrade and delivered again after it
-- (a batch whose offsets were not yet committed) must still be absorbed, so each old claim is
-- claimed again under its new key, with the org read from the ledger's record of that use (every
-- use leaves exactly one usage_deducted or usage_rejected entry). The old rows stay: a bare id may
-- also be a new-style key ('<org>:<id>' of some other use) and must not lose its claim.
INSERT INTO inbox (stream, message_id, processed_at)
SELECT 'usage', l.org_id || ':' || i.message_id, i.processed_at
FROM inbox i
JOIN ledger l ON l.data ->> 'usage_id' = i.message_id
WHERE i.stream = 'usage'
  AND l.type IN ('aimis.ledger.usage_deducted', 'aimis.ledger.usage_rejected')
ON CONFLICT DO NOTHING;
