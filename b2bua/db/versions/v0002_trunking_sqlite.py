"""Migration 0002 (SIP trunking) for SQLite.

Adds what SIP trunking needs: a customer's dial plan and routing plan; a
vendor connection's limits per direction, weight, outbound registration,
OPTIONS probing, failover timers and codes, codecs, caller ID format and
inbound sources; the tables C{trunks} (customer trunks) and
C{lnp_entries} (ported numbers).  New columns of existing tables carry
the model's default as their SQL default, so the rows already stored get
it (SQLite needs one for a C{NOT NULL} column it adds, and the
repositories always write every column themselves).

Frozen text: never edit a released migration; a model change adds the next
version (see C{docs/storage.md}).  Identifiers only, no user input.
"""

VERSION = "0002"
NAME = "trunking"

SQL = """
ALTER TABLE customers ADD COLUMN dial_plan TEXT NOT NULL DEFAULT '{}';
ALTER TABLE customers ADD COLUMN routing_plan_id INTEGER
    CONSTRAINT customers_routing_plan_id_fkey
        REFERENCES routing_plans (id) ON DELETE RESTRICT;
CREATE INDEX customers_routing_plan_id_idx ON customers (routing_plan_id);

ALTER TABLE connections ADD COLUMN max_calls_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN max_calls_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN weight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN register INTEGER NOT NULL DEFAULT 0
    CHECK (register IN (0, 1));
ALTER TABLE connections ADD COLUMN register_expires INTEGER NOT NULL DEFAULT 3600;
ALTER TABLE connections ADD COLUMN registrar TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN probe INTEGER NOT NULL DEFAULT 0
    CHECK (probe IN (0, 1));
ALTER TABLE connections ADD COLUMN probe_interval INTEGER NOT NULL DEFAULT 30;
ALTER TABLE connections ADD COLUMN setup_timeout INTEGER NOT NULL DEFAULT 5;
ALTER TABLE connections ADD COLUMN answer_timeout INTEGER NOT NULL DEFAULT 120;
ALTER TABLE connections ADD COLUMN failover_codes TEXT NOT NULL
    DEFAULT '[408,480,"5xx"]';
ALTER TABLE connections ADD COLUMN codecs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE connections ADD COLUMN caller_id_format TEXT NOT NULL DEFAULT '{}';
ALTER TABLE connections ADD COLUMN inbound_sources TEXT NOT NULL DEFAULT '[]';

CREATE TABLE trunks (
    id INTEGER NOT NULL CONSTRAINT trunks_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    auth_mode TEXT NOT NULL,
    allowed_sources TEXT NOT NULL,
    address TEXT NOT NULL,
    account_id INTEGER,
    transport TEXT NOT NULL,
    codecs TEXT NOT NULL,
    max_calls INTEGER NOT NULL,
    max_calls_in INTEGER NOT NULL,
    max_calls_out INTEGER NOT NULL,
    max_cps INTEGER NOT NULL,
    routing_plan_id INTEGER,
    caller_id_format TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT trunks_name_key UNIQUE (customer_id, name),
    CONSTRAINT trunks_account_id_key UNIQUE (account_id),
    CONSTRAINT trunks_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT trunks_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT,
    CONSTRAINT trunks_routing_plan_id_fkey FOREIGN KEY (routing_plan_id)
        REFERENCES routing_plans (id) ON DELETE RESTRICT
);
CREATE INDEX trunks_name_idx ON trunks (name);
CREATE INDEX trunks_auth_mode_idx ON trunks (auth_mode);
CREATE INDEX trunks_routing_plan_id_idx ON trunks (routing_plan_id);
CREATE INDEX trunks_status_idx ON trunks (status);

CREATE TABLE lnp_entries (
    id INTEGER NOT NULL CONSTRAINT lnp_entries_pkey PRIMARY KEY AUTOINCREMENT,
    number TEXT NOT NULL,
    routing_prefix TEXT NOT NULL,
    carrier TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT lnp_entries_number_key UNIQUE (number)
);
CREATE INDEX lnp_entries_carrier_idx ON lnp_entries (carrier);
"""
