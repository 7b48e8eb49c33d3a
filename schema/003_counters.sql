-- Counter history: per interface and direction, and per rule. Each row holds
-- the counts of one interval (deltas, not running totals), so sum() over a
-- time range is that range's traffic. Kept {counters_days} days.
-- Deduplication applies only when the insert carries a token
-- (FlowStore.insertIfaceCounters(rows, token)).

CREATE TABLE IF NOT EXISTS flowgate.iface_counters
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
    -- Malformed frames by reason (layout.ts MALFORMED_REASONS); absent = 0.
    malformed          Map(LowCardinality(String), UInt64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (host, iface, direction, ts)
TTL toDateTime(ts) + toIntervalDay({counters_days})
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS flowgate.rule_counters
(
    ts      DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    host    LowCardinality(String),
    rule_id UInt32,
    packets UInt64 CODEC(T64, ZSTD(1)),
    bytes   UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (host, rule_id, ts)
TTL toDateTime(ts) + toIntervalDay({counters_days})
SETTINGS non_replicated_deduplication_window = 1000;
