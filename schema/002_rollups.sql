-- Rollups of flowgate.flows, filled by materialized views on insert and kept
-- longer than the flows themselves ({rollup_days}, {talkers_days} days).
-- Both are SummingMergeTree: rows with the same key are added up in merges,
-- so read them with sum() ... GROUP BY, never as they are stored.
-- Times are the flow's first_seen, like the flows table's partitions.
-- Deduplication window: a retried insert into flows is dropped there, and
-- the views' blocks get tokens derived from the flows insert's, so the
-- rollups drop the retry too (without a window here they would not).

CREATE TABLE IF NOT EXISTS flowgate.flows_1m
(
    minute          DateTime('UTC') CODEC(Delta, ZSTD(1)),
    host            LowCardinality(String),
    iface           LowCardinality(String),
    direction       Enum8('ingress' = 1, 'egress' = 2),
    protocol        UInt8,
    dst_port        UInt16,
    flows           UInt64 CODEC(T64, ZSTD(1)),
    packets         UInt64 CODEC(T64, ZSTD(1)),
    bytes           UInt64 CODEC(T64, ZSTD(1)),
    dropped_packets UInt64 CODEC(T64, ZSTD(1)),
    dropped_bytes   UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, host, iface, direction, protocol, dst_port)
TTL minute + toIntervalDay({rollup_days})
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS flowgate.flows_1m_mv TO flowgate.flows_1m AS
SELECT
    toStartOfMinute(toDateTime(first_seen, 'UTC')) AS minute,
    host,
    iface,
    direction,
    protocol,
    dst_port,
    count() AS flows,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    sum(dropped_packets) AS dropped_packets,
    sum(dropped_bytes) AS dropped_bytes
FROM flowgate.flows
GROUP BY minute, host, iface, direction, protocol, dst_port;

-- Top talkers per hour. iface and direction stay in the key: a forwarded
-- flow is seen on two interfaces, and a query picks one to avoid counting
-- it twice. The view has no GROUP BY on purpose: most (src, dst) pairs of
-- a batch are distinct, and SummingMergeTree already sums equal keys of an
-- inserted block while sorting it (optimize_on_insert) — a hash GROUP BY of
-- a million address pairs first made inserts three times slower.
CREATE TABLE IF NOT EXISTS flowgate.talkers_1h
(
    hour            DateTime('UTC') CODEC(Delta, ZSTD(1)),
    src_addr        IPv6 CODEC(ZSTD(1)),
    dst_addr        IPv6 CODEC(ZSTD(1)),
    host            LowCardinality(String),
    iface           LowCardinality(String),
    direction       Enum8('ingress' = 1, 'egress' = 2),
    flows           UInt64 CODEC(T64, ZSTD(1)),
    packets         UInt64 CODEC(T64, ZSTD(1)),
    bytes           UInt64 CODEC(T64, ZSTD(1)),
    dropped_packets UInt64 CODEC(T64, ZSTD(1)),
    dropped_bytes   UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, src_addr, dst_addr, host, iface, direction)
TTL hour + toIntervalDay({talkers_days})
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS flowgate.talkers_1h_mv TO flowgate.talkers_1h AS
SELECT
    toStartOfHour(toDateTime(first_seen, 'UTC')) AS hour,
    src_addr,
    dst_addr,
    host,
    iface,
    direction,
    toUInt64(1) AS flows,
    packets,
    bytes,
    dropped_packets,
    dropped_bytes
FROM flowgate.flows;
