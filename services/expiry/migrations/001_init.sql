-- Expiry service: one row per deadline the ledger told us about, and the reminders sent for it.

-- kind/ref_id: ('lot', lot_id) | ('licence', licence_id) | ('service', service_id) | ('maintenance', service_id).
-- An item is open while closed_at IS NULL; a terminal ledger event closes it (the row stays as a
-- tombstone so a late or repeated creation event cannot reopen it; a licence renewal with a later
-- ends_at does reopen it).
CREATE TABLE deadlines (
    kind           text        NOT NULL CHECK (kind IN ('lot', 'licence', 'service', 'maintenance')),
    ref_id         text        NOT NULL,
    org_id         text        NOT NULL,
    expires_at     timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    quantity       int,
    remaining      int,
    commanded_at   timestamptz,
    command_count  int         NOT NULL DEFAULT 0,
    closed_at      timestamptz,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (kind, ref_id)
);
-- the sweep: open items by due time
CREATE INDEX deadlines_open_due ON deadlines (due_at) WHERE closed_at IS NULL;
-- reminders: open items by expiry
CREATE INDEX deadlines_open_expires ON deadlines (expires_at) WHERE closed_at IS NULL;
-- the schedule endpoint
CREATE INDEX deadlines_org ON deadlines (org_id, due_at) WHERE closed_at IS NULL;

-- One row per item, threshold and deadline: 'sent' (an expiry_upcoming went to the outbox in the
-- same transaction) or 'skipped' (a larger threshold passed while a smaller one was due, the lot
-- was depleted, or the deadline had already passed). The key includes expires_at so a renewed
-- licence gets its reminders again for the new date.
CREATE TABLE reminders (
    kind         text        NOT NULL,
    ref_id       text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    days_before  int         NOT NULL,
    status       text        NOT NULL CHECK (status IN ('sent', 'skipped')),
    decided_at   timestamptz NOT NULL,
    PRIMARY KEY (kind, ref_id, expires_at, days_before)
);
