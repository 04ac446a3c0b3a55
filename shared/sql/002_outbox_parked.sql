-- SPEC 7.2: a row the broker refuses for good (too large, invalid) is parked, not retried forever
-- in front of the rows behind it. The relay skips parked rows; admins list them.
ALTER TABLE outbox ADD COLUMN parked_at timestamptz, ADD COLUMN park_reason text;
CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL;
