"""Run sippy's B2BUA (PyPI C{sippy}) as the benchmarks' reference B2BUA.

The flags come from C{sippy/b2bua.py} (C{main_func}) of the pinned
version (C{SIPPY_REQUIREMENT} in C{sip_parse.py}):

  - C{-f}: stay in the foreground (no daemon, no pidfile);
  - C{-u}: no RADIUS authentication, which requires C{-s};
  - C{-s HOST:PORT}: a static route, every INVITE goes there, keeping the
    Request-URI's user (sipp calls C{1001}, the callee gets
    C{sip:1001@HOST:PORT});
  - C{-A 0}: no RADIUS accounting (otherwise a RADIUS client is started);
  - C{-l ADDRESS -p PORT}: where it listens for SIP, UDP only;
  - C{-c PATH}: its command socket (default C{/var/run/b2bua.sock}).

sippy logs every SIP message to stderr unless C{SIPLOG_BEND=none} is in
its environment, which the benchmarks set: ours does not log per message
either.  The venv C{bench/.venv-sippy} is created (and sippy installed) on
first use by C{sip_parse.ensure_sippy_venv}.

Usage, for a manual try (foreground, Ctrl-C to stop)::

    python bench/sippy_b2bua_runner.py --port 5080 --route 127.0.0.1:5090
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from sip_parse import SIPPY_VENV, ensure_sippy_venv  # noqa: E402 (after the path)

__all__ = ["sippy_command", "sippy_environment"]


def sippy_command(
    port: int, route: str, socket_path: Path, address: str = "127.0.0.1"
) -> list[str]:
    """Return the command line of sippy's B2BUA, creating its venv if needed.

    @param port: the UDP port to listen on.
    @param route: C{HOST:PORT} every call is sent to.
    @param socket_path: where its command socket goes (a writable path).
    @param address: the address to listen on.
    """
    ensure_sippy_venv()
    return [
        str(SIPPY_VENV / "bin" / "b2bua"), "-f", "-u", "-A", "0", "-s", route,
        "-l", address, "-p", str(port), "-c", str(socket_path),
    ]  # fmt: skip


def sippy_environment() -> dict[str, str]:
    """Return this process's environment with sippy's SIP logging turned off."""
    return dict(os.environ, SIPLOG_BEND="none")


def main(argv: list[str]) -> int:
    """Run sippy's B2BUA in the foreground until it is stopped."""
    parser = argparse.ArgumentParser(description="Run sippy's B2BUA with a static route.")
    parser.add_argument("--port", type=int, default=5080, help="UDP port on 127.0.0.1")
    parser.add_argument("--route", default="127.0.0.1:5090", help="HOST:PORT of the callee")
    parser.add_argument("--socket", default="/tmp/sippy-b2bua.sock", help="command socket path")
    args = parser.parse_args(argv)
    command = sippy_command(args.port, args.route, Path(args.socket))
    os.execve(command[0], command, sippy_environment())
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
