-- Counter history on a cluster: the twin of ../003_counters.sql (see
-- 001_flows.sql here for the naming: <table>_local per shard, <table>
-- Distributed). Sharded by host: one host's series stays on one shard.

CREATE TABLE IF NOT EXISTS flowgate.iface_counters_local ON CLUSTER '{cluster}'
(
    ts                 DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    host               LowCardinality(String),
    iface              LowCardinality(String),
    direction          Enum8('ingress' = 1, 'egress' = 2),
    seen_packets       UInt64 CODEC(T64, ZSTD(1)),
    seen_bytes         UInt64 CODEC(T64, ZSTD(1)),
    passed_packets     UInt64 CODEC(T64, ZSTD(1)),
    dropped_packets    UInt64 CODEC(T64, ZSTD(1)),
    dropped_bytes      UInt64 CODEC(T64, ZSTD(1)),
    ip_packets         UInt64 CODEC(T64, ZSTD(1)),
    non_ip_packets     UInt64 CODEC(T64, ZSTD(1)),
    new_flows          UInt64 CODEC(T64, ZSTD(1)),
    flow_insert_failed UInt64 CODEC(T64, ZSTD(1)),
    malformed          Map(LowCardinality(String), UInt64)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/iface_counters', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (host, iface, direction, ts)
TTL toDateTime(ts) + toIntervalDay({counters_days})
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS flowgate.iface_counters ON CLUSTER '{cluster}' AS flowgate.iface_counters_local
ENGINE = Distributed('{cluster}', flowgate, iface_counters_local, cityHash64(host));

CREATE TABLE IF NOT EXISTS flowgate.rule_counters_local ON CLUSTER '{cluster}'
(
    ts      DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    host    LowCardinality(String),
    rule_id UInt32,
    packets UInt64 CODEC(T64, ZSTD(1)),
    bytes   UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowgate/rule_counters', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (host, rule_id, ts)
TTL toDateTime(ts) + toIntervalDay({counters_days})
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS flowgate.rule_counters ON CLUSTER '{cluster}' AS flowgate.rule_counters_local
ENGINE = Distributed('{cluster}', flowgate, rule_counters_local, cityHash64(host));
