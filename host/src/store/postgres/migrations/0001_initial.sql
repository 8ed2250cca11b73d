-- Tokens: one row per connection key, written only by compare-and-swap on
-- `version`. Versions come from a sequence so that an entry deleted and
-- created again never repeats a version that a stale writer may still hold.
CREATE SEQUENCE ionflow_token_versions;
CREATE TABLE ionflow_tokens (
    key        text PRIMARY KEY,
    version    bigint NOT NULL,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The token-store lease around a token request: a row with an expiry, so a
-- worker that dies while holding it loses it after its ttl.
CREATE SEQUENCE ionflow_lease_ids;
CREATE TABLE ionflow_token_leases (
    key        text PRIMARY KEY,
    lease_id   bigint NOT NULL,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Pipeline state (watermarks), the JSON the file backend keeps in a file.
CREATE TABLE ionflow_pipeline_state (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What each serving worker knows of a scheduled pipeline, for `ionflow status`.
CREATE TABLE ionflow_schedules (
    pipeline   text PRIMARY KEY,
    file       text NOT NULL,
    schedule   text NOT NULL,
    next_run   timestamptz,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per claimed tick: the primary key makes a tick claimable once, the
-- lease expiry lets another worker take over from a worker that died.
CREATE TABLE ionflow_runs (
    pipeline         text NOT NULL,
    tick             timestamptz NOT NULL,
    state            text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'abandoned')),
    worker           text NOT NULL,
    attempts         integer NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    error            text,
    PRIMARY KEY (pipeline, tick)
);
CREATE INDEX ionflow_runs_running ON ionflow_runs (pipeline) WHERE state = 'running';
