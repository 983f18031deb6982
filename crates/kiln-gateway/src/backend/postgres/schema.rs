//! The gateway's PostgreSQL schema, as versioned migrations (component `gateway`).
//!
//! The tables mirror the SQLite ones column for column (integers and 0/1 flags as `BIGINT`,
//! like SQLite's INTEGER), so the same query conditions run on both. Text columns sort byte
//! by byte (`COLLATE "C"`), as SQLite's do, so listings come back in the same order whatever
//! the database's locale.

use kiln_postgres::Migration;

/// Released schemas, in order; never edit one that shipped (docs/cluster.md).
pub(super) static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "gateways, logs, analytics, response cache, journal positions, custom \
               providers, stored keys, datasets, evaluations, dynamic routes",
    sql: r#"
CREATE TABLE gateways (
    account TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    config TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    modified_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE FUNCTION kiln_gateways_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The schema as payload: deployments sharing a database hear only their own changes.
    PERFORM pg_notify('kiln_gateways', current_schema());
    RETURN NULL;
END
$$;
CREATE TRIGGER gateways_changed AFTER INSERT OR UPDATE OR DELETE ON gateways
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_gateways_changed();

CREATE TABLE gateway_logs (
    id TEXT COLLATE "C" PRIMARY KEY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    model TEXT COLLATE "C" NOT NULL,
    model_type TEXT COLLATE "C",
    path TEXT COLLATE "C" NOT NULL,
    request_type TEXT COLLATE "C" NOT NULL,
    duration BIGINT NOT NULL,
    status_code BIGINT NOT NULL,
    success BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost DOUBLE PRECISION,
    custom_cost BIGINT NOT NULL,
    metadata TEXT COLLATE "C",
    step BIGINT,
    event_id TEXT COLLATE "C",
    request_content_type TEXT COLLATE "C",
    response_content_type TEXT COLLATE "C",
    user_agent TEXT COLLATE "C",
    authentication BIGINT NOT NULL,
    request_body BYTEA NOT NULL,
    response_body BYTEA NOT NULL,
    request_size BIGINT NOT NULL,
    response_size BIGINT NOT NULL,
    feedback BIGINT,
    score BIGINT
);
CREATE INDEX gateway_logs_by_time ON gateway_logs (account, gateway, created_at, id);

-- Follows gateway_logs through triggers, so the cap check is one row read and no delete path
-- can leave it stale. Statement triggers with transition tables: a bulk delete updates each
-- gateway's count once.
CREATE TABLE gateway_log_counts (
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (account, gateway)
);
CREATE FUNCTION kiln_gateway_logs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gateway_log_counts AS counts (account, gateway, n)
        SELECT account, gateway, count(*) FROM added GROUP BY account, gateway
        ORDER BY account, gateway
        ON CONFLICT (account, gateway) DO UPDATE SET n = counts.n + excluded.n;
    RETURN NULL;
END
$$;
CREATE FUNCTION kiln_gateway_logs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE gateway_log_counts AS counts SET n = counts.n - gone.n
        FROM (SELECT account, gateway, count(*) AS n FROM removed GROUP BY account, gateway)
            AS gone
        WHERE counts.account = gone.account AND counts.gateway = gone.gateway;
    RETURN NULL;
END
$$;
CREATE TRIGGER gateway_logs_inserted AFTER INSERT ON gateway_logs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_gateway_logs_inserted();
CREATE TRIGGER gateway_logs_deleted AFTER DELETE ON gateway_logs
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_gateway_logs_deleted();

CREATE TABLE gateway_analytics (
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    minute BIGINT NOT NULL,
    provider TEXT COLLATE "C" NOT NULL,
    model TEXT COLLATE "C" NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, gateway, minute, provider, model)
);

-- The response cache when there is no Redis.
CREATE TABLE gateway_cache (
    key BYTEA PRIMARY KEY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    status BIGINT NOT NULL,
    content_type TEXT,
    streamed BOOLEAN NOT NULL,
    body BYTEA NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX gateway_cache_by_gateway ON gateway_cache (account, gateway);
CREATE INDEX gateway_cache_by_age ON gateway_cache (created_at);

-- How far each node's write-ahead journal is applied, written with the writes it covers.
CREATE TABLE gateway_journal_applied (
    journal TEXT PRIMARY KEY,
    segment BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE gateway_custom_providers (
    account TEXT COLLATE "C" NOT NULL,
    slug TEXT COLLATE "C" NOT NULL,
    provider TEXT NOT NULL,
    PRIMARY KEY (account, slug)
);

-- `seq` orders rows as SQLite's rowid does: oldest first.
CREATE TABLE gateway_provider_configs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    alias TEXT COLLATE "C" NOT NULL,
    provider_slug TEXT COLLATE "C" NOT NULL,
    default_config BOOLEAN NOT NULL,
    secret TEXT NOT NULL,
    secret_id TEXT NOT NULL,
    rate_limit BIGINT,
    rate_limit_period BIGINT,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (account, gateway, id),
    UNIQUE (account, gateway, provider_slug, alias)
);

CREATE TABLE gateway_datasets (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    enable BOOLEAN NOT NULL,
    filters TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (account, gateway, id)
);

CREATE TABLE gateway_evaluations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    evaluation TEXT NOT NULL,
    PRIMARY KEY (account, gateway, id)
);

CREATE TABLE gateway_routes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (account, gateway, id),
    UNIQUE (account, gateway, name)
);
CREATE TABLE gateway_route_versions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    route TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    elements TEXT NOT NULL,
    comment TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (account, gateway, route, id)
);
CREATE TABLE gateway_route_deployments (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    account TEXT COLLATE "C" NOT NULL,
    gateway TEXT COLLATE "C" NOT NULL,
    route TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    comment TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (account, gateway, route, id)
);
"#,
}];
