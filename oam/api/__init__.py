"""The provisioning REST API (C{/api/v1/...}), built from the data model.

    GET    /api/v1/openapi.json         the OpenAPI 3.1 document (no key needed)
    GET    /api/v1/<collection>         list (limit, offset, order, filters)
    POST   /api/v1/<collection>         create
    GET    /api/v1/<collection>/<id>    read
    PATCH  /api/v1/<collection>/<id>    partial update (not for immutable entities)
    DELETE /api/v1/<collection>/<id>    delete (not for immutable entities)
    POST   /api/v1/tariffs/import       a rate deck (text/csv) or tariff document (JSON)
    POST   /api/v1/rating/quote         the cost of one call, explained (any key)
    POST   /api/v1/routing/explain      the ranked routes of one call, explained (any key)
    POST   /api/v1/routing/blend        a sales tariff blended from vendor tariffs
    GET    /api/v1/trunking/status      registrations, probes, limits (with C{plugin_state=})
    GET    /api/v1/balances/customers/<id>        a tenant's balance (with C{balances=})
    POST   /api/v1/balances/customers/<id>/topup  top it up, re-arm its live calls
    POST   /api/v1/media/calls/<call-id>/recording  start/stop/pause/resume recording
                                        a media-server call (with C{plugin_state=})

Modules: L{auth} (bearer keys -> scopes), L{collection} (the generic
resources), L{rates} (uploads), L{quote} (quotes), L{routing} and
L{blending} (routes explained, tariffs blended), L{balances} (balances and
top-ups), L{openapi} (the document),
L{endpoint}/L{problems} (dispatch, input reading, error answers).

Wiring, in C{b2bua/service.py}, once the database is open and migrated and
the repositories exist (start-up phase 2; until then C{/api/v1/...} is 404)::

    from oam.api import make_api, mount

    api = make_api(self.repositories, self.database, self.oam.report_error,
                   version=__version__)
    mount(self.oam, api)     # one OAMSite.mount_api(name, child) per collection

L{OAMSite.mount_api} serves a resource at C{/api/v1/<name>}, so the API is
mounted child by child (L{mount}, once); C{mount_api("v1", api)} would serve it at
C{/api/v1/v1/...}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from b2bua.db.model import ENTITIES
from oam.api.auth import KeyAuthenticator
from oam.api.balances import BalanceAccess, BalancesRoot
from oam.api.blending import BlendResource
from oam.api.collection import BodyCheck, CollectionResource
from oam.api.endpoint import ApiContext
from oam.api.media_calls import MediaRoot
from oam.api.openapi import OpenAPIResource, build_document
from oam.api.quote import QuoteResource
from oam.api.rates import ImportResource, tariff_body_check
from oam.api.routing import ExplainResource
from oam.api.trunking import TrunkingStatusResource
from oam.resource import ErrorReporter, NotFound, request_path

__all__ = ["ApiRoot", "make_api", "mount", "reporter"]

log = Logger()

#: The repositories authentication reads (keys and the status of their owners).
NEEDED = ("api_keys", "resellers", "customers", "accounts")
#: The repositories the routing endpoints read (L{oam.api.routing}).
ROUTING_REPOSITORIES = ("tariffs", "vendors", "connections", "routing_plans")
#: Extra checks of create and update bodies, by entity name.
BODY_CHECKS: dict[str, BodyCheck] = {"tariff": tariff_body_check}


def reporter(target: Any) -> ErrorReporter:
    """An L{ErrorReporter} from one (C{OAMSite.report_error}) or from the
    switch's L{b2bua.metrics.Metrics} (counted under route C{api}, logged)."""
    if not hasattr(target, "oam_error") and callable(target):
        return target  # type: ignore[no-any-return]
    if not hasattr(target, "oam_error"):
        raise TypeError("an error reporter or a Metrics is needed")

    def report(route: str, failure: Failure, request: IRequest) -> None:
        target.oam_error(route)
        log.failure("oam api: {method} {path} failed", failure,
                    method=request.method.decode("ascii", "replace"), path=request_path(request))

    return report


class ApiRoot(Resource):
    """The API's collections and its document, as children.

    Served on its own (not through L{mount}), it answers 404 JSON for
    itself and for any unknown child, as the OAM site does.
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """An unknown collection: 404."""
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        """The root itself: 404."""
        return NotFound().render(request)


def make_api(repositories: dict[str, Any], database: Any, report: Any, *,
             version: str = "0", base: str = "/api/v1",
             balances: BalanceAccess | None = None,
             plugin_state: Callable[[], Mapping[str, Any]] | None = None) -> ApiRoot:
    """Build the API resources over the provisioning repositories.

    @param repositories: collection name -> repository, one per entity of
        the model (L{b2bua.db.repository.repositories}).
    @param database: the L{b2bua.db.database.Database} API keys are looked
        up in.
    @param report: C{OAMSite.report_error} (or the switch's C{Metrics}):
        told about every unexpected exception answered with 500.
    @param version: the software version the OpenAPI document states.
    @param base: the path the API is served under (C{Location} headers, the
        document's server URL).
    @param balances: the balance store and live sessions: serves
        C{/balances/customers/...} (L{oam.api.balances}); not served
        without (it also needs the C{ledger} repository).
    @param plugin_state: gives the services' C{extra} mapping (the plugins'
        live state): serves C{/trunking/status} (L{oam.api.trunking}) and
        C{/media/calls/<call-id>/recording} (L{oam.api.media_calls}).
    @raise KeyError: when a repository keys need is missing (C{resellers},
        C{customers}, C{accounts}, C{api_keys}).  Other collections without
        a repository (C{cards} when no PIN secret is configured) are left
        out of the API and of its document.
    """
    missing = [c for c in NEEDED if c not in repositories]
    if missing:
        raise KeyError(f"the API needs the repositories of {', '.join(missing)}")
    served = tuple(e for e in ENTITIES if e.collection in repositories)
    context = ApiContext(repositories, KeyAuthenticator(database, repositories),
                         reporter(report), base)
    root = ApiRoot()
    for e in served:
        repository = repositories[e.collection]
        resource = CollectionResource(context, e, repository, BODY_CHECKS.get(e.name))
        if e.name == "tariff":
            resource.putChild(b"import", ImportResource(context, repository))
        root.putChild(e.collection.encode("ascii"), resource)
    if "tariffs" in repositories:
        rating = ApiRoot()
        rating.putChild(b"quote", QuoteResource(context, repositories["tariffs"]))
        root.putChild(b"rating", rating)
    if all(c in repositories for c in ROUTING_REPOSITORIES):
        routing = ApiRoot()
        routing.putChild(b"explain", ExplainResource(context, repositories))
        routing.putChild(b"blend", BlendResource(context, repositories["tariffs"]))
        root.putChild(b"routing", routing)
    if balances is not None:
        if "ledger" not in repositories:
            raise KeyError("the balance routes need the repository of ledger")
        root.putChild(b"balances", BalancesRoot(context, balances))
    if plugin_state is not None:
        trunking = ApiRoot()
        trunking.putChild(b"status", TrunkingStatusResource(context, plugin_state))
        root.putChild(b"trunking", trunking)
        root.putChild(b"media", MediaRoot(context, plugin_state))
    document = build_document(version, served, base=base, balances=balances is not None,
                              trunking=plugin_state is not None,
                              media=plugin_state is not None)
    root.putChild(b"openapi.json", OpenAPIResource(context, document))
    return root


def mount(site: Any, api: ApiRoot) -> None:
    """Serve every child of C{api} under C{/api/v1/} of an L{oam.site.OAMSite}."""
    for name, child in sorted(api.children.items()):
        site.mount_api(name.decode("ascii"), child)
