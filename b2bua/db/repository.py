"""Repositories: create, read, update, delete and list any entity of the model.

One generic L{Repository} serves every entity: its SQL is built from the
model's declarations (identifiers from the model only, values always as
parameters), and the scope rules of L{b2bua.db.scoping} are part of every
C{WHERE}.  Each write runs in one transaction that also writes an
C{audit_record} (who, what, which field names: never secret values) and
queues a change notification; after the commit the change is published to
the L{ChangeFeed}.

What each entity stores instead of its write-only fields is computed here
(L{b2bua.db.secrets}): account HA1 values with the customer's SIP domain as
realm, a connection's HA1, a card's keyed PIN hash, an API key's hash (the
key itself is returned once, as C{"key"}, by C{create}).

The snapshot and authentication helpers L{load_directory_rows} and
L{find_api_key} live here too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from zope.interface import implementer

from b2bua.db import secrets
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Connection, Database
from b2bua.db.dialect import IntegrityProblem
from b2bua.db.interfaces import Conflict, IRepository, NotFound, Page, Scope, ValidationFailed
from b2bua.db.model import ENTITIES, Entity, Field, entity
from b2bua.db.rules import row_errors
from b2bua.db.scoping import (
    OWNER_FIELDS,
    Forbidden,
    check_api_key,
    derivations,
    force_owner,
    may_write,
    owner_defaults,
    owner_of_ref,
    visibility,
)
from b2bua.db.validation import INT_MAX, coerce_filters, validate

__all__ = ["MAX_LIMIT", "Immutable", "Repository", "find_api_key", "load_directory_rows",
           "repositories"]

#: The largest page a list may ask for.
MAX_LIMIT = 500
#: Fields fixed once a row exists: moving them would break what depends on them.
FIXED: dict[str, frozenset[str]] = {
    "account": frozenset({"customer_id"}),
    "api_key": frozenset({"role", "reseller_id", "customer_id", "account_id"}),
}
#: The fields the rules of each entity read (L{b2bua.db.rules}): an update
#: that changes none of them is not checked again.
_RULE_FIELDS: dict[str, frozenset[str]] = {
    "trunk": frozenset({"auth_mode", "allowed_sources", "account_id"}),
}
#: Stored secret columns reported under the name of what they hide.
_SECRET_NAMES = {"pin_hash": "pin", "key_hash": "key", "auth_ha1": "auth_password",
                 "ha1_md5": "password", "ha1_sha256": "password"}


class Immutable(ValidationFailed):
    """An update or delete of an immutable entity (CDRs, ledger, audit)."""


def decode(connection: Connection, e: Entity, row: dict[str, Any]) -> dict[str, Any]:
    """Convert a row read from the database to Python values."""
    out = {}
    for f in e.fields:
        if f.name in row:
            out[f.name] = connection.dialect.from_db(f.type, row[f.name])
    return out


def readable(e: Entity, row: dict[str, Any]) -> dict[str, Any]:
    """C{row} without the fields the API never returns."""
    return {f.name: row[f.name] for f in e.fields if f.readable and f.name in row}


def _row_id(value: Any) -> int:
    """A row id from an int or digits; anything else is not found."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT_MAX:
        raise NotFound(f"no row {value!r}")
    return value


@implementer(IRepository)
class Repository:
    """The rows of one entity, seen through a L{Scope}.

    @ivar entity: the L{Entity}.
    """

    def __init__(self, entity_: Entity | str, database: Database, changes: ChangeFeed,
                 secret: bytes | str) -> None:
        """
        @param entity_: the entity (or its name or collection).
        @param changes: where changes are announced.
        @param secret: the key of the card PIN hashes (required, and to be
            kept, for the repository of cards: changing it invalidates
            every stored PIN).
        @raise ValueError: when the cards repository gets no secret.
        """
        self.entity = entity_ if isinstance(entity_, Entity) else entity(entity_)
        self.database = database
        self.changes = changes
        self.secret = secret
        e = self.entity
        self._columns = {f.name: f for f in e.fields}
        self._readable = [f.name for f in e.fields if f.readable]
        self._write_only = {f.name for f in e.write_only}
        self._refs = [f for f in e.fields if f.type == "ref"]
        self._derive = derivations(e)
        if any(f.name == "pin" for f in e.write_only) and not secret:
            raise ValueError(f"{e.collection} need a PIN hashing secret (configure one)")

    def __repr__(self) -> str:
        return f"<Repository {self.entity.collection}>"

    # -- the interface -----------------------------------------------------------------

    def create(self, values: dict[str, Any], scope: Scope) -> Deferred[dict[str, Any]]:
        """Validate and insert a row; fire with the stored row."""
        return maybeDeferred(self._create, values, scope)

    def get(self, row_id: int, scope: Scope) -> Deferred[dict[str, Any]]:
        """Fire with the row, or fail with L{NotFound}."""
        return maybeDeferred(self._get, row_id, scope)

    def update(self, row_id: int, values: dict[str, Any],
               scope: Scope) -> Deferred[dict[str, Any]]:
        """Validate and apply a partial update; fire with the stored row."""
        return maybeDeferred(self._update, row_id, values, scope)

    def delete(self, row_id: int, scope: Scope) -> Deferred[None]:
        """Delete the row (L{Conflict} if other rows refer to it)."""
        return maybeDeferred(self._delete, row_id, scope)

    def list(self, scope: Scope, filters: dict[str, Any] | None = None, limit: int = 50,
             offset: int = 0, order: str = "id") -> Deferred[Page]:
        """Fire with a L{Page} of rows matching C{filters} (field = value)."""
        return maybeDeferred(self._list, scope, filters, limit, offset, order)

    # -- reading -----------------------------------------------------------------------

    def _select(self, columns: list[str], where: str) -> str:
        """C{SELECT columns FROM table WHERE where}."""
        return f"SELECT {', '.join(columns)} FROM {self.entity.collection} WHERE {where}"

    def _get(self, row_id: Any, scope: Scope) -> Deferred[dict[str, Any]]:
        ident = _row_id(row_id)
        condition, params = visibility(self.entity, scope)
        sql = self._select(self._readable, f"id = ? AND ({condition})")

        def txn(connection: Connection) -> dict[str, Any]:
            rows = connection.execute(sql, [ident, *params])
            if not rows:
                raise NotFound(f"{self.entity.name} {ident} not found")
            return decode(connection, self.entity, rows[0])

        return self.database.run(txn)

    def _list(self, scope: Scope, filters: dict[str, Any] | None, limit: Any, offset: Any,
              order: Any) -> Deferred[Page]:
        wanted = coerce_filters(self.entity, filters)
        errors = {}
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            errors["limit"] = f"must be an integer from 1 to {MAX_LIMIT}"
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= INT_MAX:
            errors["offset"] = "must be an integer of at least 0"
        orderable = {"id", "created_at", "updated_at"} | {
            f.name for f in self.entity.fields if f.filterable and f.readable}
        name = order[1:] if isinstance(order, str) and order.startswith("-") else order
        if name not in orderable:
            errors["order"] = f"must be one of {', '.join(sorted(orderable))} (- for descending)"
        if errors:
            raise ValidationFailed(errors)
        direction = "DESC" if order.startswith("-") else "ASC"
        condition, params = visibility(self.entity, scope)

        def txn(connection: Connection) -> Page:
            clauses = [f"({condition})"]
            args: list[Any] = list(params)
            for key, value in wanted.items():
                if value is None:
                    clauses.append(f"{key} IS NULL")
                else:
                    clauses.append(f"{key} = ?")
                    args.append(connection.dialect.to_db(self._columns[key].type, value))
            where = " AND ".join(clauses)
            total = connection.execute(
                f"SELECT count(*) AS total FROM {self.entity.collection} WHERE {where}", args)
            sorting = f"{name} {direction}" + (f", id {direction}" if name != "id" else "")
            rows = connection.execute(
                self._select(self._readable, where) + f" ORDER BY {sorting} LIMIT ? OFFSET ?",
                [*args, limit, offset])
            return Page([decode(connection, self.entity, r) for r in rows],
                        int(total[0]["total"]), limit, offset)

        return self.database.run(txn)

    # -- writing -----------------------------------------------------------------------

    def _now(self) -> datetime:
        """The reactor's time, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.database.reactor.seconds(), UTC)

    def _writable_by(self, scope: Scope) -> None:
        if not may_write(self.entity, scope):
            raise Forbidden(f"a {scope.role} key cannot change {self.entity.collection}")

    def _create(self, values: dict[str, Any], scope: Scope) -> Deferred[dict[str, Any]]:
        self._writable_by(scope)
        given = sorted(values) if isinstance(values, dict) else []
        if isinstance(values, dict):
            values = {**owner_defaults(self.entity, scope), **values}
        data = validate(self.entity, values, partial=False)
        force_owner(self.entity, data, scope, creating=True)
        now = self._now()

        def txn(connection: Connection) -> tuple[dict[str, Any], bool]:
            row = {k: v for k, v in data.items() if k in self._columns}
            shown: dict[str, Any] = {}
            refs = self._relate(connection, scope, row, set(row), creating=True)
            self._check_row(connection, row, set(row), None)
            if self.entity.name == "api_key":
                check_api_key(row)
                shown["key"], row["prefix"], row["key_hash"] = secrets.new_api_key()
            row.update(self._secrets(connection, row, data, None, set(row), refs))
            row["created_at"] = row["updated_at"] = now
            names = list(row)
            stored = self._write(connection, "create", (
                f"INSERT INTO {self.entity.collection} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)}) RETURNING {', '.join(self._readable)}"
            ), [self._param(connection, n, row[n]) for n in names])
            result = decode(connection, self.entity, stored[0])
            self._audit(connection, scope, "create", result, given, now)
            self.changes.notify(connection, self.entity.name, result["id"], "create")
            return {**result, **shown}, True

        return self.database.run(txn).addCallback(self._published, "create")

    def _update(self, row_id: Any, values: dict[str, Any],
                scope: Scope) -> Deferred[dict[str, Any]]:
        if self.entity.immutable:
            raise Immutable({"id": f"{self.entity.collection} cannot be changed"})
        self._writable_by(scope)
        ident = _row_id(row_id)
        data = validate(self.entity, values, partial=True)
        fixed = FIXED.get(self.entity.name, frozenset()) & set(data)
        if fixed:
            raise ValidationFailed({name: "cannot be changed" for name in sorted(fixed)})
        force_owner(self.entity, data, scope, creating=False)
        condition, params = visibility(self.entity, scope)
        now = self._now()

        def txn(connection: Connection) -> tuple[dict[str, Any], bool]:
            found = connection.execute(
                self._select(list(self._columns), f"id = ? AND ({condition})")
                + connection.dialect.for_update, [ident, *params])
            if not found:
                raise NotFound(f"{self.entity.name} {ident} not found")
            current = decode(connection, self.entity, found[0])
            row = dict(current)
            changed = {k for k, v in data.items() if k in self._columns and current[k] != v}
            changed |= self._write_only & set(data)
            if not changed:
                return readable(self.entity, current), False
            row.update((k, data[k]) for k in data if k in self._columns)
            refs = self._relate(connection, scope, row, changed, creating=False)
            self._check_row(connection, row, changed, current)
            stored_secrets = self._secrets(connection, row, data, current, changed, refs)
            row.update(stored_secrets)
            columns = sorted((changed - self._write_only) | set(stored_secrets))
            columns = [c for c in columns if c in self._columns] + ["updated_at"]
            row["updated_at"] = now
            assignments = ", ".join(f"{c} = ?" for c in columns)
            stored = self._write(connection, "update", (
                f"UPDATE {self.entity.collection} SET {assignments} "
                f"WHERE id = ? AND ({condition}) RETURNING {', '.join(self._readable)}"
            ), [*(self._param(connection, c, row[c]) for c in columns), ident, *params])
            if not stored:
                raise NotFound(f"{self.entity.name} {ident} not found")
            result = decode(connection, self.entity, stored[0])
            self._audit(connection, scope, "update", row, sorted(changed), now)
            self.changes.notify(connection, self.entity.name, ident, "update")
            return result, True

        return self.database.run(txn).addCallback(self._published, "update")

    def _delete(self, row_id: Any, scope: Scope) -> Deferred[None]:
        if self.entity.immutable:
            raise Immutable({"id": f"{self.entity.collection} cannot be deleted"})
        self._writable_by(scope)
        ident = _row_id(row_id)
        condition, params = visibility(self.entity, scope)
        owner = [c for c in ("customer_id",) if c in self._columns]
        now = self._now()

        def txn(connection: Connection) -> tuple[dict[str, Any], bool]:
            gone = self._write(connection, "delete", (
                f"DELETE FROM {self.entity.collection} WHERE id = ? AND ({condition}) "
                f"RETURNING {', '.join(['id', *owner])}"), [ident, *params])
            if not gone:
                raise NotFound(f"{self.entity.name} {ident} not found")
            self._audit(connection, scope, "delete", gone[0], [], now)
            self.changes.notify(connection, self.entity.name, ident, "delete")
            return gone[0], True

        d = self.database.run(txn).addCallback(self._published, "delete")
        return d.addCallback(lambda _: None)

    def _published(self, outcome: tuple[dict[str, Any], bool], action: str) -> dict[str, Any]:
        """After the commit: tell the feed (an update that changed nothing
        tells nothing)."""
        row, announce = outcome
        if announce:
            self.changes.publish(self.entity.name, row["id"], action)
        return row

    # -- the rules of a write ----------------------------------------------------------

    def _param(self, connection: Connection, name: str, value: Any) -> Any:
        """A column value as a driver parameter."""
        return connection.dialect.to_db(self._columns[name].type, value)

    def _relate(self, connection: Connection, scope: Scope, row: dict[str, Any],
                changed: set[str], *, creating: bool) -> dict[str, dict[str, Any]]:
        """Check the refs of C{row}: visible to C{scope} when set now (the
        scope's own owner ids need no check), in the same tenant as the row,
        and fill the owner columns taken from them.

        @return: ref field -> the referenced row's owner columns (and a
            customer's C{sip_domain}).
        """
        refs: dict[str, dict[str, Any]] = {}
        for f in self._refs:
            value = row.get(f.name)
            owner = owner_of_ref(self.entity, f.name)
            derived = [c for c, source in self._derive.items() if source == f.name]
            if value is None or not (creating or f.name in changed
                                     or (owner is not None and owner in changed)):
                continue
            own = getattr(scope, f.name, None) if f.name in OWNER_FIELDS else None
            checked = (creating or f.name in changed) and value != own
            target = refs[f.name] = self._ref_row(connection, f, value, scope, checked=checked)
            for column in derived:
                taken = not self._columns[column].writable or row.get(column) is None
                if taken and row.get(column) != target.get(column):
                    row[column] = target.get(column)
                    changed.add(column)
            if owner is not None and target.get(owner) != row.get(owner):
                raise ValidationFailed({f.name: f"belongs to another {owner[:-3]}"})
        return refs

    def _ref_row(self, connection: Connection, f: Field, value: int, scope: Scope, *,
                 checked: bool) -> dict[str, Any]:
        """The referenced row (owner columns only), or an error."""
        target = entity(f.ref or "")
        names = {g.name for g in target.fields}
        columns = ["id", *(c for c in ("reseller_id", "customer_id", "sip_domain")
                           if c in names)]
        condition, params = "1 = 1", []
        if checked and scope.role != "admin" and target.scope != "global":
            condition, params = visibility(target, scope)
        found = connection.execute(
            f"SELECT {', '.join(columns)} FROM {target.collection} "
            f"WHERE id = ? AND ({condition})" + connection.dialect.for_share,
            [value, *params])
        if not found:
            if scope.role == "admin":
                raise Conflict(f"{f.name}: no {target.name} {value}", field=f.name)
            raise NotFound(f"{f.name}: {target.name} {value} not found")
        return found[0]

    def _check_row(self, connection: Connection, row: dict[str, Any], changed: set[str],
                   current: dict[str, Any] | None) -> None:
        """The rules across fields (L{b2bua.db.rules}) of the row as it will
        be stored, when a field they read changes, and the rules that read
        other rows: a trunk's account is of kind C{trunk}, and an account a
        trunk uses stays of that kind.

        @raise ValidationFailed: naming the fields that break a rule.
        """
        name = self.entity.name
        errors = row_errors(name, row) if current is None or changed & _RULE_FIELDS.get(
            name, frozenset()) else {}
        if name == "trunk" and row.get("account_id") is not None and "account_id" in changed:
            found = connection.execute("SELECT kind FROM accounts WHERE id = ?",
                                       [row["account_id"]])
            if found and found[0]["kind"] != "trunk":
                errors["account_id"] = (f"must be an account of kind trunk (account "
                                        f"{row['account_id']} is of kind {found[0]['kind']})")
        if name == "account" and current is not None and "kind" in changed \
                and current["kind"] == "trunk":
            used = connection.execute("SELECT id FROM trunks WHERE account_id = ? LIMIT 1",
                                      [current["id"]])
            if used:
                errors["kind"] = f"cannot change while trunk {used[0]['id']} uses the account"
        if errors:
            raise ValidationFailed(dict(sorted(errors.items())))

    def _secrets(self, connection: Connection, row: dict[str, Any], data: dict[str, Any],
                 current: dict[str, Any] | None, changed: set[str],
                 refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The stored columns derived from write-only input, for this entity."""
        name = self.entity.name
        if name == "account" and ("password" in data or "sip_username" in changed):
            if "password" not in data:
                raise ValidationFailed({"password": "required when sip_username changes"})
            domain = refs.get("customer_id", {}).get("sip_domain")
            if domain is None:
                domain = connection.execute("SELECT sip_domain FROM customers WHERE id = ?",
                                            [row["customer_id"]])[0]["sip_domain"]
            md5, sha256 = secrets.account_ha1(row["sip_username"], domain, data["password"])
            return {"ha1_md5": md5, "ha1_sha256": sha256}
        if name == "connection":
            return self._connection_secret(row, data, current, changed)
        if name == "card" and "pin" in data:
            return {"pin_hash": secrets.pin_hash(self.secret, data["pin"])}
        if name == "customer" and current is not None and "sip_domain" in changed \
                and connection.execute("SELECT id FROM accounts WHERE customer_id = ? LIMIT 1",
                                       [current["id"]]):
            raise ValidationFailed({"sip_domain": "cannot change while the customer has "
                                    "accounts (their HA1 values depend on it)"})
        return {}

    @staticmethod
    def _connection_secret(row: dict[str, Any], data: dict[str, Any],
                           current: dict[str, Any] | None, changed: set[str]) -> dict[str, Any]:
        """A vendor connection's HA1, from C{auth_password} (empty: none)."""
        password = data.get("auth_password")
        if password:
            missing = {n: "required with auth_password" for n in ("auth_username", "auth_realm")
                       if not row.get(n)}
            if missing:
                raise ValidationFailed(missing)
            return {"auth_ha1": secrets.connection_ha1(row["auth_username"], row["auth_realm"],
                                                       password)}
        if "auth_password" in data:
            return {"auth_ha1": None}
        if current is not None and current.get("auth_ha1") \
                and {"auth_username", "auth_realm"} & changed:
            raise ValidationFailed({"auth_password": "required when auth_username or "
                                    "auth_realm changes"})
        return {}

    def _write(self, connection: Connection, action: str, sql: str,
               params: list[Any]) -> list[dict[str, Any]]:
        """Run a write, turning integrity errors into L{Conflict}."""
        try:
            return connection.execute(sql, params)
        except Exception as error:
            problem = connection.dialect.integrity_error(error)
            if problem is None:
                raise
            raise self._conflict(problem, action) from None

    def _conflict(self, problem: IntegrityProblem, action: str) -> Exception:
        """The L{Conflict} (or L{ValidationFailed}) an integrity problem means."""
        table = self.entity.collection
        if problem.kind == "unique":
            field = None
            if problem.constraint and problem.constraint.startswith(f"{table}_"):
                field = problem.constraint[len(table) + 1:].removesuffix("_key")
            for f in self.entity.fields:
                if set(problem.columns) == {f.name, *f.unique_with}:
                    field = f.name
            field = _SECRET_NAMES.get(field or "", field)
            return Conflict(f"{field or 'a value'} is already in use", field=field)
        if problem.kind == "foreign_key":
            if action == "delete":
                return Conflict(f"{self.entity.name} is still referred to"
                                + (f" by {problem.table}" if problem.table else ""))
            field = None
            if problem.constraint and problem.constraint.startswith(f"{table}_"):
                field = problem.constraint[len(table) + 1:].removesuffix("_fkey")
            return Conflict(f"{field or 'a reference'} refers to no row", field=field)
        return ValidationFailed({problem.constraint or "body": "breaks a rule of the schema"})

    def _audit(self, connection: Connection, scope: Scope, action: str, row: dict[str, Any],
               fields: list[str], now: datetime) -> None:
        """Write who did what to which row (field names only) in this transaction."""
        customer_id = row["id"] if self.entity.name == "customer" else row.get("customer_id")
        audit = entity("audit_record")
        values = {"customer_id": customer_id, "actor": scope.actor, "action": action,
                  "entity": self.entity.name, "entity_id": row["id"],
                  "changes": {"fields": fields}, "created_at": now, "updated_at": now}
        to_db = connection.dialect.to_db
        connection.execute(
            f"INSERT INTO {audit.collection} ({', '.join(values)}) "
            f"VALUES ({', '.join('?' for _ in values)})",
            [to_db(audit.field(k).type, v) for k, v in values.items()])


def repositories(database: Database, changes: ChangeFeed,
                 secret: bytes | str) -> dict[str, Repository]:
    """One L{Repository} per entity, by collection name."""
    return {e.collection: Repository(e, database, changes, secret) for e in ENTITIES}


def find_api_key(database: Database, plaintext: str) -> Deferred[dict[str, Any] | None]:
    """Fire with the (readable) row of a valid, unrevoked API key, or C{None}.

    The key is looked up by its hash and compared in constant time; its
    C{last_used_at} is refreshed at most once a minute.
    """
    e = entity("api_key")
    now = datetime.fromtimestamp(database.reactor.seconds(), UTC)
    if not isinstance(plaintext, str) or not plaintext.startswith(secrets.API_KEY_PREFIX) \
            or len(plaintext) > 128:
        return succeed(None)
    key_hash = secrets.api_key_hash(plaintext)
    columns = [f.name for f in e.fields if f.readable] + ["key_hash"]

    def txn(connection: Connection) -> dict[str, Any] | None:
        to_db = connection.dialect.to_db
        rows = connection.execute(
            f"SELECT {', '.join(columns)} FROM {e.collection} WHERE key_hash = ? "
            "AND revoked = ?", [key_hash, to_db("bool", False)])
        if not rows or not secrets.api_key_matches(plaintext, rows[0]["key_hash"]):
            return None
        row = decode(connection, e, rows[0])
        last = row.get("last_used_at")
        if last is None or now - last >= timedelta(minutes=1):
            stamp, before = to_db("timestamp", now), to_db("timestamp", now - timedelta(minutes=1))
            connection.execute(
                f"UPDATE {e.collection} SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at <= ?)", [stamp, row["id"], before])
            row["last_used_at"] = now
        return readable(e, row)

    return database.run(txn)


#: What the live snapshot loads: collection -> (columns or None for every
#: column, condition, its boolean parameters).
DIRECTORY: dict[str, tuple[tuple[str, ...] | None, str, tuple[bool, ...]]] = {
    "customers": (("id", "sip_domain", "name", "currency", "billing_timezone", "status",
                   "dial_plan", "routing_plan_id"),
                  "status = 'active'", ()),
    "accounts": (("id", "customer_id", "number", "sip_username", "ha1_md5", "ha1_sha256",
                  "caller_id_name", "features", "status"),
                 "status = 'active' AND customer_id IN "
                 "(SELECT id FROM customers WHERE status = 'active')", ()),
    "dids": (None, "status = 'active'", ()),
    "vendors": (None, "status = 'active'", ()),
    "connections": (None, "enabled = ? AND vendor_id IN "
                          "(SELECT id FROM vendors WHERE status = 'active')", (True,)),
    "routing_plans": (None, "1 = 1", ()),
    "tariffs": (("id", "name", "currency", "document"), "1 = 1", ()),
    # What prices a customer's calls: its active subscriptions (their dates
    # are checked by the reader, since a snapshot outlives a day) and the
    # tariff of each product.
    "subscriptions": (("id", "customer_id", "product_id", "starts_on", "ends_on"),
                      "status = 'active' AND customer_id IN "
                      "(SELECT id FROM customers WHERE status = 'active')", ()),
    "products": (("id", "tariff_id", "currency"), "1 = 1", ()),
    # SIP trunking: the active trunks of active customers, and the ported
    # numbers (only what a lookup returns: the table may be large).
    "trunks": (None, "status = 'active' AND customer_id IN "
                     "(SELECT id FROM customers WHERE status = 'active')", ()),
    "lnp_entries": (("id", "number", "routing_prefix", "carrier"), "1 = 1", ()),
}


def load_directory_rows(database: Database) -> Deferred[dict[str, list[dict[str, Any]]]]:
    """Fire with what the live snapshot needs, read in one consistent view.

    Active customers (with their dial plan and routing plan) and the active
    accounts of active customers (with their HA1 values), active DIDs,
    active vendors, the enabled connections of active vendors (with their
    HA1), every routing plan and every tariff (id, name, currency,
    document), the active subscriptions of active customers (id,
    customer_id, product_id, starts_on, ends_on: whether they are in effect
    on a given day is the reader's business), every product (id, tariff_id,
    currency), the active trunks of active customers and every ported
    number (id, number, routing_prefix, carrier); each list ordered by id.
    """

    def txn(connection: Connection) -> dict[str, list[dict[str, Any]]]:
        if connection.dialect.name == "postgresql":
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        out = {}
        for collection, (columns, condition, flags) in DIRECTORY.items():
            e = entity(collection)
            names = columns or tuple(f.name for f in e.fields)
            params = [connection.dialect.to_db("bool", flag) for flag in flags]
            rows = connection.execute(f"SELECT {', '.join(names)} FROM {collection} "
                                      f"WHERE {condition} ORDER BY id", params)
            out[collection] = [decode(connection, e, r) for r in rows]
        return out

    return database.run(txn)

