"""Tests for the language per call of the media server.

Two tiny prompt sets (C{en}, C{de}) are written to a temporary directory,
each prompt a tone of its own frequency, so that the frames a call plays
tell which set (and which language's number rules) they came from.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import FakeNetwork, FakeTransport, Phone, SwitchHarness
from media.ports import PortPool
from media.server.ivr import Flow, load_flow
from media.server.ivr_actions import builtin_actions
from media.server.ivr_runtime import FlowResult, run_flow
from media.server.ivr_session import LanguageSession, UnknownLanguage
from media.server.plugin import (
    NAME,
    MediaServer,
    MediaServerSettings,
    SettingsError,
    check_flow_languages,
    open_prompt_sets,
)
from media.server.prompts import PromptSet
from media.server.ua import MediaServerUA
from media.server.ua_session import MediaCall
from media.server.wav import write_wav
from tests.trial.media.support import FakeUDPReactor

#: Each prompt of the test sets and the frequency of its tone.
TONES = {("en", "hello"): 440.0, ("en", "20"): 500.0, ("en", "1"): 600.0,
         ("de", "hello"): 1000.0, ("de", "21"): 1200.0}

SWITCH_FLOW = """
[flow]
name = "switch"
start = "first"

[variables]
count = "21"

[nodes.first]
type = "play"
prompt = ["hello", { number = "count" }]
next = "german"

[nodes.german]
type = "set"
variable = "language"
value = "de"
next = "second"

[nodes.second]
type = "play"
prompt = ["hello", { number = "count" }]
next = "bye"

[nodes.bye]
type = "hangup"
"""

CHOSEN_FLOW = """
[flow]
name = "chosen"
start = "pick"

[nodes.pick]
type = "set"
variable = "language"
value = [{ var = "wanted" }]
next = "hello"

[nodes.hello]
type = "play"
prompt = ["hello"]
next = "bye"

[nodes.bye]
type = "hangup"
"""


def tone(frequency: float, ms: int = 20) -> bytes:
    """A sine tone, 8 kHz 16-bit mono (one 20 ms frame by default)."""
    count = 8 * ms
    return b"".join(struct.pack("<h", round(8000 * math.sin(2 * math.pi * frequency * i / 8000)))
                    for i in range(count))


def make_sets(root: Path) -> None:
    """Write the test prompt sets under C{root}."""
    for (code, name), frequency in TONES.items():
        (root / code).mkdir(exist_ok=True)
        write_wav(root / code / f"{name}.wav", tone(frequency))


def first_frame(code: str, name: str) -> bytes:
    """The first 20 ms frame of a test prompt."""
    return tone(TONES[(code, name)])[:320]


class SettingsTests(SynchronousTestCase):
    """C{languages} and C{tenant_languages} in C{[plugins.media_server]}."""

    def test_defaults(self) -> None:
        """Without the new keys one language is loaded, no tenant has its own."""
        settings = MediaServerSettings({"language": "de"})
        self.assertEqual(settings.languages, ["de"])
        self.assertEqual(settings.tenant_languages, {})

    def test_default_language_is_added(self) -> None:
        """The default language is loaded even when C{languages} omits it."""
        settings = MediaServerSettings({"languages": ["de"],
                                        "tenant_languages": {"Berlin.Example": "de"}})
        self.assertEqual(settings.languages, ["en", "de"])
        self.assertEqual(settings.tenant_languages, {"berlin.example": "de"})

    def test_tenant_language_not_loaded(self) -> None:
        """A tenant language outside C{languages} names the tenant's key."""
        error = self.assertRaises(SettingsError, MediaServerSettings,
                                  {"tenant_languages": {"berlin.example": "de"}})
        self.assertIn("plugins.media_server.tenant_languages.berlin.example:", str(error))
        self.assertIn("'de'", str(error))

    def test_tenant_language_not_text(self) -> None:
        """A tenant language that is not a code is refused, naming the key."""
        error = self.assertRaises(SettingsError, MediaServerSettings,
                                  {"tenant_languages": {"a.example": 3}})
        self.assertIn("plugins.media_server.tenant_languages.a.example:", str(error))

    def test_unknown_language_code(self) -> None:
        """A code without language rules in C{languages} is refused."""
        error = self.assertRaises(SettingsError, MediaServerSettings,
                                  {"languages": ["en", "xx"]})
        self.assertIn("plugins.media_server.languages:", str(error))
        self.assertIn("'xx'", str(error))
        error = self.assertRaises(SettingsError, MediaServerSettings, {"languages": "en"})
        self.assertIn("plugins.media_server.languages:", str(error))

    def test_missing_directory_plays_silence(self) -> None:
        """A language without a prompt directory loads as C{None} (silence)."""
        root = Path(self.mktemp())
        root.mkdir()
        make_sets(root)
        for path in (root / "de").iterdir():
            path.unlink()
        (root / "de").rmdir()
        sets = open_prompt_sets(str(root), ["en", "de"])
        self.assertIsInstance(sets["en"], PromptSet)
        self.assertIsNone(sets["de"])


class FlowCheckTests(SynchronousTestCase):
    """Literal languages of the flows are checked at load."""

    def flows(self, text: str) -> dict[str, Flow]:
        flow = load_flow(text, actions=builtin_actions())
        return {flow.name: flow}

    def test_unknown_literal_names_the_node(self) -> None:
        """A C{set} of C{language} to a language not loaded names the node."""
        error = self.assertRaises(SettingsError, check_flow_languages,
                                  self.flows(SWITCH_FLOW), ["en"])
        self.assertIn("flow 'switch'", str(error))
        self.assertIn("node 'german'", str(error))
        self.assertIn("'de'", str(error))

    def test_loaded_literal_and_variable_pass(self) -> None:
        """A loaded literal passes; a value from a variable waits for the run."""
        check_flow_languages(self.flows(SWITCH_FLOW), ["en", "de"])
        check_flow_languages(self.flows(CHOSEN_FLOW), ["en"])


class SwitchTests(SynchronousTestCase):
    """A C{set} node switches the prompt set of a running call."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        make_sets(root)
        self.sets = open_prompt_sets(str(root), ["en", "de"])
        self.clock = Clock()
        self.ends: list[str] = []

    def media(self, language: str = "en") -> MediaCall:
        return MediaCall(self.clock, self.sets["en"], end=self.ends.append,
                         telephone_event=True, languages=self.sets, language=language)

    def play_out(self, media: MediaCall) -> list[bytes]:
        """Pull frames until the call ends (at most 10 s)."""
        frames = []
        for _ in range(500):
            if media.ended is not None:
                break
            frame = media.next_frame()
            if frame is not None:
                frames.append(frame)
            self.clock.advance(0.02)
        return frames

    def run_text(self, text: str, media: MediaCall, **variables: str) -> FlowResult:
        flow = load_flow(text, actions=builtin_actions())
        _, done = run_flow(flow, media, actions=builtin_actions(), clock=self.clock,
                           variables=variables)
        results: list[FlowResult] = []
        done.addCallback(results.append)
        self.frames = self.play_out(media)
        self.assertEqual(len(results), 1)
        return results[0]

    def test_set_node_switches_prompt_set(self) -> None:
        """Prompts after the C{set} come from the German set, and the number
        is said by German rules (21 is one prompt, not 20 + 1)."""
        media = self.media()
        self.assertIsInstance(media, LanguageSession)
        result = self.run_text(SWITCH_FLOW, media, language="en")
        self.assertEqual(result.outcome, "hangup")
        self.assertEqual(result.variables["language"], "de")
        self.assertEqual(media.language, "de")
        played = [next(key for key in TONES if first_frame(*key) == frame)
                  for frame in self.frames]
        self.assertEqual(played, [("en", "hello"), ("en", "20"), ("en", "1"),
                                  ("de", "hello"), ("de", "21")])

    def test_start_language_from_variables(self) -> None:
        """The run's C{language} variable chooses the set from the start."""
        media = self.media()
        self.run_text(CHOSEN_FLOW.replace('{ var = "wanted" }', '"de"'), media, language="de")
        self.assertEqual(self.frames[0], first_frame("de", "hello"))

    def test_unknown_language_is_a_flow_error(self) -> None:
        """A language from a variable that is not loaded ends the run with
        C{error} naming the node, and the call is hung up as C{flow_error}."""
        media = self.media()
        result = self.run_text(CHOSEN_FLOW, media, language="en", wanted="fr")
        self.assertEqual(result.outcome, "error")
        self.assertEqual(result.node, "pick")
        self.assertIn("node 'pick', field 'value'", result.detail)
        self.assertIn("'fr'", result.detail)
        self.assertEqual(media.language, "en")
        self.assertIn("flow_error", self.ends[0])

    def test_set_language_refuses_unknown(self) -> None:
        """L{MediaCall.set_language} keeps the language on a bad code."""
        media = self.media("de")
        self.assertEqual(media.language, "de")
        error = self.assertRaises(UnknownLanguage, media.set_language, "fr")
        self.assertIn("de, en", str(error))
        self.assertEqual(media.language, "de")

    def test_one_cache_per_set(self) -> None:
        """Each prompt set keeps its own decoded prompts."""
        en, de = self.sets["en"], self.sets["de"]
        assert en is not None and de is not None
        self.assertNotEqual(en.audio("hello").pcm, de.audio("hello").pcm)
        self.assertIs(en.audio("hello"), en.audio("hello"))


GREETING = """
[flow]
name = "greeting"
start = "hello"

[nodes.hello]
type = "play"
prompt = ["hello"]
next = "bye"

[nodes.bye]
type = "hangup"
"""


class TenantTests(SynchronousTestCase):
    """The user agent starts each call in its tenant's language."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        make_sets(root)
        sets = open_prompt_sets(str(root), ["en", "de"])
        self.reactor = FakeUDPReactor()
        self.network = FakeNetwork(self.reactor)
        self.results: list[FlowResult] = []
        ua_address = ("127.0.0.1", 5070)
        self.ua = MediaServerUA(
            self.reactor, listen=ua_address,
            flows={"greeting": load_flow(GREETING, actions=builtin_actions())},
            actions=builtin_actions(), prompts=sets["en"], languages=sets, language="en",
            tenant_languages={"Berlin.Example": "de"}, port_pool=PortPool(30000, 30009),
            transport=FakeTransport(self.network, *ua_address),
            on_result=lambda flow, result: self.results.append(result))
        self.ua.start()

    def call_from(self, domain: str, host: str) -> FlowResult:
        phone = Phone(self.network, "1000", host, proxy=("127.0.0.1", 5070), domain=domain)
        phone.call("sip:greeting@127.0.0.1:5070")
        for _ in range(200):
            if self.results:
                break
            self.reactor.advance(0.02)
        self.assertEqual(len(self.results), 1)
        return self.results.pop()

    def test_tenant_default_chosen(self) -> None:
        """A caller of a tenant with its own language starts in it."""
        result = self.call_from("berlin.example", "127.0.0.2")
        self.assertEqual(result.variables["tenant"], "berlin.example")
        self.assertEqual(result.variables["language"], "de")

    def test_other_tenant_gets_default(self) -> None:
        """Any other tenant starts in the default language."""
        result = self.call_from("paris.example", "127.0.0.3")
        self.assertEqual(result.variables["language"], "en")
        self.assertEqual(self.ua.language_for("BERLIN.example"), "de")

    def test_tenant_language_must_be_loaded(self) -> None:
        """The user agent refuses a tenant language it has no set for."""
        error = self.assertRaises(
            ValueError, MediaServerUA, self.reactor, flows={}, actions=builtin_actions(),
            prompts=None, port_pool=PortPool(30000, 30009), languages={"en": None},
            tenant_languages={"x.example": "de"})
        self.assertIn("'de'", str(error))


class PluginTests(SynchronousTestCase):
    """The plugin loads every language and checks the flows against them."""

    def harness(self, **own: object) -> tuple[SwitchHarness, MediaServer]:
        reactor = FakeUDPReactor()
        settings = {NAME: {"enabled": True, "port_min": 42000, "port_max": 42009, **own}}
        harness = SwitchHarness(settings=settings, clock=reactor, extra={"reactor": reactor})
        return harness, harness.pm.get_plugin(NAME)

    def test_languages_reach_the_ua(self) -> None:
        """One prompt set per language; the tenant table reaches the UA."""
        root = Path(self.mktemp())
        root.mkdir()
        make_sets(root)
        harness, plugin = self.harness(prompts=str(root), languages=["en", "de"],
                                       tenant_languages={"berlin.example": "de"})
        ua = plugin.ua
        assert ua is not None
        self.assertEqual(sorted(ua.languages), ["de", "en"])
        self.assertIsNot(ua.languages["en"], ua.languages["de"])
        self.assertIs(ua.prompts, ua.languages["en"])
        self.assertEqual(ua.language_for("berlin.example"), "de")
        harness.stop()

    def test_unknown_literal_refused_at_start(self) -> None:
        """A flow setting a language that is not loaded stops start-up,
        naming the flow and the node."""
        folder = Path(self.mktemp())
        folder.mkdir()
        (folder / "switch.toml").write_text(SWITCH_FLOW)
        with self.assertRaises(SettingsError) as caught:
            self.harness(flows=str(folder), languages=["en"])
        self.assertIn("plugins.media_server.flows: flow 'switch', node 'german'",
                      str(caught.exception))
