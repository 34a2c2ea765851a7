"""A media server call's recording in the switch's CDR, end to end.

C{twistd -n b2bua} runs the media server with C{record_policy = "always"}
and the echo flow on extension C{*43}.  A sipp caller (demo extension
1000) dials it and hangs up after two seconds, so the switch's call ends
while its media server call is still up (the BYE to the media server is on
its way): the CDR must wait for the media server's recording
(C{call.data["recordings_settled"]}) and name the file and its duration in
its breakdown (C{recordings}, C{source = "media_server"}).  Loopback only,
bounded well under a minute.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from media.server.wav import read_wav
from tests.trial.integration.sipp import run_sipp, scenario
from tests.trial.integration.test_media_server_sipp import CONFIG, TIMEOUT, MediaServerCase

#: The recording run: *43 is the echo flow, every call recorded whole.
RECORDING_CONFIG = CONFIG.replace(
    'extensions = {{ "{extension}" = "pin_check" }}',
    'extensions = {{ "{extension}" = "echo" }}\n'
    'record_policy = "always"\n'
    'recordings = "{folder}/recordings"')
#: Seconds the CDR may take to reach the database.
CDR_WAIT = 15.0


def answered_cdrs(database: Path) -> list[dict[str, object]]:
    """The breakdowns of the answered calls' CDRs in the database."""
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        try:
            rows = connection.execute(
                "SELECT breakdown FROM cdrs WHERE disposition = 'answered'").fetchall()
        except sqlite3.OperationalError:  # the table is being made
            return []
    return [json.loads(breakdown) for (breakdown,) in rows]


class RecordingInCdrTests(MediaServerCase):
    """The recording of a media server call lands in the switch's CDR."""

    config_template = RECORDING_CONFIG
    extension = "*43"

    async def _call(self) -> None:
        result = await run_sipp(
            reactor, scenario("uac_call.xml"), f"127.0.0.1:{self.port}", "u1",
            ["-s", self.extension, "-au", "1000", "-ap", "1234", "-set", "caller", "1000",
             "-d", "2000"],
            timeout=TIMEOUT, sipp=self.sipp)
        self.assertTrue(result.ok, result.describe() + "\n" + self.output[-3000:])
        database = self.folder / "var" / "b2bua.db"
        for _ in range(int(CDR_WAIT / 0.25)):
            breakdowns = answered_cdrs(database)
            if breakdowns:
                break
            await deferLater(reactor, 0.25, lambda: None)
        else:
            self.fail(f"no CDR of the answered call\n{self.output[-3000:]}")
        [breakdown] = breakdowns
        self.assertEqual(breakdown.get("disconnect"), "caller")
        [recording] = breakdown["recordings"]  # type: ignore[index]
        self.assertEqual((recording["mode"], recording["source"]), ("stereo", "media_server"))
        path = Path(recording["path"])
        self.assertTrue(path.is_relative_to(self.folder / "recordings"), path)
        self.assertEqual(read_wav(path).duration_ms, recording["duration_ms"])
        self.assertGreaterEqual(recording["duration_ms"], 1500)

    def test_recording_in_cdr(self) -> None:
        """The caller hangs up: the CDR names the stereo file and its duration."""
        return ensureDeferred(self._call())
