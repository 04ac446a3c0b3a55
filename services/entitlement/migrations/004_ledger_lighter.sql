-- The ledger is appended once per use on the hot path (issue 13). Two of its costs did not serve
-- a reader: `ledger_by_org_resource` (the one reader, the ledger page, filters an org's entries
-- by resource; `ledger_by_org` serves it, at most a few kinds per org to skip) and `jsonb` (the
-- page returns `data` as written; nothing queries inside it): `json` only checks the text.
DROP INDEX ledger_by_org_resource;
ALTER TABLE ledger ALTER COLUMN data TYPE json USING data::json;
