"""The C{[media.moh]} table, and music from a configured WAV file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.config import ConfigError, MohConfig, parse_config
from media.moh import HoldMusic, MusicOnHold, music_on_hold_from_config
from media.server.g711 import alaw_encode, ulaw_encode
from media.server.wav import write_wav


def tone_pcm(frames: int) -> bytes:
    """C{frames} 20 ms frames, each a different constant level."""
    return b"".join(((n + 1) * 100).to_bytes(2, "little", signed=True) * 160
                    for n in range(frames))


class ConfigTests(SynchronousTestCase):
    """Parsing C{[media.moh]}."""

    def problems(self, media: dict[str, object]) -> str:
        """The error a C{[media]} table gives."""
        with self.assertRaises(ConfigError) as caught:
            parse_config({"media": media})
        return str(caught.exception)

    def test_defaults(self) -> None:
        """On, generated music, 1000 listeners, with or without the table."""
        self.assertEqual(parse_config({}).media.moh, MohConfig(True, "", 1000))
        config = parse_config({"media": {"backend": "relay", "moh": {"max_listeners": 7,
                                                                     "enabled": False}}})
        self.assertEqual(config.media.moh, MohConfig(False, "", 7))

    def test_bad_values(self) -> None:
        """Each bad value is named by its key."""
        self.assertIn("media.moh.enabled: expected", self.problems({"moh": {"enabled": "yes"}}))
        self.assertIn("media.moh.max_listeners: must be 0..100000",
                      self.problems({"moh": {"max_listeners": -1}}))
        self.assertIn("media.moh: expected a table", self.problems({"moh": 3}))
        self.assertIn("media.moh.maxlisteners: unknown key (did you mean "
                      "media.moh.max_listeners?)", self.problems({"moh": {"maxlisteners": 3}}))

    def test_file_checked(self) -> None:
        """With the relay, a missing file or one at another rate stops
        start-up with one line naming C{media.moh.file}."""
        missing = self.problems({"backend": "relay", "moh": {"file": "/nonexistent/hold.wav"}})
        self.assertIn("media.moh.file: cannot read '/nonexistent/hold.wav'", missing)
        wrong = Path(self.mktemp() + ".wav")
        write_wav(wrong, tone_pcm(10), rate=16000)
        self.assertIn("media.moh.file:", self.problems({"backend": "relay",
                                                        "moh": {"file": str(wrong)}}))
        self.assertIn("16000 Hz", self.problems({"backend": "relay",
                                                 "moh": {"file": str(wrong)}}))
        # without the relay the file is not played, so not checked
        parse_config({"media": {"backend": "none", "moh": {"file": "/nonexistent/hold.wav"}}})

    def test_good_file(self) -> None:
        """A good file passes."""
        good = Path(self.mktemp() + ".wav")
        write_wav(good, tone_pcm(3))
        config = parse_config({"media": {"backend": "relay", "moh": {"file": str(good)}}})
        self.assertEqual(config.media.moh.file, str(good))


class FileMusicTests(SynchronousTestCase):
    """Music from a file: decoded once, each frame encoded once per law."""

    def test_rings_from_file(self) -> None:
        """The rings hold the file's frames, encoded in order."""
        path = Path(self.mktemp() + ".wav")
        pcm = tone_pcm(4)
        write_wav(path, pcm)
        moh = music_on_hold_from_config(
            Clock(), SimpleNamespace(enabled=True, file=str(path), max_listeners=3))
        assert isinstance(moh, MusicOnHold)
        self.assertEqual(moh.max_listeners, 3)
        frames = [pcm[i:i + 320] for i in range(0, len(pcm), 320)]
        self.assertEqual(len(moh.music), 4)
        self.assertEqual(list(moh.music.rings["PCMU"]), [ulaw_encode(f) for f in frames])
        self.assertEqual(list(moh.music.rings["PCMA"]), [alaw_encode(f) for f in frames])

    def test_disabled_and_bad_file(self) -> None:
        """Disabled: no service; an unusable file: C{ValueError} naming the key."""
        self.assertIsNone(music_on_hold_from_config(
            Clock(), SimpleNamespace(enabled=False, file="", max_listeners=3)))
        with self.assertRaises(ValueError) as caught:
            music_on_hold_from_config(
                Clock(), SimpleNamespace(enabled=True, file="/nonexistent.wav", max_listeners=3))
        self.assertTrue(str(caught.exception).startswith("media.moh.file: "))

    def test_generated_music_shared(self) -> None:
        """Two services on one clock share the generated rings."""
        clock = Clock()
        self.assertIs(HoldMusic.generated(clock).rings["PCMU"],
                      MusicOnHold(clock).music.rings["PCMU"])
