"""Benchmark: calls per second through a B2BUA, ours against sippy's.

A sipp caller (C{uac_call.xml}) calls a sipp callee (C{uas_answer.xml})
through the B2BUA, on loopback over UDP; the B2BUA runs on CPU 0, both
sipps on CPU 1.  For each B2BUA, after 3 probe calls and a warm-up:

  - memory: C{VmRSS} while C{--hold-calls} long calls are up at once, minus
    before, per 1000 calls (first, before overload steps grow the heap);
  - max CPS: the highest rate whose step of C{rate x --step-seconds} calls
    has under 0.5 % failed and ends within 1.1 x (+2 s) the time taken to
    offer them; doubling, then bisection, within C{--budget} seconds;
  - CPU seconds per 1000 calls (utime + stime, all threads, from
    C{/proc/PID/stat}) in the passing step nearest C{--cpu-rate}.

Ours runs as C{twistd -n b2bua --config FILE} from this tree; the callee
registers as extension 1001 and every call authenticates as 1000 (a 407
and a second INVITE per call).  sippy runs as C{sippy_b2bua_runner.py}
says: static route, no authentication, no accounting, no logging.

Usage::

    .venv/bin/python bench/sip_cps.py [--step-seconds 10] [--budget 150]
        [--hold-calls 1000] [--ours-only | --sippy-only] [--quick]
    .venv/bin/python bench/sip_cps.py --ours-only --fixed-rate 300 --repeat 3

The second form only runs C{--repeat} steps at one rate and prints each
step's CPU seconds per 1000 calls: the figure to compare before and after
a change (the summary's "max" is then that rate, not a search result).

Exits 0 when every figure was measured, 2 when our service does not route
calls (yet), 1 on any other failure.  Every process it starts is killed at
the end, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = ROOT / "tests" / "trial" / "integration" / "scenarios"
TWISTD = ROOT / ".venv" / "bin" / "twistd"

CALLER, CALLEE, PASSWORD = "1000", "1001", "1234"
#: A step passes with fewer failed calls than this fraction.
MAX_FAILED = 0.005
#: The B2BUA runs on the first CPU, the two sipps on the second.
B2BUA_CPU, SIPP_CPU = 0, 1
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something went wrong that makes the figures meaningless."""


class NotRouting(BenchError):
    """The B2BUA does not (yet) register the callee or route calls to it."""


# -- processes -------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, each in its own session, killed at the end."""

    def __init__(self, workdir: Path) -> None:
        """Write each process's output to a log file in C{workdir}."""
        self.workdir = workdir
        self.running: list[subprocess.Popen[bytes]] = []
        self.cpus = os.cpu_count() or 1

    def start(self, name: str, argv: Sequence[str], cpu: int,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start C{argv} pinned to C{cpu} (with C{taskset}), output to C{NAME.log}."""
        command = list(argv)
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu % self.cpus), *command]
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                    start_new_session=True)  # fmt: skip
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """End C{proc}'s session: SIGTERM, then SIGKILL after C{grace} seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError, subprocess.TimeoutExpired):
                if proc.poll() is None:
                    os.killpg(proc.pid, sig)
                    proc.wait(wait)
        if proc in self.running:
            self.running.remove(proc)

    def close(self) -> None:
        """Stop everything still running, newest first."""
        for proc in reversed(list(self.running)):
            self.stop(proc, grace=3.0)

    def log_tail(self, name: str) -> str:
        """Return the end of C{NAME.log}."""
        path = self.workdir / f"{name}.log"
        return path.read_text("utf-8", "replace")[-2000:] if path.exists() else ""


def cpu_seconds(pid: int) -> float:
    """Return utime + stime of process C{pid} (all its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    """Return the resident set size (C{VmRSS}) of process C{pid} in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def free_port() -> int:
    """Return a UDP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_bound(port: int) -> bool:
    """Return whether something has bound UDP C{127.0.0.1:port}."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_bound(procs: Processes, proc: subprocess.Popen[bytes], name: str, port: int,
               timeout: float = 20.0) -> None:  # fmt: skip
    """Wait until C{proc} listens on UDP C{port}; fail if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while not port_bound(port):
        if proc.poll() is not None:
            raise BenchError(f"{name} exited ({proc.returncode}):\n{procs.log_tail(name)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{name} did not listen on UDP {port} in {timeout:g} s")
        time.sleep(0.1)


def wait_idle(pid: int, timeout: float = 20.0, busy: float = 0.1) -> None:
    """Wait (at most C{timeout} s) until C{pid} uses under C{busy} of a CPU for 0.5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.5 * busy:
            return


# -- sipp -----------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One sipp caller run at one rate."""

    rate: int
    calls: int
    successful: int
    failed: int
    seconds: float
    b2bua_cpu: float
    sipp_load: float
    retransmissions: int
    reasons: str = ""

    @property
    def passed(self) -> bool:
        """Whether every call ended, fewer than L{MAX_FAILED} failed, and the B2BUA kept up.

        Keeping up: the calls ended within 10 % (plus 2 s) of the time they
        took to be offered, so no backlog was building.
        """
        kept_up = self.seconds <= self.calls / self.rate * 1.1 + 2
        ended = self.successful + self.failed >= self.calls
        return ended and kept_up and self.failed < MAX_FAILED * self.calls

    @property
    def cpu_per_1000(self) -> float:
        """The B2BUA's CPU seconds per 1000 successful calls of this step."""
        return self.b2bua_cpu / max(self.successful, 1) * 1000

    def line(self) -> str:
        """Return a one-line account for the progress log."""
        verdict = "pass" if self.passed else "FAIL"
        return (f"  {self.rate:>5} CPS x {self.seconds:5.1f} s: {self.successful}/{self.calls} ok, "
                f"{self.failed} failed, {self.retransmissions} retransmissions, "
                f"B2BUA {self.b2bua_cpu / self.seconds:4.0%} CPU, sipps {self.sipp_load:4.0%} "
                f"-> {verdict}" + (f" ({self.reasons})" if self.reasons else ""))  # fmt: skip


def stats_rows(path: Path) -> list[dict[str, str]]:
    """Return the rows of a sipp C{-trace_stat} file (C{;}-separated, with header)."""
    with suppress(FileNotFoundError), path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))
    return []


def count(row: dict[str, str], column: str) -> int:
    """Return the integer in C{column} of a stats row (0 when absent)."""
    value = (row.get(column) or "").strip()
    return int(value) if value.isdigit() else 0


def failure_reasons(path: Path, top: int = 2) -> str:
    """Summarise the commonest call failures in a sipp C{-trace_err} file."""
    text = path.read_text("utf-8", "replace") if path.exists() else ""
    found = re.findall(r"receive timeout on message [^:]*:(\d+)|while expecting '([^']*)'"
                       r"[^,]*, received '([^\r\n']*)", text)  # fmt: skip
    reasons = Counter(f"timeout at step {step}" if step else f"{got[:40]} instead of {wanted}"
                      for step, wanted, got in found)  # fmt: skip
    return "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(top))


def sipp(scenario: str, target: str | None, port: int, args: Sequence[str]) -> list[str]:
    """Return a sipp command line for C{scenario} on C{127.0.0.1:port}, over UDP."""
    command = ["sipp", "-sf", str(SCENARIOS / scenario)]
    if target is not None:
        command.append(target)
    return [*command, "-t", "u1", "-i", "127.0.0.1", "-p", str(port), "-nostdin", *args]


# -- the B2BUAs under test ---------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """A running B2BUA and how a caller reaches the callee through it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    caller_args: list[str]
    note: str


#: Digest-authenticate every call (407 + second INVITE) instead of trusting
#: the caller's address as sippy's static route does; set by C{--digest}.
DIGEST_EVERY_CALL = False


def our_config(port: int, database: str) -> str:
    """Return a TOML config for our service on UDP C{port}, using only the keys it knows.

    sipp answers MD5 challenges only, and digests C{sip:HOST:PORT} rather than
    the Request-URI, so those settings are relaxed when the service has them.
    Unless C{--digest} is given, the caller's address (127.0.0.1) is trusted
    as extension 1000 (the built-in C{ip_trust} plugin): sippy's B2BUA is
    measured without authentication, so ours is too.
    """
    sys.path.insert(0, str(ROOT))
    from b2bua import config

    def knows(section: str, key: str) -> bool:
        """Whether the config dataclass C{section} has the field C{key}."""
        kind = getattr(config, section, None)
        return kind is not None and key in {f.name for f in dataclasses.fields(kind)}

    lines = ["[sip]", f'listen = ["udp:127.0.0.1:{port}"]']
    if knows("SIPConfig", "digest_algorithms"):
        lines.append('digest_algorithms = ["MD5"]')
    if knows("SIPConfig", "digest_check_uri"):
        lines.append("digest_check_uri = false")
    if knows("OAMConfig", "enabled"):
        lines += ["", "[oam]", "enabled = false"]
    if knows("StorageConfig", "database"):
        lines += ["", "[storage]", f'database = "{database}"']
    if not DIGEST_EVERY_CALL:
        trusted = f'sources = {{ "127.0.0.1/32" = "{CALLER}@127.0.0.1" }}'
        lines += ["", "[plugins.ip_trust]", trusted]
    return "\n".join(lines) + "\n"


def seed(database: str, env: dict[str, str]) -> None:
    """Create the demo tenant's extensions (1000-1019, password 1234) in
    C{database}: with a configuration file the service seeds nothing."""
    code = ("from twisted.internet.task import react\n"
            "from b2bua.demo import seed_database\n"
            f"react(lambda reactor: seed_database({database!r}, reactor, admin_key=False))\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60,
                   stdout=subprocess.DEVNULL)


def start_ours(procs: Processes, callee_port: int) -> Target:
    """Start our service and register the callee's contact with it."""
    if not TWISTD.exists():
        raise BenchError(f"{TWISTD} is missing: run `make install` first")
    port = free_port()
    config = procs.workdir / "ours.toml"
    database = f"sqlite:///{procs.workdir / 'b2bua.db'}"
    config.write_text(our_config(port, database))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    seed(database, env)
    proc = procs.start("ours", [str(TWISTD), "-n", "--pidfile=", "b2bua", "--config", str(config)],
                       B2BUA_CPU, env)  # fmt: skip
    wait_bound(procs, proc, "ours", port)
    args = ["-m", "1", "-s", CALLEE, "-au", CALLEE, "-ap", PASSWORD, "-recv_timeout", "5000",
            "-timeout", "15s", "-timeout_error"]  # fmt: skip
    register = procs.start("register", sipp("register_contact.xml", f"127.0.0.1:{port}",
                                            callee_port, args), SIPP_CPU)  # fmt: skip
    code = register.wait(30)
    procs.stop(register)
    if code != 0:
        raise NotRouting(f"registering extension {CALLEE} failed (sipp exit {code}): "
                         "the service does not act as registrar")  # fmt: skip
    auth = ["-au", CALLER, "-ap", PASSWORD, "-set", "caller", CALLER]
    note = ("digest-authenticates every call (407 + 2nd INVITE)" if DIGEST_EVERY_CALL else
            "trusts the caller's address as extension 1000, like sippy's static route")
    return Target("ours", proc, port, auth, note)


def start_sippy(procs: Processes, callee_port: int) -> Target:
    """Start sippy's B2BUA with a static route to the callee, without authentication."""
    sys.path.insert(0, str(BENCH))
    from sippy_b2bua_runner import sippy_command, sippy_environment

    port = free_port()
    argv = sippy_command(port, f"127.0.0.1:{callee_port}", procs.workdir / "sippy.sock")
    proc = procs.start("sippy", argv, B2BUA_CPU, sippy_environment())
    wait_bound(procs, proc, "sippy", port)
    return Target("sippy", proc, port, [], "static route, no authentication, logging off")


# -- measurement ---------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    """What the benchmark found for one B2BUA.

    @ivar best: the step at the highest passing rate.
    @ivar cpu_step: the passing step nearest C{--cpu-rate}: one rate for both
        B2BUAs, as the cost per call depends on the rate.
    """

    name: str
    note: str
    best: Step | None = None
    cpu_step: Step | None = None
    rss_per_1000: float | None = None
    concurrent: int = 0


@dataclasses.dataclass
class Caller:
    """A sipp caller that is running, and what it started from."""

    proc: subprocess.Popen[bytes]
    name: str
    stats: Path
    calls: int
    rate: float
    limit: float
    #: at the start: monotonic time, B2BUA CPU, callee CPU, reaped children's CPU
    began: tuple[float, float, float, float]


def children_cpu() -> float:
    """Return the CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    """Runs callers through one B2BUA to a callee that lives for the whole run."""

    def __init__(self, procs: Processes, args: argparse.Namespace) -> None:
        """Keep the settings; nothing starts yet."""
        self.procs = procs
        self.args = args
        self.runs = 0

    def call(self, target: Target, uas: subprocess.Popen[bytes], calls: int, rate: float,
             pause_ms: int = 0) -> Caller:  # fmt: skip
        """Start a caller placing C{calls} calls at C{rate} CPS, each lasting C{pause_ms}."""
        self.runs += 1
        name = f"uac-{self.runs}"
        stats = self.procs.workdir / f"{name}.csv"
        limit = max(100, int(rate * 6), calls if pause_ms else 0)
        duration = calls / rate + pause_ms / 1000
        argv = sipp("uac_call.xml", f"127.0.0.1:{target.port}", free_port(), [
            "-s", CALLEE, *target.caller_args, "-m", str(calls), "-r", f"{rate:g}", "-rp", "1000",
            "-l", str(limit), "-d", str(pause_ms), "-recv_timeout", "5000",
            "-timeout", f"{int(duration + 30)}s", "-timeout_error",
            "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_err", "-error_file",
            str(stats.with_suffix(".err")), "-max_log_size", "2000000"])  # fmt: skip
        began = (time.monotonic(), cpu_seconds(target.proc.pid), cpu_seconds(uas.pid),
                 children_cpu())  # fmt: skip
        proc = self.procs.start(name, argv, SIPP_CPU)
        return Caller(proc, name, stats, calls, rate, duration + 60, began)

    def finish(self, target: Target, uas: subprocess.Popen[bytes], caller: Caller) -> Step:
        """Wait for C{caller} to end and account for its step."""
        try:
            code = caller.proc.wait(caller.limit)
        except subprocess.TimeoutExpired:
            self.procs.stop(caller.proc)
            raise BenchError("a sipp caller outlived its own timeout") from None
        self.procs.stop(caller.proc)
        if code not in (0, 1):
            raise BenchError(f"sipp caller exited {code}:\n{self.procs.log_tail(caller.name)}")
        if target.proc.poll() is not None:
            raise BenchError(f"{target.name} died ({target.proc.returncode}):\n"
                             f"{self.procs.log_tail(target.name)}")  # fmt: skip
        began, b2bua_cpu, uas_cpu, reaped_cpu = caller.began
        seconds = time.monotonic() - began
        sipps = children_cpu() - reaped_cpu + cpu_seconds(uas.pid) - uas_cpu
        rows = stats_rows(caller.stats)
        last = rows[-1] if rows else {}
        successful = count(last, "SuccessfulCall(C)")
        return Step(
            rate=int(caller.rate), calls=caller.calls, successful=successful,
            failed=max(count(last, "FailedCall(C)"), caller.calls - successful),
            seconds=seconds, b2bua_cpu=cpu_seconds(target.proc.pid) - b2bua_cpu,
            sipp_load=sipps / seconds, retransmissions=count(last, "Retransmissions(C)"),
            reasons=failure_reasons(caller.stats.with_suffix(".err")),
        )  # fmt: skip

    def run(self, target: Target, uas: subprocess.Popen[bytes], calls: int, rate: float) -> Step:
        """Place C{calls} short calls at C{rate} CPS and wait for them."""
        return self.finish(target, uas, self.call(target, uas, calls, rate))

    def probe(self, target: Target, uas: subprocess.Popen[bytes]) -> None:
        """Place a few slow calls; raise L{NotRouting} unless all of them complete."""
        step = self.run(target, uas, calls=3, rate=5)
        if step.successful != 3:
            raise NotRouting(
                f"{target.name}: {step.successful} of 3 probe calls to extension "
                f"{CALLEE} completed; see {self.procs.workdir}/uac-{self.runs}.log"
            )

    def search(self, target: Target, uas: subprocess.Popen[bytes], figures: Figures) -> None:
        """Find the highest passing rate within C{--budget} seconds: double, then bisect."""
        args = self.args
        passed: list[Step] = []
        lowest_fail: int | None = None
        rate = args.start_rate
        deadline = time.monotonic() + args.budget
        while 1 <= rate <= args.max_rate and time.monotonic() + args.step_seconds + 5 < deadline:
            wait_idle(target.proc.pid)
            step = self.run(target, uas, max(1, int(rate * args.step_seconds)), rate)
            print(step.line(), flush=True)
            if step.passed:
                passed.append(step)
            else:
                lowest_fail = min(step.rate, lowest_fail or step.rate)
            best = max((s.rate for s in passed), default=None)
            if best is not None and lowest_fail is not None:
                if lowest_fail - best <= max(1, best // 10):
                    break
                rate = (best + lowest_fail) // 2
            else:
                rate = rate * 2 if best is not None else rate // 2
        if passed:
            figures.best = max(passed, key=lambda s: s.rate)
            figures.cpu_step = min(passed, key=lambda s: abs(s.rate - args.cpu_rate))

    def hold(self, target: Target, uas: subprocess.Popen[bytes], figures: Figures) -> None:
        """Hold C{--hold-calls} calls up at once; record RSS per 1000 concurrent calls.

        The calls are set up over C{--hold-ramp} seconds and each lasts that
        long plus 10 s, so all are up together for a while; C{VmRSS} is read
        before the first and once sipp counts them all (or at the end of the
        ramp plus 6 s).
        """
        calls = self.args.hold_calls
        rate = calls / self.args.hold_ramp
        wait_idle(target.proc.pid)
        base = rss_kib(target.proc.pid)
        caller = self.call(
            target, uas, calls, rate, pause_ms=int((self.args.hold_ramp + 10) * 1000)
        )
        deadline = time.monotonic() + self.args.hold_ramp + 6
        current = 0
        while time.monotonic() < deadline and current < calls:
            time.sleep(0.5)
            rows = stats_rows(caller.stats)
            current = count(rows[-1], "CurrentCall") if rows else 0
        time.sleep(1.0)
        held = rss_kib(target.proc.pid)
        step = self.finish(target, uas, caller)
        print(
            f"  hold: {current} concurrent calls at {rate:.0f} CPS, VmRSS {base / 1024:.1f} -> "
            f"{held / 1024:.1f} MiB; {step.successful}/{calls} then ended well"
        )
        if current > 0:
            figures.concurrent = current
            figures.rss_per_1000 = (held - base) / 1024 / current * 1000

    def fixed(self, target: Target, uas: subprocess.Popen[bytes], figures: Figures) -> None:
        """Run C{--repeat} steps at C{--fixed-rate} only (no memory hold, no search).

        For comparing CPU seconds per 1000 calls before and after a change:
        one rate, several steps, each printed with its own figure.
        """
        rate = self.args.fixed_rate
        steps = []
        for _ in range(max(1, self.args.repeat)):
            wait_idle(target.proc.pid)
            step = self.run(target, uas, max(1, int(rate * self.args.step_seconds)), rate)
            print(f"{step.line()}; {step.cpu_per_1000:.2f} CPU-s per 1000 calls", flush=True)
            steps.append(step)
        passed = sorted((s for s in steps if s.passed), key=lambda s: s.cpu_per_1000)
        if passed:  # the summary gives the median passing step
            figures.best = figures.cpu_step = passed[len(passed) // 2]

    def measure(self, start: str) -> Figures:
        """Start the callee and the B2BUA C{start} (C{"ours"} or C{"sippy"}), measure, stop.

        Order: 3 probe calls, a warm-up, the memory hold on a still small
        heap (a heap grown by an overload step would hide the held calls),
        then the rate search.
        """
        uas_port = free_port()
        target = (start_ours if start == "ours" else start_sippy)(self.procs, uas_port)
        figures = Figures(target.name, target.note)
        keep = str(int(self.args.hold_ramp + 60) * 1000)
        uas_args = ["-recv_timeout", keep, "-timeout", "1800s"]
        uas = self.procs.start(
            f"uas-{start}", sipp("uas_answer.xml", None, uas_port, uas_args), SIPP_CPU
        )
        try:
            wait_bound(self.procs, uas, f"uas-{start}", uas_port)
            print(f"{target.name}: pid {target.proc.pid} on UDP {target.port} ({target.note})")
            self.probe(target, uas)
            self.run(target, uas, calls=50, rate=25)
            if self.args.fixed_rate:
                self.fixed(target, uas, figures)
            else:
                self.hold(target, uas, figures)
                self.search(target, uas, figures)
        finally:
            self.procs.stop(uas)
            self.procs.stop(target.proc)
        return figures


# -- report --------------------------------------------------------------------------------


def describe(fig: Figures) -> str:
    """Return the summary line of one B2BUA."""
    cps = f"max {fig.best.rate} CPS" if fig.best else "no rate passed"
    cpu = "CPU n/a"
    if fig.cpu_step:
        cpu = f"{fig.cpu_step.cpu_per_1000:.2f} CPU-s per 1000 calls (at {fig.cpu_step.rate} CPS)"
    rss = "memory n/a"
    if fig.rss_per_1000 is not None:
        rss = f"{fig.rss_per_1000:.1f} MiB RSS per 1000 concurrent calls ({fig.concurrent} held)"
    return f"{fig.name}: {cps}, {cpu}, {rss}"


def ratios(ours: Figures, theirs: Figures) -> str | None:
    """Return the ours/sippy ratios of the three figures, when both have them."""
    if not (ours.best and theirs.best and ours.cpu_step and theirs.cpu_step):
        return None
    parts = [
        f"CPS {ours.best.rate / theirs.best.rate:.2f}x",
        f"CPU per call {ours.cpu_step.cpu_per_1000 / theirs.cpu_step.cpu_per_1000:.2f}x",
    ]
    if ours.rss_per_1000 and theirs.rss_per_1000:
        parts.append(f"memory per call {ours.rss_per_1000 / theirs.rss_per_1000:.2f}x")
    return "ratio ours/sippy: " + ", ".join(parts)


def main(argv: list[str]) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description="Calls per second through a B2BUA.")
    for flag, kind, default, text in (
        ("--step-seconds", float, 10.0, "seconds of calls per step (default 10)"),
        ("--budget", float, 150.0, "seconds for the rate search, per B2BUA (default 150)"),
        ("--start-rate", int, 50, "first rate tried, in CPS (default 50)"),
        ("--max-rate", int, 5000, "never try a higher rate (default 5000)"),
        ("--hold-calls", int, 1000, "concurrent calls held for the memory figure"),
        ("--hold-ramp", float, 12.0, "seconds over which they are set up (default 12)"),
        ("--cpu-rate", int, 100, "rate whose step gives the CPU figure (default 100)"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--fixed-rate", type=int, default=0,
                        help="only run --repeat steps at this rate (CPU per call, profiling)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="steps at --fixed-rate (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 s steps, 30 s budget, 200 held calls")  # fmt: skip
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--ours-only", action="store_true", help="measure ours only")
    only.add_argument("--sippy-only", action="store_true", help="measure sippy only")
    parser.add_argument("--digest", action="store_true",
                        help="ours digest-authenticates every call (sippy never does)")
    args = parser.parse_args(argv)
    global DIGEST_EVERY_CALL
    DIGEST_EVERY_CALL = args.digest
    if args.quick:
        args.step_seconds, args.budget, args.hold_calls, args.hold_ramp = 3.0, 30.0, 200, 8.0
    if shutil.which("sipp") is None:
        print("sip_cps: sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 1
    cpus = os.cpu_count() or 1
    lonely = "" if cpus > 1 else " (one CPU only: figures are pessimistic)"
    print(f"B2BUA on CPU {B2BUA_CPU % cpus}, sipps on CPU {SIPP_CPU % cpus}{lonely}; steps of "
          f"{args.step_seconds:g} s, pass below {MAX_FAILED:.1%} failed calls")  # fmt: skip

    names = ["ours"] if args.ours_only else ["sippy"] if args.sippy_only else ["ours", "sippy"]
    results: dict[str, Figures] = {}
    status = 0
    workdir = Path(tempfile.mkdtemp(prefix="sip-cps-"))
    procs = Processes(workdir)
    # SIGTERM and SIGHUP leave like Ctrl-C does, through the finally below
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    try:
        for name in names:
            try:
                results[name] = Bench(procs, args).measure(name)
            except NotRouting as error:
                print(f"\n*** {name} does not route calls yet: {error}\n", flush=True)
                status = 2
    except (BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"sip_cps benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"(logs kept in {workdir})", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print(f"interrupted (logs kept in {workdir})", file=sys.stderr)
        return 1
    finally:
        procs.close()
    print()
    for fig in results.values():
        print(describe(fig))
    if len(results) == 2 and (line := ratios(results["ours"], results["sippy"])):
        print(line)
    if status == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"(logs kept in {workdir})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
