"""Drive real U{SIPp<https://sipp.sourceforge.net/>} processes from trial tests.

Integration tests are the one place that may use the real global reactor:
a trial C{TestCase} whose test methods return the L{Deferred} of
L{run_sipp}.  Everything here takes the reactor as an argument all the same,
so the harness can be exercised with a fake one.

Typical use::

    from twisted.internet import reactor

    from tests.trial.integration.sipp import free_port, require_program, run_sipp, scenario

    class OptionsTests(unittest.TestCase):
        def setUp(self):
            self.sipp = require_program("sipp", "sip-tester")

        async def test_options(self):
            result = await run_sipp(reactor, scenario("options.xml"),
                                    target=f"127.0.0.1:{port}", calls=3, sipp=self.sipp)
            self.assertTrue(result.ok, result.describe())

L{run_sipp} bounds every run three ways: C{-m} (number of calls), sipp's
own C{-timeout} (with C{-timeout_error}, so running out of time is a
failure), and a hard C{SIGKILL} a few seconds after that, so a test never
hangs on a wedged sipp.

A sipp callee (UAS) runs the same way with L{run_sipp_uas}, which gives no
target; L{wait_for_port} tells when it listens, so a caller can start::

    uas = run_sipp_uas(reactor, scenario("uas_answer.xml"), local_port=port, sipp=sipp)
    await wait_for_port(reactor, port, "udp", ended=uas)
    caller = await run_sipp(reactor, scenario("uac_call.xml"), f"127.0.0.1:{port}", sipp=sipp)
    callee = await uas
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest

__all__ = [
    "MEDIA_SERVER_CONFIG",
    "SCENARIOS",
    "SWITCH_CONFIG",
    "PortWaitTimeout",
    "SippResult",
    "SippTimeoutError",
    "TwistdProcess",
    "cdr_disconnects",
    "free_port",
    "port_in_use",
    "register_contact",
    "require_program",
    "run_sipp",
    "run_sipp_uas",
    "scenario",
    "wait_for_port",
]

#: The configuration of a switch under twistd that sipp phones of the
#: demo tenant call (L{SwitchProcessMixin.start_demo_switch}); formatted
#: with C{port} (SIP, UDP and TCP), C{oam} and C{database} (a file).
SWITCH_CONFIG = """
[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
# sipp answers only MD5 challenges and digests its own URI
digest_algorithms = ["MD5", "SHA-256"]
digest_check_uri = false

[core]
drain_timeout = 2

[oam]
listen = "tcp:{oam}:interface=127.0.0.1"

[storage]
# seeded with the demo extensions (b2bua.demo.seed_database) before start
database = "sqlite:///{database}"
"""

#: The media server's section, to append to L{SWITCH_CONFIG}; formatted
#: with C{ms_port}, C{folder}, C{rtp}, C{rtp_max} and C{flows}.  More keys
#: of the section (C{extensions} ...) may follow it.
MEDIA_SERVER_CONFIG = """
[plugins.media_server]
enabled = true
listen = "127.0.0.1:{ms_port}"
prompts = "{folder}/no-prompts"
port_min = {rtp}
port_max = {rtp_max}
flows = "{flows}"
"""

#: The folder holding the SIPp XML scenarios shipped with the tests.
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: sipp's C{-t} values that the harness supports: one UDP socket, one TCP
#: connection.
TRANSPORTS = frozenset({"u1", "t1"})

#: Seconds between the end of sipp's own global timeout and the C{SIGKILL}.
KILL_GRACE = 5.0


class TimeReactor(Protocol):
    """The part of the reactor that L{wait_for_port} uses: a clock."""

    def callLater(self, delay: float, callable: object, *args: object) -> IDelayedCall:
        """Call C{callable(*args)} after C{delay} seconds."""


class ProcessReactor(Protocol):
    """The part of the reactor that L{run_sipp} uses.

    Twisted's reactors provide it through C{IReactorProcess} and
    C{IReactorTime}; tests may hand in a fake.
    """

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,  # noqa: N803 (Twisted's name)
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> IProcessTransport:
        """Start C{executable} and connect it to C{processProtocol}."""

    def callLater(self, delay: float, callable: object, *args: object) -> IDelayedCall:
        """Call C{callable(*args)} after C{delay} seconds."""


def scenario(name: str) -> str:
    """Return the absolute path of the shipped scenario C{name}.

    @param name: a file name under L{SCENARIOS}, such as C{"options.xml"}.
    @raise FileNotFoundError: if there is no such scenario.
    """
    path = SCENARIOS / name
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {path}")
    return str(path)


def require_program(name: str, package: str) -> str:
    """Return the path of the program C{name}, or skip the test without it.

    @param name: the program to look up on C{PATH}, such as C{"sipp"}.
    @param package: the Debian package that ships it, such as
        C{"sip-tester"}; the skip reason names it.
    @return: the absolute path of the program.
    @raise SkipTest: when the program is missing on a developer's machine.
    @raise FailTest: when it is missing and the environment variable C{CI}
        is C{"true"}: CI must never skip an integration test silently.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed; get it with: apt-get install {package}"
    if os.environ.get("CI") == "true":
        raise FailTest(f"{reason} (CI=true: a missing program is a failure, not a skip)")
    raise SkipTest(reason)


def free_port(kind: str = "udp") -> int:
    """Return a loopback port that is free right now for C{kind}.

    The port is found by binding port 0 on 127.0.0.1 and closing the
    socket, so another process could still take it before the caller
    binds it; on a test machine that race is rare enough.

    @param kind: C{"udp"}, C{"tcp"} or C{"both"} (free for both at once).
    @raise ValueError: for any other C{kind}.
    """
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if kind == "both":
        # a port free for UDP and TCP at once (a SIP listener takes both)
        for _ in range(100):
            port = free_port("udp")
            if not port_in_use(port, "tcp"):
                return port
        raise RuntimeError("no loopback port free for both UDP and TCP")
    if kind not in kinds:
        raise ValueError(f"kind must be 'udp', 'tcp' or 'both', not {kind!r}")
    with socket.socket(socket.AF_INET, kinds[kind]) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True)
class SippResult:
    """What one sipp run left behind.

    @ivar exit_code: sipp's exit status: 0 when every call succeeded, 1 when
        at least one failed, 97 when stopped by an internal command, 99 when
        no call was processed, 255 (-1) or 254 (-2) on a fatal error such as
        a bad scenario or a port that cannot be bound.
    @ivar successful: successful calls (the statistics file's cumulative
        C{SuccessfulCall(C)}), or C{None} when sipp wrote no statistics.
    @ivar failed: failed calls (C{FailedCall(C)}), or C{None}.
    @ivar stats: the last row of sipp's C{-trace_stat} CSV file, by column.
    @ivar stdout: what sipp printed on standard output (its screens).
    @ivar stderr: what sipp printed on standard error.
    @ivar errors: the text of sipp's C{-trace_err} file (unexpected
        messages, timeouts), empty when there was none.
    @ivar screen: the final statistics screen (C{-trace_screen}).
    @ivar command: the command line that ran.
    """

    exit_code: int
    successful: int | None
    failed: int | None
    stats: dict[str, str] = field(default_factory=dict)
    stdout: bytes = b""
    stderr: bytes = b""
    errors: str = ""
    screen: str = ""
    command: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether sipp exited 0 and counted at least one call, none failed."""
        return self.exit_code == 0 and bool(self.successful) and not self.failed

    def describe(self) -> str:
        """Return a multi-line account of the run, for a test failure message."""
        lines = [
            f"sipp exited {self.exit_code}: {self.successful} successful, {self.failed} failed",
            "command: " + " ".join(self.command),
        ]
        if self.errors.strip():
            lines += ["--- sipp error log ---", self.errors.strip()[-4000:]]
        if self.screen.strip():
            lines += ["--- sipp final screen ---", self.screen.strip()[-4000:]]
        if self.stderr.strip():
            lines += ["--- stderr ---", self.stderr.decode("utf-8", "replace").strip()[-2000:]]
        return "\n".join(lines)


class SippTimeoutError(Exception):
    """sipp outlived its global timeout and the grace period, and was killed.

    @ivar result: what the killed run left behind (its exit code is the
        negated signal number).
    """

    def __init__(self, result: SippResult) -> None:
        """Keep C{result} for the test's failure message."""
        super().__init__(f"sipp killed after its timeout\n{result.describe()}")
        self.result = result


class _SippProcess(ProcessProtocol):
    """Collect a sipp process's output and fire when it has ended."""

    def __init__(self) -> None:
        """Start with empty output and an unfired L{ended}."""
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Keep standard output."""
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        """Keep standard error."""
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        """Fire L{ended} with the exit code (or the negated signal number)."""
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            code = -1
        self.ended.callback(code)


def _read(path: Path) -> str:
    """Return the text of C{path}, or C{""} when it does not exist."""
    try:
        return path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _parse_stats(text: str) -> dict[str, str]:
    """Return the last data row of a sipp C{-trace_stat} file, by column name.

    The file is C{;}-separated with a header row; sipp appends one row every
    C{-fd} period and a last one when it exits.
    """
    rows = [row for row in csv.reader(text.splitlines(), delimiter=";") if row]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def _count(stats: Mapping[str, str], column: str) -> int | None:
    """Return the integer in C{column} of C{stats}, or C{None} if absent."""
    value = stats.get(column, "").strip()
    return int(value) if value.isdigit() else None


def run_sipp(
    reactor: ProcessReactor,
    scenario_path: str,
    target: str,
    transport: str = "u1",
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    calls: int = 1,
    local_port: int | None = None,
    recv_timeout: float | None = 5.0,
    sipp: str = "sipp",
    local_ip: str = "127.0.0.1",
) -> Deferred[SippResult]:
    """Run one bounded sipp UAC against C{target} and report how it went.

    sipp runs in a fresh temporary folder (removed afterwards) with::

        sipp -sf SCENARIO TARGET -t u1|t1 -i LOCAL_IP -p PORT -m CALLS
             -timeout Nms -timeout_error -recv_timeout M -nostdin
             -trace_stat -stf stats.csv -trace_err -error_file errors.log
             -trace_screen -screen_file screen.log [EXTRA_ARGS...]

    @param reactor: provides C{spawnProcess} and C{callLater}.
    @param scenario_path: the scenario XML (see L{scenario}).
    @param target: C{"127.0.0.1:PORT"} of the service under test; loopback
        only.
    @param transport: C{"u1"} (UDP) or C{"t1"} (TCP).
    @param extra_args: more sipp arguments, such as
        C{["-s", "1000", "-au", "1000", "-ap", "1234"]}.
    @param timeout: seconds for sipp's global C{-timeout}; sipp is killed
        with C{SIGKILL} L{KILL_GRACE} seconds after it.
    @param calls: how many calls to place (C{-m}).
    @param local_port: sipp's local port (C{-p}); a free one by default.
    @param recv_timeout: seconds a call waits for an expected message before
        it fails (C{-recv_timeout}), or C{None} to wait until the global
        timeout.
    @param sipp: the program to run; pass what L{require_program} returned.
    @param local_ip: the loopback address sipp binds and sends from (C{-i}),
        such as C{"127.0.0.21"} when the switch tells peers apart by their
        source address.
    @return: a L{Deferred} firing with a L{SippResult} once sipp has exited
        by itself, whatever its exit code, or failing with L{SippTimeoutError}
        when it had to be killed.
    """
    return _run(reactor, scenario_path, [target], transport, extra_args, timeout,
                calls, local_port, recv_timeout, sipp, local_ip)  # fmt: skip


def run_sipp_uas(
    reactor: ProcessReactor,
    scenario_path: str,
    local_port: int,
    transport: str = "u1",
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    calls: int = 1,
    recv_timeout: float | None = 5.0,
    sipp: str = "sipp",
    local_ip: str = "127.0.0.1",
) -> Deferred[SippResult]:
    """Run one bounded sipp UAS (a callee) listening on C{local_port}.

    The command line is L{run_sipp}'s without a target: sipp waits for
    C{calls} calls to come to C{local_ip:local_port}, plays the scenario
    for each, and exits.  Use L{wait_for_port} before starting the caller,
    since sipp needs a moment to bind.

    @param reactor: provides C{spawnProcess} and C{callLater}.
    @param scenario_path: the UAS scenario XML (see L{scenario}).
    @param local_port: the loopback port to listen on (C{-p}); required, so
        the caller knows where to call.
    @param transport: C{"u1"} (UDP) or C{"t1"} (TCP).
    @param extra_args: more sipp arguments, such as C{["-d", "500"]}.
    @param timeout: seconds for sipp's global C{-timeout}, counted from the
        start, so leave room for the caller's start; sipp is killed with
        C{SIGKILL} L{KILL_GRACE} seconds after it.
    @param calls: how many calls to take before exiting (C{-m}).
    @param recv_timeout: seconds a call waits for an expected message
        (C{-recv_timeout}), or C{None} to wait until the global timeout.
    @param sipp: the program to run; pass what L{require_program} returned.
    @param local_ip: the loopback address to listen on (C{-i}); give the
        same to L{wait_for_port}.
    @return: like L{run_sipp}'s.
    """
    return _run(reactor, scenario_path, [], transport, extra_args, timeout,
                calls, local_port, recv_timeout, sipp, local_ip)  # fmt: skip


def _run(
    reactor: ProcessReactor,
    scenario_path: str,
    targets: list[str],
    transport: str,
    extra_args: Sequence[str],
    timeout: float,
    calls: int,
    local_port: int | None,
    recv_timeout: float | None,
    sipp: str,
    local_ip: str = "127.0.0.1",
) -> Deferred[SippResult]:
    """Start one bounded sipp with C{targets} (one for a UAC, none for a UAS)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {sorted(TRANSPORTS)}, not {transport!r}")
    if calls < 1:
        raise ValueError("calls must be at least 1")
    if local_port is None:
        local_port = free_port("udp" if transport == "u1" else "tcp")

    workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
    stats_file = workdir / "stats.csv"
    error_file = workdir / "errors.log"
    screen_file = workdir / "screen.log"
    args = [
        sipp, "-sf", scenario_path, *targets,
        "-t", transport,
        "-i", local_ip,
        "-p", str(local_port),
        "-m", str(calls),
        "-timeout", f"{round(timeout * 1000)}ms",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(stats_file),
        "-trace_err", "-error_file", str(error_file),
        "-trace_screen", "-screen_file", str(screen_file),
    ]  # fmt: skip
    if recv_timeout is not None:
        args += ["-recv_timeout", f"{round(recv_timeout * 1000)}"]
    args += list(extra_args)

    process = _SippProcess()
    transport_ = reactor.spawnProcess(process, sipp, args, env=dict(os.environ), path=str(workdir))
    killed: list[bool] = []

    def kill() -> None:
        """Kill a sipp that outlived its own timeout."""
        killed.append(True)
        try:
            transport_.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    killer = reactor.callLater(timeout + KILL_GRACE, kill)

    def collect(exit_code: int) -> SippResult:
        """Build the result from the exit code and sipp's files."""
        if killer.active():
            killer.cancel()
        try:
            stats = _parse_stats(_read(stats_file))
            result = SippResult(
                exit_code=exit_code,
                successful=_count(stats, "SuccessfulCall(C)"),
                failed=_count(stats, "FailedCall(C)"),
                stats=stats,
                stdout=bytes(process.stdout),
                stderr=bytes(process.stderr),
                errors=_read(error_file),
                screen=_read(screen_file),
                command=tuple(args),
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if killed:
            raise SippTimeoutError(result)
        return result

    return process.ended.addCallback(collect)


def register_contact(
    reactor: ProcessReactor,
    target: str,
    user: str,
    port: int,
    *,
    password: str = "1234",
    timeout: float = 30.0,
    sipp: str = "sipp",
    local_ip: str = "127.0.0.1",
) -> Deferred[SippResult]:
    """Register C{local_ip:port} as the contact of extension C{user} at the
    switch C{target} (C{register_contact.xml}, digest C{user}/C{password}),
    so that a sipp UAS started on that port gets the extension's calls."""
    return run_sipp(reactor, scenario("register_contact.xml"), target, "u1",
                    ["-s", user, "-au", user, "-ap", password], timeout=timeout,
                    local_port=port, sipp=sipp, local_ip=local_ip)


def cdr_disconnects(database: Path) -> list[tuple[str, str, str, str]]:
    """The CDRs of the switch's SQLite C{database}, oldest first, as
    C{(caller, callee, disposition, breakdown["disconnect"])}."""
    import json
    import sqlite3

    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT caller, callee, disposition, breakdown FROM cdrs "
                          "ORDER BY id").fetchall()
    return [(caller, callee, disposition, json.loads(breakdown)["disconnect"])
            for caller, callee, disposition, breakdown in rows]


class PortWaitTimeout(Exception):
    """Nothing listened on the port in time (or the sipp meant to had ended)."""


def port_in_use(port: int, kind: str = "udp", host: str = "127.0.0.1") -> bool:
    """Return whether something has bound C{host:port} for C{kind}.

    It tries to bind the port itself and reports C{EADDRINUSE}; the probe
    socket is closed at once.

    @param kind: C{"udp"} or C{"tcp"}.
    @param host: the loopback address to probe (another 127.0.0.0/8
        address when a peer was started with its own C{local_ip}).
    @raise ValueError: for any other C{kind}.
    """
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if kind not in kinds:
        raise ValueError(f"kind must be 'udp' or 'tcp', not {kind!r}")
    with socket.socket(socket.AF_INET, kinds[kind]) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def wait_for_port(
    reactor: TimeReactor,
    port: int,
    kind: str = "udp",
    timeout: float = 5.0,
    interval: float = 0.05,
    ended: Deferred[SippResult] | None = None,
    host: str = "127.0.0.1",
) -> Deferred[None]:
    """Fire once something listens on C{host:port}, polling every C{interval}.

    @param reactor: provides C{callLater}.
    @param kind: C{"udp"} or C{"tcp"}.
    @param timeout: seconds to wait before failing.
    @param ended: the L{Deferred} of the sipp meant to listen (from
        L{run_sipp_uas}); once it has fired the wait fails at once instead
        of waiting for the timeout.  It is not consumed: its result stays
        for its owner.
    @param host: the loopback address the listener was given (the
        C{local_ip} of L{run_sipp_uas}).
    @return: a L{Deferred} firing with C{None}, or failing with
        L{PortWaitTimeout}.
    """
    result: Deferred[None] = Deferred()
    waited = [0.0]
    outcome: list[object] = []
    if ended is not None:

        def keep(value: object) -> object:
            """Remember how the sipp ended, passing the result on untouched."""
            outcome.append(value)
            return value

        ended.addBoth(keep)

    def poll() -> None:
        """Check the port; try again later, succeed or give up."""
        if port_in_use(port, kind, host):
            result.callback(None)
        elif outcome:
            account = outcome[0].describe() if isinstance(outcome[0], SippResult) else outcome[0]
            result.errback(PortWaitTimeout(
                f"sipp ended before listening on {kind} {host}:{port}\n{account}"))  # fmt: skip
        elif waited[0] >= timeout:
            result.errback(PortWaitTimeout(f"nothing listened on {kind} {host}:{port} "
                                           f"within {timeout:g} s"))  # fmt: skip
        else:
            waited[0] += interval
            reactor.callLater(interval, poll)

    poll()
    return result


class TwistdProcess(ProcessProtocol):
    """A twistd child (the switch under test): collects its output and
    tells when it ends."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Keep stdout (and stderr)."""
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """Fire L{ended}."""
        self.ended.callback(None)


class SwitchProcessMixin:
    """C{twistd -n b2bua --config FILE} as a child process of a trial test
    case (mix it into the case): L{spawn_switch} (or
    L{start_demo_switch}: the demo tenant, a configuration template, wait
    for the SIP port), L{output}, L{stop_switch}; the child is killed at the
    end of the test whatever happens."""

    twistd: TwistdProcess | None = None
    process: IProcessTransport | None = None
    sipp: str
    port: int
    folder: Path
    database: Path

    def spawn_switch(self, config: Path, cwd: Path) -> TwistdProcess:
        """Start the switch on C{config}, in folder C{cwd}, from this tree."""
        import sys

        from twisted.internet import reactor

        root = Path(__file__).resolve().parents[3]
        self.twistd = TwistdProcess()
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile=-", "b2bua", "--config", str(config)]
        self.process = reactor.spawnProcess(self.twistd, sys.executable, argv,
                                            env=dict(os.environ, PYTHONPATH=str(root)),
                                            path=str(cwd))
        self.addCleanup(self._kill_switch)  # type: ignore[attr-defined]
        return self.twistd

    async def start_demo_switch(self, template: str, *, prefix: str = "b2bua-it-",
                                **fields: object) -> Path:
        """Start the switch on C{template} with the demo tenant, and wait
        for its SIP port.

        Sets C{sipp} (the program; the test skips without it), C{port}
        (SIP, free for UDP and TCP), C{folder} (a new temporary folder, the
        switch's working folder) and C{database} (its SQLite file, seeded
        by L{b2bua.demo.seed_database}).  C{template} is formatted with
        C{port}, C{oam}, C{database}, C{folder} and C{fields}, and written
        to C{folder/b2bua.toml}.

        @return: the folder.
        """
        from twisted.internet import reactor

        from b2bua.demo import seed_database

        self.sipp = require_program("sipp", "sip-tester")
        self.port = free_port("both")
        self.folder = folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.database = database = folder / "var" / "b2bua.db"
        config = folder / "b2bua.toml"
        config.write_text(template.format(port=self.port, oam=free_port("tcp"),
                                          database=database, folder=folder, **fields))
        await seed_database(f"sqlite:///{database}", reactor, admin_key=False)
        self.spawn_switch(config, folder)
        self.addCleanup(self.stop_switch)  # type: ignore[attr-defined]
        try:
            await wait_for_port(reactor, self.port, "tcp", timeout=20.0)
        except Exception as error:
            self.fail(  # type: ignore[attr-defined]
                f"switch did not start: {error}\n{self.output[-3000:]}")
        return folder

    @property
    def target(self) -> str:
        """The switch's SIP address (C{127.0.0.1:port})."""
        return f"127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        """What twistd printed so far."""
        return self.twistd.output.decode(errors="replace") if self.twistd else ""

    async def stop_switch(self) -> None:
        """SIGTERM: the switch drains, commits and flushes its CDRs, then exits
        (within 30 s, without a traceback)."""
        from twisted.internet import reactor

        assert self.twistd is not None and self.process is not None
        if not self.twistd.ended.called:
            self.process.signalProcess("TERM")
        ended = self.twistd.ended
        ended.addTimeout(30, reactor)
        try:
            await ended
        except Exception:
            self.fail(  # type: ignore[attr-defined]
                f"the switch did not stop within 30 s\n{self.output[-3000:]}")
        self.assertNotIn(  # type: ignore[attr-defined]
            "Traceback", self.output, self.output[-3000:])

    def _kill_switch(self) -> Deferred[None] | None:
        """Cleanup: make sure the child is gone."""
        if self.twistd is None or self.process is None or self.twistd.ended.called:
            return None
        try:
            self.process.signalProcess("KILL")
        except Exception:
            return None
        return self.twistd.ended
