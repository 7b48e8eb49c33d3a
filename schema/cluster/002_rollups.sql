-- Rollups on a cluster: the twin of ../002_rollups.sql (see 001_flows.sql
-- here for the naming: <table>_local per shard, <table> Distributed).
-- The views read each shard's flowgate.flows_local and write that shard's
-- <rollup>_local: rows inserted through the Distributed flowgate.flows reach
-- the views on the shard they are sent to, and are summed there. Read the
-- rollups through the Distributed tables with sum() … GROUP BY, as on one node.

CREATE TABLE IF NOT EXISTS flowgate.flows_1m_local ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowgate/flows_1m', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, host, iface, direction, protocol, dst_port)
TTL minute + toIntervalDay({rollup_days})
SETTINGS replicated_deduplication_window = 10000;

-- No sharding key: only the views write flows_1m_local; with more than one
-- shard, an INSERT into this Distributed table is refused rather than
-- spread where the views would not put it.
CREATE TABLE IF NOT EXISTS flowgate.flows_1m ON CLUSTER '{cluster}' AS flowgate.flows_1m_local
ENGINE = Distributed('{cluster}', flowgate, flows_1m_local);

CREATE MATERIALIZED VIEW IF NOT EXISTS flowgate.flows_1m_mv ON CLUSTER '{cluster}' TO flowgate.flows_1m_local AS
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
FROM flowgate.flows_local
GROUP BY minute, host, iface, direction, protocol, dst_port;

CREATE TABLE IF NOT EXISTS flowgate.talkers_1h_local ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowgate/talkers_1h', '{replica}')
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, src_addr, dst_addr, host, iface, direction)
TTL hour + toIntervalDay({talkers_days})
SETTINGS replicated_deduplication_window = 10000;

-- The rows of a source are on the shard flows puts them on: declaring the
-- same key lets optimize_skip_unused_shards read one shard for one source.
CREATE TABLE IF NOT EXISTS flowgate.talkers_1h ON CLUSTER '{cluster}' AS flowgate.talkers_1h_local
ENGINE = Distributed('{cluster}', flowgate, talkers_1h_local, cityHash64(src_addr));

CREATE MATERIALIZED VIEW IF NOT EXISTS flowgate.talkers_1h_mv ON CLUSTER '{cluster}' TO flowgate.talkers_1h_local AS
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
FROM flowgate.flows_local;
