"""The C{media_server} plugin: calls to IVR extensions are answered by the
switch's own media server (C{docs/media-server.md}).

At C{b2bua_configure} it builds a L{MediaServerUA} on its own loopback SIP
listener; C{b2bua_route_call} sends a call whose dialled user part is one
of C{extensions} to it, like to any phone (a L{Route} to
C{sip:<flow>@<listen>}); C{b2bua_unconfigure} stops it.

Settings (C{[plugins.media_server]}):

  - C{enabled} (false): nothing happens unless true.
  - C{listen} (C{"127.0.0.1:5070"}): the UA's UDP address (loopback).
  - C{prompts} (C{"prompts"}) and C{language} (C{"en"}): the prompt sets
    root and the default language (a missing set is logged; every prompt
    of it then plays as silence).
  - C{languages} (C{[language]}): every language a call may use (the
    default is added when missing); each must be a language of
    L{media.server.languages}.
  - C{tenant_languages} (C{{}}): a tenant's (From host's) default
    language, by tenant domain; each one of C{languages}.
  - C{port_min}/C{port_max} (40000/40999): the RTP port range.
  - C{media_address} (the listen host): the address in our SDP.
  - C{extensions} (C{{"*43" = "echo", "*60" = "speaking_clock"}}):
    dialled number -> flow name (built in: L{BUILTIN_FLOWS}; the demo
    adds C{"*88" = "conference"}, see L{b2bua.demo.plugin_settings}).
  - C{flows} (optional): a directory whose C{*.toml} files are more flows.
  - C{recordings} (C{"recordings"}): the directory of the recordings
    (C{media/server/recording.py}); no C{;}, C{,} or control characters
    (the paths go into the C{X-Recording} header).
  - C{record_policy} (C{"on_demand"}): C{always} records every call
    whole (stereo); C{on_demand} only when a flow or the API asks.

The plugin leaves itself in C{services.extra["media_server"]} while it
runs, so that the HTTP API (C{oam/api/media_calls.py}) finds its UA.

Two more things ride on a L{CallWatch} of the UA's calls
(C{media/server/call_watch.py}, fed by the RTP sessions' shared pacer):

  - B{metrics}: a L{MediaServerCollector} on the service's registry reads
    the calls' own counters at scrape time (C{b2bua_media_server_...}:
    RTP packets sent, received, late; DTMF digits by source; calls up;
    prompts missing), besides the C{b2bua_media_ivr_runs} counter;
  - B{recordings into the CDR}: the B leg that the switch sends to the
    media server is noted by its Call-ID (C{b2bua_prepare_outgoing_request});
    the files its media server call recorded go into the switch call's
    C{call.data["recordings"]}, and the switch call's end waits for them
    through C{call.data["recordings_settled"]} (L{RecordingHandover}).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorUDP
from twisted.logger import Logger

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Route
from b2bua.core.leg import Leg
from b2bua.core.services import Services
from b2bua.core.transfer_policy import CalleeDestination, caller_party
from b2bua.hookspecs import hookimpl
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.sip.uri import URI
from media.ports import PortPool
from media.server.call_watch import CallWatch
from media.server.cdr_recordings import RecordingHandover
from media.server.ivr import Flow, FlowError, builtin_flow, load_flow_file
from media.server.ivr_actions import builtin_actions
from media.server.ivr_model import SetNode
from media.server.ivr_runtime import LANGUAGE_VARIABLE, FlowResult
from media.server.languages import LANGUAGES
from media.server.pacer import Pacer
from media.server.prompts import MissingPrompt, PromptSet
from media.server.recording import RECORD_POLICIES, register_recording_actions, unsafe_directory
from media.server.refer import DEFAULT_TRANSFER_TIMEOUT
from media.server.server_metrics import MediaServerCollector
from media.server.ua import MediaServerUA

__all__ = ["BUILTIN_FLOWS", "NAME", "MediaServer", "MediaServerSettings", "SettingsError",
           "check_flow_languages", "open_prompt_sets"]

NAME = "media_server"
#: The flows shipped with the switch.
BUILTIN_FLOWS = ("echo", "speaking_clock", "conference")
DEFAULT_EXTENSIONS = {"*43": "echo", "*60": "speaking_clock"}
_KEYS = {"enabled", "listen", "prompts", "language", "languages", "tenant_languages",
         "port_min", "port_max", "extensions",
         "flows", "media_address", "recordings", "record_policy", "conference_max",
         "conference_announce", "transfer_timeout"}

log = Logger()


class SettingsError(ValueError):
    """A bad C{[plugins.media_server]} table (the message names the key)."""


class MediaServerSettings:
    """The C{[plugins.media_server]} table, checked.

    @ivar enabled: whether the media server runs.
    @ivar host: the listen host; C{port} its port.
    """

    def __init__(self, table: Any) -> None:
        """@raise SettingsError: naming the first bad key."""
        if not isinstance(table, dict):
            raise SettingsError(f"plugins.{NAME}: expected a table")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise SettingsError(f"plugins.{NAME}.{unknown[0]}: unknown key")
        self.enabled = self._take(table, "enabled", bool, False)
        self.host, self.port = _address(self._take(table, "listen", str, "127.0.0.1:5070"))
        self.prompts = self._take(table, "prompts", str, "prompts")
        self.language = self._take(table, "language", str, "en")
        self._known_language("language", self.language)
        languages = self._take(table, "languages", list, [self.language])
        self.languages: list[str] = []
        for index, code in enumerate(languages):
            if not isinstance(code, str):
                raise SettingsError(f"plugins.{NAME}.languages[{index}]: expected a "
                                    "language code")
            self._known_language("languages", code)
            if code not in self.languages:
                self.languages.append(code)
        if self.language not in self.languages:
            self.languages.insert(0, self.language)
        tenants = self._take(table, "tenant_languages", dict, {})
        self.tenant_languages: dict[str, str] = {}
        for domain, code in tenants.items():
            if not isinstance(code, str) or code not in self.languages:
                raise SettingsError(f"plugins.{NAME}.tenant_languages.{domain}: expected one "
                                    f"of languages ({', '.join(self.languages)}), not {code!r}")
            self.tenant_languages[domain.lower()] = code
        self.port_min = self._take(table, "port_min", int, 40000)
        self.port_max = self._take(table, "port_max", int, 40999)
        if not 0 < self.port_min < self.port_max <= 65535:
            raise SettingsError(f"plugins.{NAME}.port_max: the range port_min-port_max "
                                "must hold a port pair within 1-65535")
        self.media_address = self._take(table, "media_address", str, self.host)
        extensions = self._take(table, "extensions", dict, dict(DEFAULT_EXTENSIONS))
        for number, flow in extensions.items():
            if not isinstance(flow, str) or not number:
                raise SettingsError(f"plugins.{NAME}.extensions.{number}: expected a flow name")
        self.extensions: dict[str, str] = dict(extensions)
        self.flows = self._take(table, "flows", str, "")
        self.recordings = self._take(table, "recordings", str, "recordings")
        if not self.recordings or unsafe_directory(self.recordings):
            raise SettingsError(f"plugins.{NAME}.recordings: expected a directory without "
                                "';', ',' or control characters")
        self.record_policy = self._take(table, "record_policy", str, "on_demand")
        if self.record_policy not in RECORD_POLICIES:
            raise SettingsError(f"plugins.{NAME}.record_policy: expected one of "
                                f"{', '.join(RECORD_POLICIES)}")
        self.conference_max = self._take(table, "conference_max", int, 0)
        if self.conference_max < 0:
            raise SettingsError(f"plugins.{NAME}.conference_max: expected 0 (no limit) or more")
        self.conference_announce = self._take(table, "conference_announce", bool, False)
        timeout = table.get("transfer_timeout", DEFAULT_TRANSFER_TIMEOUT)
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not 0 < timeout <= 600):
            raise SettingsError(f"plugins.{NAME}.transfer_timeout: expected seconds "
                                "(more than 0, at most 600)")
        self.transfer_timeout = float(timeout)

    @staticmethod
    def _known_language(key: str, code: str) -> None:
        """@raise SettingsError: when C{code} has no language rules."""
        if code not in LANGUAGES:
            raise SettingsError(f"plugins.{NAME}.{key}: no prompt language {code!r} (known: "
                                f"{', '.join(sorted(LANGUAGES))})")

    @staticmethod
    def _take(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
        value = table.get(key, default)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingsError(f"plugins.{NAME}.{key}: expected {kind.__name__}")
        return value


def _address(text: str) -> tuple[str, int]:
    """C{HOST:PORT} with an IP literal host."""
    host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        number = int(port)
    except ValueError:
        raise SettingsError(f"plugins.{NAME}.listen: expected IP:PORT, not {text!r}") from None
    if not 0 < number <= 65535:
        raise SettingsError(f"plugins.{NAME}.listen: bad port {number}")
    return host.strip("[]"), number


def load_flows(directory: str, actions: Any) -> dict[str, Flow]:
    """The built-in flows plus every C{*.toml} flow of C{directory}.

    Prompt names are not checked against a catalogue: a missing prompt
    plays as silence.

    @raise SettingsError: naming the file and its problems.
    """
    flows = {name: builtin_flow(name, actions=actions) for name in BUILTIN_FLOWS}
    if directory:
        folder = Path(directory)
        if not folder.is_dir():
            raise SettingsError(f"plugins.{NAME}.flows: {directory!r} is not a directory")
        for path in sorted(folder.glob("*.toml")):
            try:
                flow = load_flow_file(path, actions=actions)
            except FlowError as error:
                raise SettingsError(f"plugins.{NAME}.flows: {error}") from None
            flows[flow.name] = flow
    return flows


def open_prompt_sets(root: str, codes: list[str]) -> dict[str, PromptSet | None]:
    """One L{PromptSet} per language of C{codes} under C{root} (each keeps
    its own cache of decoded prompts); a language whose directory is
    missing is logged and maps to C{None} (its prompts play as silence)."""
    sets: dict[str, PromptSet | None] = {}
    for code in codes:
        try:
            sets[code] = PromptSet.open(root, code)
        except (MissingPrompt, KeyError) as error:
            log.warn("media server: no prompts for {language} ({error}); its prompts play "
                     "as silence", language=code, error=error)
            sets[code] = None
    return sets


def check_flow_languages(flows: dict[str, Flow], languages: list[str]) -> None:
    """Refuse a flow that sets the reserved variable C{language} to a
    literal (or starts with one in its variables) that is not loaded; a
    value built from variables is checked when it runs (a C{flow_error}).

    @raise SettingsError: naming the flow and the node.
    """
    loaded = ", ".join(languages)
    for flow in flows.values():
        start = flow.variables.get(LANGUAGE_VARIABLE)
        if start is not None and start not in languages:
            raise SettingsError(f"plugins.{NAME}.flows: flow {flow.name!r}, variable "
                                f"'{LANGUAGE_VARIABLE}': language {start!r} is not one of "
                                f"languages ({loaded})")
        for node in flow.nodes.values():
            if not isinstance(node, SetNode) or node.variable != LANGUAGE_VARIABLE:
                continue
            if any(term.kind != "literal" for term in node.value):
                continue
            code = "".join(term.value for term in node.value)
            if code not in languages:
                raise SettingsError(f"plugins.{NAME}.flows: flow {flow.name!r}, node "
                                    f"'{node.name}', field 'value': language {code!r} is not "
                                    f"one of languages ({loaded})")


class MediaServer:
    """The built-in plugin that runs the media server and routes to it.

    @ivar ua: the running L{MediaServerUA} (when enabled and configured).
    @ivar settings: the checked settings.
    """

    def __init__(self) -> None:
        self.ua: MediaServerUA | None = None
        self.settings: MediaServerSettings | None = None
        self._runs: Counter | None = None
        self._extra: dict[str, Any] | None = None
        self._registry: Any = None
        self._collector: MediaServerCollector | None = None
        self._watch: CallWatch | None = None
        self.recordings: RecordingHandover | None = None

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Check the settings; when enabled, build and start the UA."""
        own = MediaServerSettings(settings.get(NAME, {}))
        self.settings = own
        if not own.enabled:
            return
        reactor = services.extra.get("reactor")
        if reactor is None and IReactorUDP.providedBy(services.clock):
            reactor = services.clock
        if reactor is None:
            raise SettingsError(f"plugins.{NAME}.enabled: the switch gives no reactor that "
                                "can listen on UDP")
        actions = register_recording_actions(builtin_actions())
        flows = load_flows(own.flows, actions)
        for number, name in own.extensions.items():
            if name not in flows:
                raise SettingsError(f"plugins.{NAME}.extensions.{number}: no flow named "
                                    f"{name!r} (one of {', '.join(sorted(flows))})")
        check_flow_languages(flows, own.languages)
        languages = open_prompt_sets(own.prompts, own.languages)
        prompts = languages[own.language]
        self._runs = Counter("b2bua_media_ivr_runs", "IVR flow runs of the media server, "
                             "by flow and outcome.", ["flow", "outcome"],
                             registry=services.metrics.registry)
        ua = MediaServerUA(reactor, listen=(own.host, own.port), flows=flows, actions=actions,
                           prompts=prompts, port_pool=PortPool(own.port_min, own.port_max),
                           media_address=own.media_address, on_result=self._count,
                           user_agent=str(services.extra.get("user_agent", "b2bua")),
                           recordings=str(Path(own.recordings).absolute()),
                           record_policy=own.record_policy,
                           conference_max=own.conference_max,
                           conference_announce=own.conference_announce,
                           transfer_timeout=own.transfer_timeout,
                           languages=languages, language=own.language,
                           tenant_languages=own.tenant_languages)
        try:
            ua.start()
        except Exception as error:
            raise SettingsError(f"plugins.{NAME}.listen: cannot listen on "
                                f"{own.host}:{own.port}: {error}") from None
        self.ua = ua
        self._extra = services.extra
        services.extra[NAME] = self
        self._watch = watch = CallWatch(ua, Pacer.of(reactor))
        self.recordings = RecordingHandover(services.clock, watch)
        self._collector = MediaServerCollector(ua, watch)
        self._registry = services.metrics.registry
        self._registry.register(self._collector)
        log.info("media server listening on {host}:{port} (extensions {extensions})",
                 host=own.host, port=own.port, extensions=", ".join(sorted(own.extensions)))

    def _count(self, flow: Flow, result: FlowResult) -> None:
        if self._runs is not None:
            self._runs.labels(flow=flow.name, outcome=result.outcome).inc()

    @hookimpl
    def b2bua_route_call(self, call: Call, request: Request) -> list[Route] | None:
        """A dialled extension of the media server goes to its UA.

        The destination is marked with the I{caller's} own identity: the
        IVR answers for the caller (who dialled it), so when one of its
        flows transfers the caller (REFER), the transfer is placed and
        charged as the caller's call, not as the media server's, which is
        nobody's account (C{docs/transfer.md}, "Who pays").  A caller the
        switch cannot charge (a transferee that was an outside callee)
        leaves it unmarked: its transfers get C{403}."""
        own, ua = self.settings, self.ua
        uri = request.uri
        if own is None or ua is None or not uri.is_sip or not uri.host or not call.tenant:
            return None
        if uri.host.lower() != call.tenant.lower():
            return None
        flow = own.extensions.get(uri.user_unescaped or "")
        if flow is None:
            return None
        host, port = own.host, own.port
        payer = caller_party(call)
        destination = CalleeDestination(
            uri=URI("sip", flow, host, port), next_hop=Target("UDP", host, port),
            label=f"ivr:{flow}", callee_identity=payer.identity if payer else "",
            callee_tenant=payer.tenant if payer else "")
        return [Route((destination,), source=NAME)]

    @hookimpl
    def b2bua_prepare_outgoing_request(self, call: Call, leg: Leg, request: Request) -> None:
        """Note the Call-ID of a B leg sent to the media server (its
        recordings will go into C{call.data["recordings"]})."""
        own, handover = self.settings, self.recordings
        if own is None or handover is None or request.method != "INVITE":
            return
        hop = getattr(getattr(leg, "destination", None), "next_hop", None)
        if hop is not None and hop.host == own.host and hop.port == own.port:
            handover.expect(request.call_id, call)

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Make the CDR wait (bounded) for the recordings of the call's
        media server legs that are still up."""
        if self.recordings is not None:
            self.recordings.call_ended(call)

    @hookimpl
    def b2bua_unconfigure(self) -> Deferred[Any] | None:
        """Stop the UA (its calls get a BYE), the watch and the metrics."""
        ua, self.ua = self.ua, None
        extra, self._extra = self._extra, None
        if extra is not None and extra.get(NAME) is self:
            del extra[NAME]
        stopped = ua.stop() if ua is not None else None
        handover, self.recordings = self.recordings, None
        if handover is not None:
            handover.close()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        registry, self._registry = self._registry, None
        collector, self._collector = self._collector, None
        runs, self._runs = self._runs, None
        if registry is not None:
            for metric in (collector, runs):
                if metric is not None:
                    registry.unregister(metric)
        return stopped
