"""Migration 0001 (initial schema) for SQLite: every table of the model as of 0001.

Frozen text: never edit a released migration; a model change adds the next
version (see C{docs/storage.md}).  Identifiers only, no user input.
"""

VERSION = "0001"
NAME = "initial"

SQL = """
CREATE TABLE resellers (
    id INTEGER NOT NULL CONSTRAINT resellers_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT resellers_name_key UNIQUE (name)
);
CREATE INDEX resellers_status_idx ON resellers (status);

CREATE TABLE customers (
    id INTEGER NOT NULL CONSTRAINT customers_pkey PRIMARY KEY AUTOINCREMENT,
    reseller_id INTEGER,
    name TEXT NOT NULL,
    sip_domain TEXT NOT NULL,
    currency TEXT NOT NULL,
    billing_timezone TEXT NOT NULL,
    credit_limit TEXT NOT NULL,
    payment_terms_days INTEGER NOT NULL,
    status TEXT NOT NULL,
    fraud_profile TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT customers_sip_domain_key UNIQUE (sip_domain),
    CONSTRAINT customers_reseller_id_fkey FOREIGN KEY (reseller_id)
        REFERENCES resellers (id) ON DELETE RESTRICT
);
CREATE INDEX customers_reseller_id_idx ON customers (reseller_id);
CREATE INDEX customers_name_idx ON customers (name);
CREATE INDEX customers_currency_idx ON customers (currency);
CREATE INDEX customers_status_idx ON customers (status);

CREATE TABLE accounts (
    id INTEGER NOT NULL CONSTRAINT accounts_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    number TEXT NOT NULL,
    sip_username TEXT NOT NULL,
    ha1_md5 TEXT,
    ha1_sha256 TEXT,
    caller_id_name TEXT NOT NULL,
    caller_id_number TEXT NOT NULL,
    features TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT accounts_number_key UNIQUE (customer_id, number),
    CONSTRAINT accounts_sip_username_key UNIQUE (customer_id, sip_username),
    CONSTRAINT accounts_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT
);
CREATE INDEX accounts_kind_idx ON accounts (kind);
CREATE INDEX accounts_number_idx ON accounts (number);
CREATE INDEX accounts_sip_username_idx ON accounts (sip_username);
CREATE INDEX accounts_status_idx ON accounts (status);

CREATE TABLE vendors (
    id INTEGER NOT NULL CONSTRAINT vendors_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT vendors_name_key UNIQUE (name)
);
CREATE INDEX vendors_status_idx ON vendors (status);

CREATE TABLE tariffs (
    id INTEGER NOT NULL CONSTRAINT tariffs_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT tariffs_name_key UNIQUE (name)
);
CREATE INDEX tariffs_currency_idx ON tariffs (currency);

CREATE TABLE connections (
    id INTEGER NOT NULL CONSTRAINT connections_pkey PRIMARY KEY AUTOINCREMENT,
    vendor_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    transport TEXT NOT NULL,
    auth_username TEXT NOT NULL,
    auth_realm TEXT NOT NULL,
    auth_ha1 TEXT,
    max_calls INTEGER NOT NULL,
    max_cps INTEGER NOT NULL,
    tariff_id INTEGER,
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT connections_name_key UNIQUE (vendor_id, name),
    CONSTRAINT connections_vendor_id_fkey FOREIGN KEY (vendor_id)
        REFERENCES vendors (id) ON DELETE RESTRICT,
    CONSTRAINT connections_tariff_id_fkey FOREIGN KEY (tariff_id)
        REFERENCES tariffs (id) ON DELETE RESTRICT
);
CREATE INDEX connections_tariff_id_idx ON connections (tariff_id);
CREATE INDEX connections_enabled_idx ON connections (enabled);

CREATE TABLE dids (
    id INTEGER NOT NULL CONSTRAINT dids_pkey PRIMARY KEY AUTOINCREMENT,
    number TEXT NOT NULL,
    customer_id INTEGER,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    connection_id INTEGER,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT dids_number_key UNIQUE (number),
    CONSTRAINT dids_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT dids_connection_id_fkey FOREIGN KEY (connection_id)
        REFERENCES connections (id) ON DELETE RESTRICT
);
CREATE INDEX dids_customer_id_idx ON dids (customer_id);
CREATE INDEX dids_target_kind_idx ON dids (target_kind);
CREATE INDEX dids_connection_id_idx ON dids (connection_id);
CREATE INDEX dids_status_idx ON dids (status);

CREATE TABLE products (
    id INTEGER NOT NULL CONSTRAINT products_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    fee_per_line TEXT NOT NULL,
    fee_per_extension TEXT NOT NULL,
    period TEXT NOT NULL,
    addons TEXT NOT NULL,
    tariff_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT products_name_key UNIQUE (name),
    CONSTRAINT products_tariff_id_fkey FOREIGN KEY (tariff_id)
        REFERENCES tariffs (id) ON DELETE RESTRICT
);
CREATE INDEX products_currency_idx ON products (currency);
CREATE INDEX products_tariff_id_idx ON products (tariff_id);

CREATE TABLE subscriptions (
    id INTEGER NOT NULL CONSTRAINT subscriptions_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    starts_on TEXT NOT NULL,
    ends_on TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT subscriptions_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT subscriptions_product_id_fkey FOREIGN KEY (product_id)
        REFERENCES products (id) ON DELETE RESTRICT
);
CREATE INDEX subscriptions_customer_id_idx ON subscriptions (customer_id);
CREATE INDEX subscriptions_product_id_idx ON subscriptions (product_id);
CREATE INDEX subscriptions_status_idx ON subscriptions (status);

CREATE TABLE routing_plans (
    id INTEGER NOT NULL CONSTRAINT routing_plans_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    strategy TEXT NOT NULL,
    entries TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT routing_plans_name_key UNIQUE (name)
);

CREATE TABLE distributors (
    id INTEGER NOT NULL CONSTRAINT distributors_pkey PRIMARY KEY AUTOINCREMENT,
    reseller_id INTEGER,
    parent_id INTEGER,
    name TEXT NOT NULL,
    commission_pct TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT distributors_reseller_id_fkey FOREIGN KEY (reseller_id)
        REFERENCES resellers (id) ON DELETE RESTRICT,
    CONSTRAINT distributors_parent_id_fkey FOREIGN KEY (parent_id)
        REFERENCES distributors (id) ON DELETE RESTRICT
);
CREATE INDEX distributors_reseller_id_idx ON distributors (reseller_id);
CREATE INDEX distributors_parent_id_idx ON distributors (parent_id);
CREATE INDEX distributors_status_idx ON distributors (status);

CREATE TABLE card_batches (
    id INTEGER NOT NULL CONSTRAINT card_batches_pkey PRIMARY KEY AUTOINCREMENT,
    reseller_id INTEGER,
    distributor_id INTEGER,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    face_value TEXT NOT NULL,
    tariff_id INTEGER,
    expires_at TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT card_batches_reseller_id_fkey FOREIGN KEY (reseller_id)
        REFERENCES resellers (id) ON DELETE RESTRICT,
    CONSTRAINT card_batches_distributor_id_fkey FOREIGN KEY (distributor_id)
        REFERENCES distributors (id) ON DELETE RESTRICT,
    CONSTRAINT card_batches_tariff_id_fkey FOREIGN KEY (tariff_id)
        REFERENCES tariffs (id) ON DELETE RESTRICT
);
CREATE INDEX card_batches_reseller_id_idx ON card_batches (reseller_id);
CREATE INDEX card_batches_distributor_id_idx ON card_batches (distributor_id);
CREATE INDEX card_batches_currency_idx ON card_batches (currency);
CREATE INDEX card_batches_tariff_id_idx ON card_batches (tariff_id);
CREATE INDEX card_batches_status_idx ON card_batches (status);

CREATE TABLE cards (
    id INTEGER NOT NULL CONSTRAINT cards_pkey PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL,
    reseller_id INTEGER,
    serial TEXT NOT NULL,
    pin_hash TEXT,
    first_used_at TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT cards_serial_key UNIQUE (serial),
    CONSTRAINT cards_pin_hash_key UNIQUE (pin_hash),
    CONSTRAINT cards_batch_id_fkey FOREIGN KEY (batch_id)
        REFERENCES card_batches (id) ON DELETE RESTRICT,
    CONSTRAINT cards_reseller_id_fkey FOREIGN KEY (reseller_id)
        REFERENCES resellers (id) ON DELETE RESTRICT
);
CREATE INDEX cards_batch_id_idx ON cards (batch_id);
CREATE INDEX cards_reseller_id_idx ON cards (reseller_id);
CREATE INDEX cards_status_idx ON cards (status);

CREATE TABLE cdrs (
    id INTEGER NOT NULL CONSTRAINT cdrs_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER,
    account_id INTEGER,
    call_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    started_at TEXT NOT NULL,
    answered_at TEXT,
    ended_at TEXT,
    billsec INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    cost TEXT NOT NULL,
    currency TEXT NOT NULL,
    legs TEXT NOT NULL,
    breakdown TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT cdrs_call_id_key UNIQUE (call_id),
    CONSTRAINT cdrs_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT cdrs_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT
);
CREATE INDEX cdrs_customer_id_idx ON cdrs (customer_id);
CREATE INDEX cdrs_account_id_idx ON cdrs (account_id);
CREATE INDEX cdrs_callee_idx ON cdrs (callee);
CREATE INDEX cdrs_disposition_idx ON cdrs (disposition);

CREATE TABLE ledger (
    id INTEGER NOT NULL CONSTRAINT ledger_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    account_id INTEGER,
    kind TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT ledger_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT ledger_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT
);
CREATE INDEX ledger_customer_id_idx ON ledger (customer_id);
CREATE INDEX ledger_account_id_idx ON ledger (account_id);
CREATE INDEX ledger_kind_idx ON ledger (kind);
CREATE INDEX ledger_currency_idx ON ledger (currency);
CREATE INDEX ledger_reference_idx ON ledger (reference);

CREATE TABLE invoices (
    id INTEGER NOT NULL CONSTRAINT invoices_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    lines TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT invoices_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT
);
CREATE INDEX invoices_customer_id_idx ON invoices (customer_id);
CREATE INDEX invoices_currency_idx ON invoices (currency);
CREATE INDEX invoices_status_idx ON invoices (status);

CREATE TABLE audit (
    id INTEGER NOT NULL CONSTRAINT audit_pkey PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id INTEGER NOT NULL,
    changes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX audit_customer_id_idx ON audit (customer_id);
CREATE INDEX audit_actor_idx ON audit (actor);
CREATE INDEX audit_action_idx ON audit (action);
CREATE INDEX audit_entity_idx ON audit (entity);

CREATE TABLE api_keys (
    id INTEGER NOT NULL CONSTRAINT api_keys_pkey PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    reseller_id INTEGER,
    customer_id INTEGER,
    account_id INTEGER,
    prefix TEXT,
    key_hash TEXT,
    revoked INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    last_used_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_reseller_id_fkey FOREIGN KEY (reseller_id)
        REFERENCES resellers (id) ON DELETE RESTRICT,
    CONSTRAINT api_keys_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT,
    CONSTRAINT api_keys_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT
);
CREATE INDEX api_keys_role_idx ON api_keys (role);
CREATE INDEX api_keys_reseller_id_idx ON api_keys (reseller_id);
CREATE INDEX api_keys_customer_id_idx ON api_keys (customer_id);
CREATE INDEX api_keys_account_id_idx ON api_keys (account_id);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
"""
