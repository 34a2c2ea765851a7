"""The switch under C{twistd}, driven by real sipp phones.

Each test starts C{twistd -n b2bua --config FILE} in a child process on
free loopback ports, registers a sipp callee as extension 1001 of the demo
tenant, runs the callee's scenario, then the caller's (extension 1000), and
checks that both sipps saw the whole dialogue.  Everything is bounded
(C{-m 1}, short timeouts) and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.trial import unittest

from b2bua.demo import seed_database
from tests.trial.integration.sipp import (
    SWITCH_CONFIG,
    SippResult,
    TwistdProcess,
    free_port,
    require_program,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 20.0

CONFIG = SWITCH_CONFIG


class ServiceWithSippTests(unittest.TestCase):
    """Calls between two sipp phones through the switch."""

    timeout = 90

    def setUp(self) -> Deferred[None]:
        """Start the switch under twistd on free ports and wait for it."""
        self.sipp = require_program("sipp", "sip-tester")
        self.port = free_port("both")
        folder = tempfile.mkdtemp(prefix="b2bua-it-")
        database = Path(folder) / "var" / "b2bua.db"
        config = Path(folder) / "b2bua.toml"
        config.write_text(CONFIG.format(port=self.port, oam=free_port("tcp"),
                                        database=database))
        self.twistd = TwistdProcess()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile=-", "b2bua", "--config", str(config)]

        def spawn(_: object) -> Deferred[None]:
            self.process = reactor.spawnProcess(self.twistd, sys.executable, argv, env=env,
                                                path=folder)
            self.addCleanup(self._stop)
            return wait_for_port(reactor, self.port, "tcp", timeout=20.0)

        d = seed_database(f"sqlite:///{database}", reactor, admin_key=False)
        d.addCallback(spawn)
        d.addErrback(self._explain)
        return d

    def _explain(self, failure: Failure) -> Failure:
        """Add the switch's output to a start-up failure."""
        self.fail(f"switch did not start: {failure.getErrorMessage()}\n"
                  f"{self.twistd.output.decode(errors='replace')[-3000:]}")
        return failure

    def _stop(self) -> Deferred[None]:
        """Stop the switch (TERM, then KILL after a while)."""
        if not self.twistd.ended.called:
            try:
                self.process.signalProcess("TERM")
            except Exception:  # already gone
                pass
            killer = reactor.callLater(15, self._kill)
            self.twistd.ended.addBoth(lambda _: killer.active() and killer.cancel())
        log = self.twistd.output.decode(errors="replace")
        self.assertNotIn("Traceback", log, log[-3000:])
        return self.twistd.ended

    def _kill(self) -> None:
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass

    @property
    def target(self) -> str:
        """The switch's SIP address."""
        return f"127.0.0.1:{self.port}"

    async def register_callee(self, uas_port: int, transport: str = "u1",
                              user: str = "1001") -> None:
        """Register a contact at C{uas_port} for extension C{user}."""
        result = await run_sipp(reactor, scenario("register_contact.xml"), self.target,
                                transport, ["-s", user, "-au", user, "-ap", "1234"],
                                timeout=TIMEOUT, local_port=uas_port, sipp=self.sipp)
        self.assertTrue(result.ok, result.describe())

    async def call(self, uas: str | None, uac: str, transport: str = "u1",
                   callee: str = "1001", uac_args: tuple[str, ...] = (),
                   register: bool = True) -> tuple[SippResult | None, SippResult]:
        """Register (optionally) and run a callee and a caller scenario."""
        uas_port = free_port("udp" if transport == "u1" else "tcp")
        if register:
            await self.register_callee(uas_port, transport, callee)
        answering = None
        if uas is not None:
            answering = run_sipp_uas(reactor, scenario(uas), uas_port, transport,
                                     ["-mp", str(free_port("udp"))], timeout=TIMEOUT,
                                     sipp=self.sipp)
            await wait_for_port(reactor, uas_port, "udp" if transport == "u1" else "tcp",
                                ended=answering)
        caller = await run_sipp(
            reactor, scenario(uac), self.target, transport,
            ["-s", callee, "-au", "1000", "-ap", "1234", "-set", "caller", "1000",
             "-mp", str(free_port("udp")), *uac_args],
            timeout=TIMEOUT, sipp=self.sipp)
        callee_result = await answering if answering is not None else None
        return callee_result, caller

    def assertBothOK(self, results: tuple[SippResult | None, SippResult]) -> None:
        """Caller and callee both completed their scenario."""
        callee, caller = results
        self.assertTrue(caller.ok, caller.describe())
        if callee is not None:
            self.assertTrue(callee.ok, callee.describe())

    def test_basic_call(self) -> Deferred[None]:
        """A calls B over UDP: ringing, answer, ACK, caller hangs up."""
        d = ensureDeferred(self.call("uas_answer.xml", "uac_call.xml", uac_args=("-d", "500")))
        return d.addCallback(self.assertBothOK)

    def test_basic_call_tcp(self) -> Deferred[None]:
        """The same call over TCP."""
        d = ensureDeferred(self.call("uas_answer.xml", "uac_call.xml", transport="t1",
                                     uac_args=("-d", "500")))
        return d.addCallback(self.assertBothOK)

    def test_cancel_before_answer(self) -> Deferred[None]:
        """The caller cancels while B rings: 487 to the caller, CANCEL to B."""
        d = ensureDeferred(self.call("uas_ring_then_cancel.xml", "uac_cancel.xml"))
        return d.addCallback(self.assertBothOK)

    def test_busy(self) -> Deferred[None]:
        """B answers 486; the caller gets 486."""
        d = ensureDeferred(self.call("uas_busy.xml", "uac_busy.xml"))
        return d.addCallback(self.assertBothOK)

    def test_callee_hangs_up(self) -> Deferred[None]:
        """B hangs up; the caller gets the BYE."""
        d = ensureDeferred(self.call("uas_hangs_up.xml", "uac_callee_hangs_up.xml"))
        return d.addCallback(self.assertBothOK)

    def test_hold_and_resume(self) -> Deferred[None]:
        """re-INVITE with sendonly (hold) and sendrecv (resume) cross the switch."""
        d = ensureDeferred(self.call("uas_answer.xml", "uac_hold_resume.xml"))
        return d.addCallback(self.assertBothOK)

    def test_unregistered_extension(self) -> Deferred[None]:
        """A call to an extension with no registration gets 480."""
        d = ensureDeferred(self.call(None, "uac_unavailable.xml", callee="1007",
                                     register=False))
        return d.addCallback(self.assertBothOK)

    def test_register_with_auth(self) -> Deferred[None]:
        """REGISTER is challenged and accepted with the right password."""
        d = run_sipp(reactor, scenario("register_auth.xml"), self.target, "u1",
                     ["-s", "1002", "-au", "1002", "-ap", "1234"], timeout=TIMEOUT,
                     calls=2, sipp=self.sipp)
        return d.addCallback(lambda r: self.assertTrue(r.ok, r.describe()))

    def test_wrong_password(self) -> Deferred[None]:
        """REGISTER with a wrong password is refused again (scenario succeeds
        only when refused)."""
        d = run_sipp(reactor, scenario("register_rejected.xml"), self.target, "u1",
                     ["-s", "1003", "-au", "1003", "-ap", "wrong"], timeout=TIMEOUT,
                     sipp=self.sipp)
        return d.addCallback(lambda r: self.assertTrue(r.ok, r.describe()))
