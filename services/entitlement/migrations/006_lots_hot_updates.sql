-- A deduction changes only a lot's `remaining`, yet every such update wrote a new entry into each of
-- the lot's three indexes: `lots_drawable`'s predicate named `remaining`, and PostgreSQL updates a
-- row in place (HOT: no index entries) only when no indexed column, predicates' included, changed.
-- At 5,000 uses/s a deduction batch rewrote ~100 lots this way (issue 13): index bloat, more WAL,
-- autovacuum of lots, and slower reads of the drawable lots every batch. The index now keeps every
-- active lot (an org has few; `remaining > 0` is checked on the row it finds), and pages keep room
-- for the new versions HOT needs.
DROP INDEX lots_drawable;
CREATE INDEX lots_drawable ON lots (org_id, resource, expires_at, credited_at, lot_id) WHERE status = 'active';
ALTER TABLE lots SET (fillfactor = 50);
