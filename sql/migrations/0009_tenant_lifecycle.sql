-- A tenant's status history, so a message of another topic is judged by the status in effect when
-- it was published instead of by whatever the commands topic has been read up to (consumers/
-- tenancy.py). One row per status change, in the order the tenant's commands were applied (its
-- commands share a partition): seq numbers them per tenant. source_timestamp_ms is the command's
-- Kafka timestamp (NULL: in effect since ever, for a tenant that existed before its history).
-- Append-only; the timestamp is left out of the digest like the other provenance columns.
CREATE TABLE IF NOT EXISTS tenant_lifecycle (
    tenant_id uuid NOT NULL REFERENCES tenant (tenant_id),
    seq integer NOT NULL CHECK (seq > 0),
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    occurred_at timestamptz NOT NULL,
    source_timestamp_ms bigint,
    PRIMARY KEY (tenant_id, seq)
);
SELECT leo_isolate_tenant('tenant_lifecycle');
SELECT leo_make_append_only('tenant_lifecycle');
