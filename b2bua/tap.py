"""twistd entry: C{Options} and C{makeService} for C{twistd -n b2bua}.

This is the one module that imports the global reactor (inside
L{makeService}); everything below receives it (or a clock) as an argument.

A configuration that cannot be used stops start-up before the reactor runs:
each problem is written to standard error on its own line, naming the file
and the key, and the process exits with status 2, never with a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.application.service import IService
from twisted.python import usage

from b2bua.config import Config, ConfigError, load_config

__all__ = ["EXIT_CONFIG", "Options", "build_service", "makeService"]

#: The exit status of a start-up stopped by the configuration.
EXIT_CONFIG = 2


def _refuse(problems: list[str], stderr: TextIO | None = None) -> SystemExit:
    """Write C{problems}, one line each, and return the exception to raise."""
    out = stderr if stderr is not None else sys.stderr
    for problem in problems:
        out.write(f"b2bua: config error: {problem}\n")
    out.flush()
    return SystemExit(EXIT_CONFIG)


class Options(usage.Options):
    """Command-line options of C{twistd b2bua}.

    After parsing, C{self["loaded"]} holds the checked L{Config}: the file
    named by C{--config}, or the embedded demo (loopback only) without it.
    """

    synopsis = "[--config FILE]"
    longdesc = ("Runs the SIP B2BUA. Without --config it starts the embedded demo on "
                "loopback only (SIP on 127.0.0.1:5060, OAM on 127.0.0.1:8080), whose "
                "extensions use well-known demo credentials. See docs/configuration.md.")

    optParameters = [
        ["config", "c", None, "TOML configuration file (default: the embedded demo)"],
    ]

    def postOptions(self) -> None:
        """Load and check the configuration now, so errors stop start-up early.

        @raise SystemExit: with L{EXIT_CONFIG}, after writing every problem.
        """
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            raise _refuse(error.problems) from None


def build_service(reactor: Any, config: Config) -> IService:
    """Build the switch's service tree on C{reactor} (nothing listens yet).

    Problems only found while building (an unknown name in
    C{plugins.disabled}, a plugin that does not match the hook
    specifications) stop start-up like a bad file does.

    @raise SystemExit: with L{EXIT_CONFIG}, after writing the problem.
    """
    from b2bua.core.plugins import PluginError
    from b2bua.service import SwitchService
    from b2bua.sip.tls import TLSConfigError

    try:
        return SwitchService(reactor, config, tune_gc=True)
    except (PluginError, TLSConfigError) as error:
        raise _refuse([f"{config.source}: {error}"]) from None


def makeService(options: Options) -> IService:
    """Build the switch's service tree from the loaded configuration."""
    from twisted.internet import reactor

    return build_service(reactor, options["loaded"])
