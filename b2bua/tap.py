"""twistd entry: C{Options} and C{makeService} for C{twistd -n b2bua}.

This is the one module that imports the global reactor; everything below
receives it (or a clock) as an argument.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from b2bua.config import ConfigError, load_config


class Options(usage.Options):
    """Command-line options of C{twistd b2bua}."""

    optParameters = [
        ["config", "c", None, "TOML configuration file (default: the embedded demo)"],
    ]

    def postOptions(self) -> None:
        """Load and check the configuration now, so errors stop start-up early."""
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as error:
            for problem in error.problems:
                sys.stderr.write(f"b2bua: config error: {problem}\n")
            raise SystemExit(2) from None


def makeService(options: Options) -> IService:
    """Build the switch's service tree from the loaded configuration."""
    from twisted.internet import reactor

    from b2bua.service import SwitchService

    return SwitchService(reactor, options["loaded"])
