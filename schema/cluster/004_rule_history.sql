-- Rule history on a cluster: the twin of ../004_rule_history.sql (see
-- 001_flows.sql here for the naming: <table>_local per shard, <table>
-- Distributed). Sharded by host, like the counters.

CREATE TABLE IF NOT EXISTS flowgate.rule_history_local ON CLUSTER '{cluster}'
(
    ts      DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    host    LowCardinality(String),
    op      Enum8('add' = 1, 'delete' = 2, 'expire' = 3, 'replace' = 4),
    rule_id UInt32,
    before  String CODEC(ZSTD(3)),
    after   String CODEC(ZSTD(3))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/rule_history', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (host, ts, rule_id)
TTL toDateTime(ts) + toIntervalDay({history_days})
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS flowgate.rule_history ON CLUSTER '{cluster}' AS flowgate.rule_history_local
ENGINE = Distributed('{cluster}', flowgate, rule_history_local, cityHash64(host));
