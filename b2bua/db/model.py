"""The provisioning data model, declared once.

Every provisioned entity is an L{Entity}: its table, its fields with their
types and rules, and how it belongs to a tenant (its I{scope}).  The
migrations, the repositories, the REST API (validation, tenant isolation,
OpenAPI) and the CLI are all driven by these declarations, so a field is
added in one place.

Scopes (who may see a row):

  - C{global}: operator data (vendors, connections, routing plans, tariffs
    without an owner); admin keys only.
  - C{reseller}: rows with a C{reseller_id}; a reseller key sees its own.
  - C{customer}: rows with a C{customer_id}; a reseller sees its customers'
    rows, a customer key its own.
  - C{account}: rows with an C{account_id} (and the C{customer_id} of that
    account); an end-user key sees only its own account's rows.

Money is C{decimal} (NUMERIC in SQL, a decimal string in JSON); times are
UTC C{timestamp}s (ISO 8601 in JSON); secrets are write-only (a password is
turned into HA1 values, a PIN into a keyed hash, an API key into a hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from b2bua.db.shapes import SHAPES

__all__ = ["DID_TARGET_KINDS", "ENTITIES", "TRUNK_AUTH_MODES", "Entity", "Field", "entity"]

#: Field types understood by the migrations, the repositories and the API.
TYPES = frozenset({"id", "text", "int", "decimal", "bool", "json", "timestamp", "date",
                   "enum", "ref"})


@dataclass(frozen=True)
class Field:
    """One column.

    @ivar type: one of L{TYPES}; C{ref} points at another entity's id.
    @ivar required: must be given on create.
    @ivar unique: unique across the table (C{unique_with}: together with
        these other fields).
    @ivar writable: may be set through the API (False for derived fields).
    @ivar readable: returned by the API (False for stored secrets: HA1,
        hashes).
    @ivar choices: allowed values of an C{enum}.
    @ivar ref: the referenced entity's name, for C{ref}.
    @ivar pattern: a regular expression the text must match.
    @ivar maximum_length: for C{text}.
    @ivar minimum: lower bound for C{int} and C{decimal}.
    @ivar default: used on create when not given (a JSON-compatible value).
    @ivar filterable: may be used as a list filter (C{?name=value}).
    @ivar shape: for C{json}: the name of a shape in L{b2bua.db.shapes.SHAPES}
        (C{object}, C{networks}, C{codecs}, C{sip_codes}) the value must
        have; C{None} takes any JSON value.
    """

    name: str
    type: str
    required: bool = False
    unique: bool = False
    unique_with: tuple[str, ...] = ()
    writable: bool = True
    readable: bool = True
    choices: tuple[str, ...] = ()
    ref: str | None = None
    pattern: str | None = None
    maximum_length: int = 255
    minimum: int | None = None
    default: object = None
    filterable: bool = False
    description: str = ""
    shape: str | None = None


@dataclass(frozen=True)
class Entity:
    """A provisioned entity (one table, one API collection).

    @ivar name: singular name (C{customer}).
    @ivar collection: the API path segment and table name (C{customers}).
    @ivar scope: C{global}, C{reseller}, C{customer} or C{account}.
    @ivar write_only: input-only fields (never stored as given: C{password},
        C{pin}), turned into stored fields by the repository.
    @ivar immutable: rows are never updated or deleted through the API
        (CDRs, ledger entries, audit records).
    """

    name: str
    collection: str
    scope: str
    fields: tuple[Field, ...]
    write_only: tuple[Field, ...] = ()
    immutable: bool = False
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def field(self, name: str) -> Field:
        """The field called C{name}.  @raise KeyError: when there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _common(*fields: Field) -> tuple[Field, ...]:
    """Every table has an id and creation/update times."""
    return (
        Field("id", "id", writable=False, filterable=False),
        *fields,
        Field("created_at", "timestamp", writable=False),
        Field("updated_at", "timestamp", writable=False),
    )


_STATUS = Field("status", "enum", choices=("active", "suspended", "closed"), default="active",
                filterable=True)
_E164 = r"^\+?[0-9]{2,20}$"
_CURRENCY = Field("currency", "text", required=True, pattern=r"^[A-Z]{3}$", maximum_length=3,
                  filterable=True)
_ROLES = ("admin", "reseller", "customer", "enduser")
#: C{host[:port]} (a name, an IPv4 address or a bracketed IPv6 address), or empty.
_HOST_PORT = r"^$|^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
_TRANSPORT = Field("transport", "enum", choices=("udp", "tcp", "tls"), default="udp")

#: What a DID may ring.  An C{enum} is stored as text without a C{CHECK}
#: constraint, so a new kind (a feature that answers DIDs) is one more name
#: here and needs no migration.  The target's meaning depends on the kind:
#: an account id, a trunk id, a hunt group's id, ...
DID_TARGET_KINDS: tuple[str, ...] = ("account", "trunk", "hunt_group", "queue", "ivr",
                                     "voicemail")
#: How a customer trunk is recognised: by its source address, by digest
#: credentials (the PBX registers like a phone), or by both at once.
TRUNK_AUTH_MODES: tuple[str, ...] = ("ip", "digest", "both")

ENTITIES: tuple[Entity, ...] = (
    Entity("reseller", "resellers", "reseller", _common(
        Field("name", "text", required=True, unique=True, filterable=True),
        _STATUS,
    ), description="A company that resells the service to its own customers."),
    Entity("customer", "customers", "customer", _common(
        Field("reseller_id", "ref", ref="reseller", filterable=True),
        Field("name", "text", required=True, filterable=True),
        Field("sip_domain", "text", required=True, unique=True,
              pattern=r"^[A-Za-z0-9.\-]+$", filterable=True,
              description="The tenant's SIP domain (also its digest realm)."),
        _CURRENCY,
        Field("billing_timezone", "text", default="UTC",
              description="IANA time zone of the tenant's tariffs and invoices."),
        Field("credit_limit", "decimal", default="0", minimum=0),
        Field("payment_terms_days", "int", default=30, minimum=0),
        _STATUS,
        Field("fraud_profile", "json", default={}),
        Field("dial_plan", "json", default={}, shape="object",
              description="How the customer's callers dial (a JSON object read by the "
                          "numbering plugin)."),
        Field("routing_plan_id", "ref", ref="routing_plan",
              description="The routing plan of its outgoing calls (a trunk may name "
                          "its own)."),
    ), description="A tenant: a business with its own SIP domain."),
    Entity("account", "accounts", "account", _common(
        Field("customer_id", "ref", ref="customer", required=True, filterable=True),
        Field("kind", "enum", choices=("extension", "line", "trunk"), default="extension",
              filterable=True),
        Field("number", "text", required=True, unique_with=("customer_id",),
              pattern=r"^[0-9*#+]{1,32}$", filterable=True),
        Field("sip_username", "text", required=True, unique_with=("customer_id",),
              pattern=r"^[A-Za-z0-9._\-+]{1,64}$", filterable=True),
        Field("ha1_md5", "text", writable=False, readable=False),
        Field("ha1_sha256", "text", writable=False, readable=False),
        Field("caller_id_name", "text", default=""),
        Field("caller_id_number", "text", default="", pattern=r"^(\+?[0-9]{0,20})$"),
        Field("features", "json", default={}),
        _STATUS,
    ), write_only=(Field("password", "text", required=True, maximum_length=128),),
        description="An extension or line of a customer (its SIP credentials)."),
    Entity("did", "dids", "customer", _common(
        Field("number", "text", required=True, unique=True, pattern=_E164, filterable=True),
        Field("customer_id", "ref", ref="customer", filterable=True),
        Field("target_kind", "enum", default="account", choices=DID_TARGET_KINDS,
              filterable=True),
        Field("target", "text", default="",
              description="What the DID rings: an account id, a trunk id, ..."),
        Field("connection_id", "ref", ref="connection",
              description="The vendor connection the DID arrives on."),
        _STATUS,
    ), description="A public number and where it rings."),
    Entity("product", "products", "global", _common(
        Field("name", "text", required=True, unique=True),
        _CURRENCY,
        Field("fee_per_line", "decimal", default="0", minimum=0),
        Field("fee_per_extension", "decimal", default="0", minimum=0),
        Field("period", "enum", choices=("monthly", "yearly"), default="monthly"),
        Field("addons", "json", default=[]),
        Field("tariff_id", "ref", ref="tariff"),
    ), description="What a customer subscribes to: recurring fees and a tariff."),
    Entity("subscription", "subscriptions", "customer", _common(
        Field("customer_id", "ref", ref="customer", required=True, filterable=True),
        Field("product_id", "ref", ref="product", required=True, filterable=True),
        Field("quantity", "int", default=1, minimum=1),
        Field("starts_on", "date", required=True),
        Field("ends_on", "date"),
        _STATUS,
    ), description="A customer's subscription to a product."),
    Entity("tariff", "tariffs", "global", _common(
        Field("name", "text", required=True, unique=True, filterable=True),
        _CURRENCY,
        Field("document", "json", required=True,
              description="The tariff document (rating.md section 6)."),
    ), description="A rate table in the tariff document format."),
    Entity("vendor", "vendors", "global", _common(
        Field("name", "text", required=True, unique=True, filterable=True),
        _STATUS,
    ), description="A carrier we buy termination from."),
    Entity("connection", "connections", "global", _common(
        Field("vendor_id", "ref", ref="vendor", required=True, filterable=True),
        Field("name", "text", required=True, unique_with=("vendor_id",)),
        Field("address", "text", required=True, description="host:port of the trunk."),
        _TRANSPORT,
        Field("auth_username", "text", default=""),
        Field("auth_realm", "text", default=""),
        Field("auth_ha1", "text", readable=False, writable=False),
        Field("max_calls", "int", default=0, minimum=0,
              description="Concurrent calls in both directions (0: unlimited)."),
        Field("max_cps", "int", default=0, minimum=0,
              description="Call attempts per second (0: unlimited)."),
        Field("tariff_id", "ref", ref="tariff"),
        Field("enabled", "bool", default=True, filterable=True),
        Field("max_calls_in", "int", default=0, minimum=0,
              description="Concurrent inbound (DID) calls (0: unlimited)."),
        Field("max_calls_out", "int", default=0, minimum=0,
              description="Concurrent outbound calls (0: unlimited)."),
        Field("weight", "int", default=0, minimum=0,
              description="Rank among equal candidates of a routing plan (higher first)."),
        Field("register", "bool", default=False,
              description="Keep a registration with the vendor (outbound REGISTER)."),
        Field("register_expires", "int", default=3600, minimum=60,
              description="Seconds of registration asked for."),
        Field("registrar", "text", default="",
              description="host:port to register with (empty: the address)."),
        Field("probe", "bool", default=False,
              description="Send OPTIONS to see whether the vendor answers."),
        Field("probe_interval", "int", default=30, minimum=1,
              description="Seconds between OPTIONS probes."),
        Field("setup_timeout", "int", default=5, minimum=0,
              description="Seconds to wait for a provisional response before failing "
                          "over (0: the transaction timeout only)."),
        Field("answer_timeout", "int", default=120, minimum=0,
              description="Seconds to wait for an answer after a provisional response "
                          "before failing over (0: no limit)."),
        Field("failover_codes", "json", default=[408, 480, "5xx"], shape="sip_codes",
              description="Final responses that fail over to the next candidate."),
        Field("codecs", "json", default=[], shape="codecs",
              description="Codecs offered to the vendor, by preference (empty: any)."),
        Field("caller_id_format", "json", default={}, shape="object",
              description="How the caller ID is written towards the vendor."),
        Field("inbound_sources", "json", default=[], shape="networks",
              description="Addresses or networks the vendor's inbound (DID) calls come "
                          "from (empty: the address's host, when it is an IP address)."),
    ), write_only=(Field("auth_password", "text", maximum_length=128),),
        description="A vendor trunk: where calls go and what it can carry."),
    Entity("routing_plan", "routing_plans", "global", _common(
        Field("name", "text", required=True, unique=True),
        Field("strategy", "enum", default="lcr",
              choices=("lcr", "priority", "weighted", "quality")),
        Field("entries", "json", default=[],
              description="[{prefix, connection_ids, weight}] rows."),
    ), description="How outgoing calls pick vendor connections."),
    Entity("trunk", "trunks", "customer", _common(
        Field("customer_id", "ref", ref="customer", required=True, filterable=True),
        Field("name", "text", required=True, unique_with=("customer_id",), filterable=True),
        Field("auth_mode", "enum", choices=TRUNK_AUTH_MODES, default="ip", filterable=True,
              description="ip: by source address; digest: by the credentials of its "
                          "account (the PBX registers); both: both at once."),
        Field("allowed_sources", "json", default=[], shape="networks",
              description="Addresses or networks the PBX sends from (ip and both)."),
        Field("address", "text", default="", pattern=_HOST_PORT,
              description="host:port that calls to the PBX (its DIDs) are sent to when it "
                          "does not register (empty: the registration's contact)."),
        Field("account_id", "ref", ref="account", unique=True,
              description="The trunk account (kind trunk) whose digest credentials the "
                          "PBX uses (digest and both)."),
        _TRANSPORT,
        Field("codecs", "json", default=[], shape="codecs",
              description="Codecs allowed on the trunk, by preference (empty: any)."),
        Field("max_calls", "int", default=0, minimum=0,
              description="Concurrent calls in both directions (0: unlimited)."),
        Field("max_calls_in", "int", default=0, minimum=0,
              description="Concurrent calls towards the PBX (0: unlimited)."),
        Field("max_calls_out", "int", default=0, minimum=0,
              description="Concurrent calls from the PBX (0: unlimited)."),
        Field("max_cps", "int", default=0, minimum=0,
              description="Call attempts per second from the PBX (0: unlimited)."),
        Field("routing_plan_id", "ref", ref="routing_plan",
              description="The routing plan of its calls (empty: the customer's)."),
        Field("caller_id_format", "json", default={}, shape="object",
              description="How caller IDs are written on this trunk."),
        _STATUS,
    ), description="A customer's SIP trunk: an IP-PBX sending and receiving calls."),
    Entity("lnp_entry", "lnp_entries", "global", _common(
        Field("number", "text", required=True, unique=True, pattern=_E164, filterable=True),
        Field("routing_prefix", "text", required=True, pattern=r"^[0-9A-Za-z#*+]{1,32}$",
              maximum_length=32, description="The routing number of the network serving "
                                             "the ported number."),
        Field("carrier", "text", default="", filterable=True),
    ), description="A ported number and the routing prefix of its new network."),
    Entity("distributor", "distributors", "reseller", _common(
        Field("reseller_id", "ref", ref="reseller", filterable=True),
        Field("parent_id", "ref", ref="distributor"),
        Field("name", "text", required=True),
        Field("commission_pct", "decimal", default="0", minimum=0),
        _STATUS,
    ), description="A seller of calling cards (multi-level)."),
    Entity("card_batch", "card_batches", "reseller", _common(
        Field("reseller_id", "ref", ref="reseller", filterable=True),
        Field("distributor_id", "ref", ref="distributor", filterable=True),
        Field("name", "text", required=True),
        _CURRENCY,
        Field("face_value", "decimal", required=True, minimum=0),
        Field("tariff_id", "ref", ref="tariff"),
        Field("expires_at", "timestamp"),
        _STATUS,
    ), description="A batch of prepaid calling cards."),
    Entity("card", "cards", "reseller", _common(
        Field("batch_id", "ref", ref="card_batch", required=True, filterable=True),
        Field("reseller_id", "ref", ref="reseller", filterable=True, writable=False),
        Field("serial", "text", required=True, unique=True, filterable=True),
        Field("pin_hash", "text", readable=False, writable=False, unique=True),
        Field("first_used_at", "timestamp", writable=False),
        _STATUS,
    ), write_only=(Field("pin", "text", required=True, pattern=r"^[0-9]{6,20}$"),),
        description="One prepaid card (the PIN is stored only as a keyed hash)."),
    Entity("cdr", "cdrs", "account", _common(
        Field("customer_id", "ref", ref="customer", filterable=True),
        Field("account_id", "ref", ref="account", filterable=True),
        Field("call_id", "text", required=True, unique=True, filterable=True),
        Field("caller", "text", default=""),
        Field("callee", "text", default="", filterable=True),
        Field("started_at", "timestamp", required=True),
        Field("answered_at", "timestamp"),
        Field("ended_at", "timestamp"),
        Field("billsec", "int", default=0, minimum=0),
        Field("disposition", "text", default="", filterable=True),
        Field("cost", "decimal", default="0"),
        Field("currency", "text", default=""),
        Field("legs", "json", default=[]),
        Field("breakdown", "json", default={}),
    ), immutable=True, description="A call detail record."),
    Entity("ledger_entry", "ledger", "customer", _common(
        Field("customer_id", "ref", ref="customer", required=True, filterable=True),
        Field("account_id", "ref", ref="account", filterable=True),
        Field("kind", "enum", required=True, filterable=True,
              choices=("topup", "charge", "refund", "adjustment", "fee")),
        Field("amount", "decimal", required=True),
        _CURRENCY,
        Field("reference", "text", default="", filterable=True),
    ), immutable=True, description="A movement of money on a balance."),
    Entity("invoice", "invoices", "customer", _common(
        Field("customer_id", "ref", ref="customer", required=True, filterable=True),
        Field("period_start", "date", required=True),
        Field("period_end", "date", required=True),
        Field("total", "decimal", default="0"),
        _CURRENCY,
        Field("status", "enum", choices=("draft", "issued", "paid", "void"), default="draft",
              filterable=True),
        Field("lines", "json", default=[]),
    ), description="A customer's invoice."),
    Entity("audit_record", "audit", "customer", _common(
        Field("customer_id", "ref", ref="customer", filterable=True),
        Field("actor", "text", required=True, filterable=True),
        Field("action", "enum", required=True, choices=("create", "update", "delete"),
              filterable=True),
        Field("entity", "text", required=True, filterable=True),
        Field("entity_id", "int", required=True),
        Field("changes", "json", default={}),
    ), immutable=True, description="Who changed what, and when."),
    Entity("api_key", "api_keys", "customer", _common(
        Field("name", "text", required=True),
        Field("role", "enum", required=True, choices=_ROLES, filterable=True),
        Field("reseller_id", "ref", ref="reseller"),
        Field("customer_id", "ref", ref="customer", filterable=True),
        Field("account_id", "ref", ref="account"),
        Field("prefix", "text", writable=False, filterable=True,
              description="The first characters of the key, to recognise it."),
        Field("key_hash", "text", writable=False, readable=False, unique=True),
        Field("revoked", "bool", default=False),
        Field("last_used_at", "timestamp", writable=False),
    ), description="A bearer key for the API (shown once, stored hashed)."),
)

_BY_NAME = {e.name: e for e in ENTITIES}


def _check_shapes() -> None:
    """Every shape named by a field exists, on a C{json} field."""
    for e in ENTITIES:
        for f in e.fields:
            if f.shape is not None and (f.type != "json" or f.shape not in SHAPES):
                raise AssertionError(f"{e.name}.{f.name}: unknown shape {f.shape!r}")


_check_shapes()
_BY_COLLECTION = {e.collection: e for e in ENTITIES}


def entity(name: str) -> Entity:
    """The entity called C{name} (singular) or stored in C{name} (collection).

    @raise KeyError: when there is none.
    """
    return _BY_NAME.get(name) or _BY_COLLECTION[name]
