"""A small blocking client for the switch's REST API (C{/api/v1/...}).

The admin tool is a short-lived process of its own, so plain
C{urllib.request} is enough: one request at a time, each bounded by a
timeout.  Every failure becomes an L{AdminError} whose C{message} is the one
line the tool prints, never a traceback:

  - the switch cannot be reached: L{Unreachable} (C{"cannot reach URL:
    connection refused"});
  - the switch answered with an error: L{APIError}, described from the
    API's error body (C{401 unauthorized}, C{403 forbidden}, C{404 not
    found}, C{409 conflict} with its C{field}, C{422 validation failed}
    with its C{fields} or, for a rate file, its bad C{rows}, C{5xx}).

The API key travels only in the C{Authorization: Bearer} header and never
appears in a message.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["APIClient", "APIError", "AdminError", "Unreachable", "describe_api_error"]

#: What the tool says it is.
USER_AGENT = "b2bua-admin/0.1"
#: The most of an error body read back (a runaway answer is cut there).
MAX_ERROR_BODY = 1 << 20
#: Host names that are always reached directly, whatever the proxy settings.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class AdminError(Exception):
    """A failure the tool reports as one line on stderr.

    @ivar message: that line (without the C{b2bua-admin:} prefix).
    @ivar details: further lines worth printing after it (the bad rows of a
        rate file), possibly empty.
    @ivar exit_code: the process exit status to end with.
    """

    exit_code = 1

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unreachable(AdminError):
    """The switch could not be reached (or stopped answering)."""

    exit_code = 3


class APIError(AdminError):
    """The switch answered with an HTTP error status.

    @ivar status: the HTTP status code.
    @ivar body: the decoded JSON error body, or C{None} when there was none.
    @ivar what: what was asked for (C{"customers"}, C{"customers/12"}).
    """

    def __init__(self, status: int, body: Any, what: str, reason: str = "") -> None:
        self.status = status
        self.body = body
        self.what = what
        message, details = describe_api_error(status, body, what, reason)
        super().__init__(message, details)


def _fields_text(fields: Any) -> str:
    """C{"name: message, other: message"} from a C{fields} mapping."""
    if isinstance(fields, Mapping):
        return ", ".join(f"{name}: {message}" for name, message in fields.items())
    return str(fields)


def _row_line(row: Any) -> str:
    """C{"row 12, column price: message"} from one entry of C{rows}."""
    if not isinstance(row, Mapping):
        return str(row)
    where = [f"row {row['row']}"] if row.get("row") is not None else []
    if row.get("column"):
        where.append(f"column {row['column']}")
    place = ", ".join(where)
    message = row.get("message", "")
    return f"{place}: {message}" if place else str(message)


def describe_api_error(status: int, body: Any, what: str,
                       reason: str = "") -> tuple[str, tuple[str, ...]]:
    """The one-line message (and any detail lines) for an API error answer.

    @param status: the HTTP status.
    @param body: the decoded JSON body (a dict with C{error}, C{field},
        C{fields}, C{rows}), or anything else when the body was not that.
    @param what: the collection or item asked for, to name in the message.
    @param reason: the HTTP reason phrase, used when the body says nothing.
    """
    body = body if isinstance(body, Mapping) else {}
    error = str(body.get("error") or reason or f"HTTP {status}")
    if status == 401:
        return "unauthorized (check --key)", ()
    if status == 403:
        return f"{what}: forbidden (this key may not do that)", ()
    if status == 404:
        return f"{what}: not found", ()
    if status == 409:
        field, message = body.get("field"), body.get("message")
        if message:
            return f"{what}: {error}: {message}", ()
        return (f"{what}: {error}: {field} already in use" if field else f"{what}: {error}"), ()
    if status == 422:
        rows = body.get("rows")
        if isinstance(rows, list) and rows:
            count = len(rows)
            plural = "row" if count == 1 else "rows"
            return (f"{what}: {error}: {count} bad {plural}",
                    tuple(_row_line(row) for row in rows))
        if body.get("fields"):
            return f"{what}: {error}: {_fields_text(body['fields'])}", ()
        return f"{what}: {error}", ()
    if status >= 500:
        return f"{what}: server error {status}: {error}", ()
    return f"{what}: HTTP {status}: {error}", ()


def _reason(error: BaseException, timeout: float) -> str:
    """A short lower-case phrase for why a connection failed."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"unknown host ({error.strerror})"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error})"
    if isinstance(error, http.client.RemoteDisconnected | ConnectionResetError):
        return "the connection was closed before an answer"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


class APIClient:
    """Requests to one switch's API with one key.

    @ivar base_url: the switch's OAM address (C{http://127.0.0.1:8080}).
    """

    def __init__(self, base_url: str, key: str | None, *, timeout: float = 10.0,
                 opener: urllib.request.OpenerDirector | None = None) -> None:
        """
        @param base_url: C{http://HOST:PORT} (a path prefix is kept).
        @param key: the bearer key, or C{None} to send none.
        @param timeout: seconds allowed for connecting and for each read.
        @param opener: the urllib opener; by default one that honours the
            proxy environment except for loopback hosts.
        @raise AdminError: when C{base_url} is not an http(s) URL.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminError(f"bad --url {base_url!r}: use http://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._timeout = timeout
        if opener is None:
            handlers = [urllib.request.ProxyHandler({})] if parts.hostname in LOOPBACK else []
            opener = urllib.request.build_opener(*handlers)
        self._opener = opener

    # -- the generic exchange ------------------------------------------------------

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                payload: Any = None, data: bytes | None = None,
                content_type: str | None = None, what: str | None = None) -> Any:
        """Send one request and return its decoded JSON answer.

        @param path: below C{/api/v1/} (C{"customers/12"}).
        @param query: query parameters; C{None} values are left out.
        @param payload: a JSON body (ignored when C{data} is given).
        @param data: a raw body, sent with C{content_type}.
        @param what: what to name in error messages (default: C{path}).
        @return: the decoded JSON body, or C{None} for an empty answer (204).
        @raise APIError: for an error status.
        @raise Unreachable: when the switch cannot be reached.
        @raise AdminError: when the answer is not JSON.
        """
        url = f"{self.base_url}/api/v1/{path}"
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        if data is None and payload is not None:
            data = json.dumps(payload).encode("utf-8")
            content_type = "application/json"
        if data is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        what = what or path
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read(MAX_ERROR_BODY) if error.fp is not None else b""
            error.close()
            raise APIError(error.code, _decode(raw), what, str(error.reason or "")) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise Unreachable(f"cannot reach {self.base_url}: {_reason(error, self._timeout)}") \
                from None
        if not body.strip():
            return None
        decoded = _decode(body)
        if decoded is _NOT_JSON:
            raise AdminError(f"{what}: the answer from {self.base_url} is not JSON "
                             "(is --url the switch's OAM address?)")
        return decoded

    # -- collections -----------------------------------------------------------------

    def list_page(self, collection: str, *, limit: int | None = None, offset: int | None = None,
             **filters: Any) -> dict[str, Any]:
        """One page of C{collection}: C{{"items", "total", "limit", "offset"}}."""
        return self.request("GET", collection, what=collection,
                            query={"limit": limit, "offset": offset, **filters})

    def list_all(self, collection: str, *, page: int = 500, cap: int = 10_000,
                 **filters: Any) -> list[dict[str, Any]]:
        """Every item of C{collection} matching C{filters}, page after page.

        @param cap: stop after this many items (a guard, not a contract).
        """
        items: list[dict[str, Any]] = []
        while len(items) < cap:
            answer = self.list_page(collection, limit=page, offset=len(items), **filters)
            batch = answer.get("items", [])
            items.extend(batch)
            if not batch or len(items) >= int(answer.get("total", 0)):
                break
        return items[:cap]

    def get(self, collection: str, item_id: Any) -> dict[str, Any]:
        """The row C{item_id} of C{collection}."""
        path = f"{collection}/{quote(str(item_id), safe='')}"
        return self.request("GET", path, what=path)

    def create(self, collection: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Create a row; return it as the API stored it."""
        return self.request("POST", collection, payload=dict(values), what=collection)

    def update(self, collection: str, item_id: Any, values: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields of a row; return the changed row."""
        path = f"{collection}/{quote(str(item_id), safe='')}"
        return self.request("PATCH", path, payload=dict(values), what=path)

    def delete(self, collection: str, item_id: Any) -> None:
        """Delete a row."""
        path = f"{collection}/{quote(str(item_id), safe='')}"
        self.request("DELETE", path, what=path)

    def import_tariff(self, csv_data: bytes, *, name: str, currency: str,
                      **options: str | None) -> dict[str, Any]:
        """Upload a rate file as a new tariff (C{POST /tariffs/import}).

        @param options: further import parameters (C{timezone}, C{delimiter});
            C{None} values are left out.
        @raise APIError: with the bad rows as C{details} when the file is refused.
        """
        return self.request("POST", "tariffs/import",
                            query={"name": name, "currency": currency, **options},
                            data=csv_data, content_type="text/csv", what="tariffs/import")


_NOT_JSON = object()


def _decode(raw: bytes) -> Any:
    """The JSON value of C{raw}, C{None} when empty, or C{_NOT_JSON}."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON
