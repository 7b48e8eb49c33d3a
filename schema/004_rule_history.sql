-- Rule history: every change to the rule set, when and what, before and
-- after (the rule as JSON, the API's shape; '' when there was none). op:
-- add and delete (REST/CLI), expire (the agent, on time), replace (PUT
-- /rules: one row per rule it added, removed or changed; rule_id 0 is a
-- summary row when a replace changed more rules than are listed).
-- Kept {history_days} days: who blocked what, and when, is asked long after.

CREATE TABLE IF NOT EXISTS flowgate.rule_history
(
    ts      DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    host    LowCardinality(String),
    op      Enum8('add' = 1, 'delete' = 2, 'expire' = 3, 'replace' = 4),
    rule_id UInt32,
    before  String CODEC(ZSTD(3)),
    after   String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (host, ts, rule_id)
TTL toDateTime(ts) + toIntervalDay({history_days})
SETTINGS non_replicated_deduplication_window = 1000;
