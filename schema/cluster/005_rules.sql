-- The fleet's rule set on a cluster: the twin of ../005_rules.sql. Not
-- sharded: every node holds the whole set (one replication path for the
-- cluster, like schema_migrations), so each agent reads it from its own
-- node and a rule written on any node reaches all of them.

CREATE TABLE IF NOT EXISTS flowgate.rules ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/flowgate/rules', '{shard}-{replica}', version, deleted)
ORDER BY id
SETTINGS replicated_deduplication_window = 10000;
