-- The outbox and the inbox only grow on the hot path (a row per event, never updated there).
-- PostgreSQL vacuums such a table after its inserts pass 20% of its size: at 5,000 events/s that
-- came once a minute over ~40,000 pages of each, most of them already out of shared buffers, read
-- back and dirtied again to set their hint bits and visibility (10-14 s a vacuum, the latency's
-- worst seconds; docs/benchmarks.md, fourteenth pass). Vacuumed every 20,000 new rows instead, the
-- pages it visits are the young ones still in shared buffers, mostly still dirty from the insert:
-- ~2,500 pages in 0.07 s, nothing read or written again. (`autovacuum_naptime`, 5 s in
-- deploy/local/postgres.sh and the chart, is how often the launcher looks.)
-- Their statistics hardly move as they grow (rows are found by key), while an ANALYZE reads its
-- sample from pages all over the table: analysed after 100,000 rows plus a fifth of the table, each
-- column at statistics target 10 (a sample of 3,000 rows, not 30,000: 0.1 s, not 1.3-1.7 s).
ALTER TABLE outbox SET (autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0,
                        autovacuum_analyze_threshold = 100000, autovacuum_analyze_scale_factor = 0.2);
ALTER TABLE inbox SET (autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0,
                       autovacuum_analyze_threshold = 100000, autovacuum_analyze_scale_factor = 0.2);
ALTER TABLE outbox ALTER COLUMN seq SET STATISTICS 10, ALTER COLUMN event_id SET STATISTICS 10,
    ALTER COLUMN topic SET STATISTICS 10, ALTER COLUMN key SET STATISTICS 10, ALTER COLUMN payload SET STATISTICS 10,
    ALTER COLUMN created_at SET STATISTICS 10, ALTER COLUMN sent_at SET STATISTICS 10,
    ALTER COLUMN parked_at SET STATISTICS 10, ALTER COLUMN park_reason SET STATISTICS 10,
    ALTER COLUMN discarded_at SET STATISTICS 10;
ALTER TABLE inbox ALTER COLUMN stream SET STATISTICS 10, ALTER COLUMN message_id SET STATISTICS 10,
    ALTER COLUMN processed_at SET STATISTICS 10;
