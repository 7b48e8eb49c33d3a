-- The fleet's rule set (`flowgate run --rules-source store`): every agent
-- sharing this store enforces the rules here, re-read every
-- --rules-sync-interval. One row per version of a rule; the newest version
-- of an id is the rule, and a newest version with deleted = 1 means the id
-- has no rule. So a change is an INSERT, from an agent's API or by hand:
--
--   INSERT INTO flowgate.rules (id, action, src, comment) VALUES (42, 'drop', '203.0.113.0/24', 'scanner');
--   INSERT INTO flowgate.rules (id, deleted) VALUES (42, 1);
--
-- and the set is   SELECT * FROM flowgate.rules FINAL   (deleted versions
-- are left out by FINAL, expired rules by the agents). Columns are the REST
-- rule's fields as text, validated by each agent exactly as the API does; a
-- row an agent refuses is logged with its id and field and skipped.
-- version defaults to the server's clock (ns), so versions from different
-- agents compare on one clock. origin says who wrote the version: an
-- agent's host:instance, or 'sql'.

CREATE TABLE IF NOT EXISTS flowgate.rules
(
    id          UInt32,
    version     UInt64 DEFAULT toUnixTimestamp64Nano(now64(9)),
    deleted     UInt8 DEFAULT 0,
    action      Enum8('drop' = 1, 'allow' = 2) DEFAULT 'drop',
    src         String DEFAULT '',
    dst         String DEFAULT '',
    protocol    String DEFAULT '',
    src_ports   String DEFAULT '',
    dst_ports   String DEFAULT '',
    priority    UInt32 DEFAULT 100,
    iface       String DEFAULT '',
    expires_at  Nullable(DateTime64(3, 'UTC')),
    comment     String DEFAULT '',
    created_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    origin      LowCardinality(String) DEFAULT 'sql'
)
ENGINE = ReplacingMergeTree(version, deleted)
ORDER BY id
SETTINGS non_replicated_deduplication_window = 10000;
