-- A usage id is unique per organisation, not globally (SPEC 7.3): two orgs may both owe arrears
-- for the same id.
ALTER TABLE arrears DROP CONSTRAINT arrears_pkey, ADD PRIMARY KEY (org_id, usage_id);
