"""Schemathesis against the running API, as CI runs it.

The OAM site, with the API mounted over a fresh SQLite database, listens on
an ephemeral loopback port; C{schemathesis run} (a subprocess, as an
operator or CI would call it) reads C{/api/v1/openapi.json} and sends
generated requests with an admin key, checking every answer: no server
errors, documented status codes, content types, headers and schemas,
invalid input refused, undocumented methods answered 405 with C{Allow},
deleted rows gone, created rows readable, missing keys refused.

The operations that change or delete API keys are left out: the generator
learns ids from lists and would revoke the very key it runs with (they
are covered by the other tests).

Bounded: a few examples per operation, one fixed seed (reproducible;
C{B2BUA_SCHEMATHESIS_SEED} picks another), the subprocess killed after
L{DEADLINE} seconds.  Skipped, with the reason, when schemathesis is not
installed, except under C{CI=true}, where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from oam.api.openapi import build_document
from tests.trial.oam.api.support import VERSION, open_api

#: The pip requirement (setup.py's test extra).
REQUIREMENT = "schemathesis>=4.32,<5"
#: The longest the schemathesis run may take, in seconds.
DEADLINE = 150.0
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "unsupported_method", "allow_header_conformance",
          "use_after_free", "ensure_resource_availability", "ignored_auth")
EXCLUDED_OPERATIONS = ("update_api_key", "delete_api_key")


def schemathesis_command(url: str, key: str, seed: str) -> list[str]:
    """The command line CI runs against C{url} (the OpenAPI document)."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", url,
               "--header", f"Authorization: Bearer {key}",
               "--checks", ",".join(CHECKS),
               "--phases", "examples,coverage,fuzzing,stateful",
               "--max-examples", "5", "--seed", seed, "--workers", "2",
               "--request-timeout", "10", "--generation-database", "none", "--no-color"]
    for operation in EXCLUDED_OPERATIONS:
        command += ["--exclude-operation-id", operation]
    return command


class _Collector(ProcessProtocol):
    """Collects a child's output; C{ended} fires with its exit code."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Keep standard output."""
        self.output += data

    def errReceived(self, data: bytes) -> None:
        """Keep standard error, with the output."""
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        """Fire C{ended} with the exit code (-1 if killed by a signal)."""
        if reason.check(ProcessDone):
            self.ended.callback(0)
        elif reason.check(ProcessTerminated):
            code = reason.value.exitCode
            self.ended.callback(-1 if code is None else code)
        else:  # pragma: no cover - Twisted reports only these two
            self.ended.callback(-1)


class SchemathesisTests(TestCase):
    """The API survives schemathesis and conforms to its own document."""

    timeout = DEADLINE + 60

    def setUp(self) -> None:
        """Skip (or, under CI, fail) without schemathesis."""
        if importlib.util.find_spec("schemathesis") is None:
            message = f"schemathesis is not installed (pip install '{REQUIREMENT}')"
            if os.environ.get("CI") == "true":
                self.fail(f"{message}: CI must run the schemathesis check")
            raise SkipTest(message)

    async def test_schemathesis_run(self) -> None:
        """C{schemathesis run} exits 0 against the live API, having tested
        every operation (but the two left out) with a key that worked."""
        api = await open_api(self)
        key = await api.key("admin")
        factory = WrappingFactory(api.site.make_site(reactor))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self._close, port, factory)
        url = f"http://127.0.0.1:{port.getHost().port}/api/v1/openapi.json"
        seed = os.environ.get("B2BUA_SCHEMATHESIS_SEED", "1")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1",
               "PYTHONPATH": os.pathsep.join(sys.path), "NO_COLOR": "1"}
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        collector = _Collector()
        command = schemathesis_command(url, key, seed)
        process = reactor.spawnProcess(collector, sys.executable, command, env=env,
                                       path=workdir)
        killer = reactor.callLater(DEADLINE, process.signalProcess, "KILL")
        try:
            code = await collector.ended
        finally:
            if killer.active():
                killer.cancel()
        output = collector.output.decode("utf-8", "replace")
        self.assertNotEqual(code, -1, f"schemathesis was stopped after {DEADLINE} s:\n"
                                      + output[-6000:])
        self.assertEqual(code, 0, f"schemathesis (seed {seed}) failed:\n" + output[-8000:])
        operations = sum(1 for item in build_document(VERSION)["paths"].values()
                         for method in item if method != "parameters")
        selected = re.search(r"Selected: +([0-9]+)/", output)
        tested = re.search(r"Tested: +([0-9]+)", output)
        self.assertTrue(selected and tested, output[-4000:])
        assert selected is not None and tested is not None
        self.assertEqual(tested.group(1), selected.group(1))
        # Its counts wander by one (the document's own path, it seems).
        self.assertGreaterEqual(int(tested.group(1)), operations - len(EXCLUDED_OPERATIONS) - 1)
        self.assertNotIn("Authentication failed", output, output[-4000:])
        self.assertEqual(api.errors(), 0)

    async def _close(self, port: Any, factory: WrappingFactory) -> None:
        """Close every connection schemathesis left, then the port."""
        for protocol in list(factory.protocols):
            protocol.transport.abortConnection()
        for _ in range(100):
            if not factory.protocols:
                break
            await deferLater(reactor, 0.01, lambda: None)
        await port.stopListening()
