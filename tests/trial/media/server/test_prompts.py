"""Tests for L{media.server.prompts}, the language rules and the prompt generator."""

from __future__ import annotations

import datetime
import importlib.util
import json
import struct
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.languages import LANGUAGES, get_language
from media.server.pcm import FRAME_BYTES
from media.server.prompts import MissingPrompt, Player, PromptSet
from media.server.wav import Audio, WavError, read_wav, write_wav
from tests.trial.integration.sipp import require_program

EN = LANGUAGES["en"]
DE = LANGUAGES["de"]
ROOT = Path(__file__).resolve().parents[4]


class EnglishTests(SynchronousTestCase):
    """The English rules, value by value."""

    def test_numbers(self) -> None:
        """Tens and units are spliced; British "and" after hundreds and thousands."""
        cases = {
            0: ["0"], 7: ["7"], 19: ["19"], 20: ["20"], 21: ["20", "1"], 99: ["90", "9"],
            100: ["1", "hundred"], 105: ["1", "hundred", "and", "5"],
            342: ["3", "hundred", "and", "40", "2"], 1000: ["1", "thousand"],
            1005: ["1", "thousand", "and", "5"], 1200: ["1", "thousand", "2", "hundred"],
            21_000: ["20", "1", "thousand"],
            1_000_021: ["1", "million", "and", "20", "1"],
            2_000_000_000: ["2", "billion"], -3: ["minus", "3"],
        }
        for n, expected in cases.items():
            self.assertEqual(EN.number(n), expected, n)

    def test_number_limits(self) -> None:
        """A trillion and more, floats and bools are refused."""
        self.assertRaises(ValueError, EN.number, 10**12)
        self.assertRaises(TypeError, EN.number, 1.5)
        self.assertRaises(TypeError, EN.number, True)

    def test_money(self) -> None:
        """Major and minor units agree in number; zero reads "zero dollars"."""
        cases = [
            ("2.50", "USD", ["2", "dollars", "and", "50", "cents"]),
            ("1", "USD", ["1", "dollar"]), ("0.01", "EUR", ["1", "cent"]),
            ("0", "USD", ["0", "dollars"]), ("0.05", "GBP", ["5", "pence"]),
            ("1.01", "GBP", ["1", "pound", "and", "1", "penny"]),
            ("21", "eur", ["20", "1", "euros"]),
            ("-3.999", "USD", ["minus", "3", "dollars", "and", "90", "9", "cents"]),
            ("-0.001", "USD", ["0", "dollars"]),
        ]
        for amount, currency, expected in cases:
            self.assertEqual(EN.money(Decimal(amount), currency), expected, amount)

    def test_money_refusals(self) -> None:
        """Unknown currencies, floats and infinities are refused clearly."""
        error = self.assertRaises(ValueError, EN.money, Decimal(1), "XYZ")
        self.assertIn("XYZ", str(error))
        self.assertIn("EUR", str(error))
        self.assertRaises(TypeError, EN.money, 1.5, "USD")
        self.assertRaises(ValueError, EN.money, Decimal("Infinity"), "USD")

    def test_durations(self) -> None:
        """N minutes and S seconds; singulars; hours optional."""
        self.assertEqual(EN.duration(0), ["0", "seconds"])
        self.assertEqual(EN.duration(1), ["1", "second"])
        self.assertEqual(EN.duration(90), ["1", "minute", "and", "30", "seconds"])
        self.assertEqual(EN.duration(125), ["2", "minutes", "and", "5", "seconds"])
        self.assertEqual(EN.duration(120), ["2", "minutes"])
        self.assertEqual(EN.duration(3661),
                         ["1", "hour", "1", "minute", "and", "1", "second"])
        self.assertEqual(EN.duration(7500, hours=False),
                         ["1", "hundred", "and", "20", "5", "minutes"])
        self.assertEqual(EN.duration(datetime.timedelta(minutes=2)), ["2", "minutes"])
        self.assertRaises(ValueError, EN.duration, -1)

    def test_dates(self) -> None:
        """Month, ordinal day, year read in pairs."""
        self.assertEqual(EN.date(datetime.date(2024, 3, 21)),
                         ["month-3", "20", "ord-1", "20", "20", "4"])
        self.assertEqual(EN.date(datetime.date(1905, 1, 1)), ["month-1", "ord-1", "19", "oh", "5"])
        self.assertEqual(EN.date(datetime.date(1900, 12, 30)),
                         ["month-12", "ord-30", "19", "hundred"])
        self.assertEqual(EN.date(datetime.date(2005, 7, 12)),
                         ["month-7", "ord-12", "2", "thousand", "and", "5"])
        self.assertEqual(EN.year(3000), ["3", "thousand"])

    def test_digits(self) -> None:
        """Digit strings are read one digit at a time; anything else is refused."""
        self.assertEqual(EN.digits("1009"), ["1", "0", "0", "9"])
        self.assertRaises(ValueError, EN.digits, "12a")
        self.assertRaises(ValueError, EN.digits, "")


class GermanTests(SynchronousTestCase):
    """The German rules: whole-word numbers to 99, eins/ein/eine, dative dates."""

    def test_numbers(self) -> None:
        """Standalone numbers: eins at the end, ein before hundert/tausend."""
        cases = {
            1: ["1"], 21: ["21"], 100: ["ein", "hundert"], 101: ["ein", "hundert", "1"],
            200: ["2", "hundert"], 1001: ["ein", "tausend", "1"],
            1999: ["ein", "tausend", "9", "hundert", "99"], 21_000: ["21", "tausend"],
            101_000: ["ein", "hundert", "ein", "tausend"],
            1_000_000: ["eine", "million"], 3_000_000: ["3", "millionen"],
            101_000_000: ["ein", "hundert", "eine", "millionen"],
            1_000_000_000: ["eine", "milliarde"], -1: ["minus", "1"],
        }
        for n, expected in cases.items():
            self.assertEqual(DE.number(n), expected, n)

    def test_gender_of_one(self) -> None:
        """Before a noun one is ein (m, n) or eine (f); 21 never changes."""
        self.assertEqual(DE.number(1, "m"), ["ein"])
        self.assertEqual(DE.number(1, "f"), ["eine"])
        self.assertEqual(DE.number(101, "f"), ["ein", "hundert", "eine"])
        self.assertEqual(DE.number(21, "f"), ["21"])

    def test_money(self) -> None:
        """Currency nouns do not take a plural, except Penny/Pence."""
        self.assertEqual(DE.money(Decimal("2.50"), "EUR"), ["2", "euro", "und", "50", "cent"])
        self.assertEqual(DE.money(Decimal("1.01"), "EUR"), ["ein", "euro", "und", "ein", "cent"])
        self.assertEqual(DE.money(Decimal("1"), "GBP"), ["ein", "pfund"])
        self.assertEqual(DE.money(Decimal("0.02"), "GBP"), ["2", "pence"])
        self.assertEqual(DE.money(Decimal("0"), "USD"), ["0", "dollar"])

    def test_durations(self) -> None:
        """Feminine units: eine Minute, zwei Minuten; und before the last part."""
        self.assertEqual(DE.duration(90), ["eine", "minute", "und", "30", "sekunden"])
        self.assertEqual(DE.duration(61), ["eine", "minute", "und", "eine", "sekunde"])
        self.assertEqual(DE.duration(7200), ["2", "stunden"])
        self.assertEqual(DE.duration(0), ["0", "sekunden"])

    def test_dates(self) -> None:
        """Dative ordinal, month, year (hundreds before 2000)."""
        self.assertEqual(DE.date(datetime.date(2024, 3, 1)),
                         ["ord-1", "month-3", "2", "tausend", "24"])
        self.assertEqual(DE.date(datetime.date(1999, 12, 31)),
                         ["ord-31", "month-12", "19", "hundert", "99"])
        self.assertEqual(DE.year(1900), ["19", "hundert"])

    def test_words(self) -> None:
        """The catalogue spells compound numbers and ordinals correctly."""
        self.assertEqual(DE.prompts["21"], "einundzwanzig")
        self.assertEqual(DE.prompts["37"], "siebenunddreißig")
        self.assertEqual(DE.prompts["ord-7"], "siebten")
        self.assertEqual(DE.prompts["ord-31"], "einunddreißigsten")
        self.assertEqual(DE.prompts["1"], "eins")


class CatalogueTests(SynchronousTestCase):
    """Every name a rule returns has a prompt in its language's catalogue."""

    def assertCovered(self, names: list[str], language) -> None:
        """All C{names} are prompts of C{language}."""
        missing = [name for name in names if name not in language.prompts]
        self.assertEqual(missing, [], names)

    @settings(max_examples=200)
    @given(st.integers(-(10**12) + 1, 10**12 - 1), st.sampled_from(sorted(LANGUAGES)))
    def test_numbers_covered(self, n: int, code: str) -> None:
        """Numbers."""
        self.assertCovered(LANGUAGES[code].number(n), LANGUAGES[code])

    @settings(max_examples=200)
    @given(st.decimals(min_value=-10**9, max_value=10**9, places=4),
           st.sampled_from(["EUR", "USD", "GBP"]), st.sampled_from(sorted(LANGUAGES)))
    def test_money_covered(self, amount: Decimal, currency: str, code: str) -> None:
        """Money."""
        self.assertCovered(LANGUAGES[code].money(amount, currency), LANGUAGES[code])

    @settings(max_examples=200)
    @given(st.integers(0, 10**7), st.booleans(), st.sampled_from(sorted(LANGUAGES)))
    def test_durations_covered(self, seconds: int, hours: bool, code: str) -> None:
        """Durations."""
        self.assertCovered(LANGUAGES[code].duration(seconds, hours=hours), LANGUAGES[code])

    @settings(max_examples=200)
    @given(st.dates(), st.sampled_from(sorted(LANGUAGES)))
    def test_dates_covered(self, day: datetime.date, code: str) -> None:
        """Dates."""
        self.assertCovered(LANGUAGES[code].date(day), LANGUAGES[code])

    def test_names_are_file_safe(self) -> None:
        """Every catalogue name is a valid prompt file name."""
        for language in LANGUAGES.values():
            prompts = PromptSet(Path("/nonexistent"), language)
            for name in language.prompts:
                prompts.path(name)

    def test_unknown_language(self) -> None:
        """An unknown code names the known ones."""
        error = self.assertRaises(KeyError, get_language, "xx")
        self.assertIn("de, en", str(error))


def tone_pcm(value: int, samples: int) -> bytes:
    """C{samples} samples all equal to C{value}."""
    return struct.pack(f"<{samples}h", *[value] * samples)


class PromptSetTests(SynchronousTestCase):
    """Loading prompts from a directory of (synthetic) WAV files."""

    def setUp(self) -> None:
        """A prompt root with an English set of three prompts."""
        self.root = Path(self.mktemp())
        (self.root / "en").mkdir(parents=True)
        write_wav(self.root / "en" / "1.wav", tone_pcm(100, 100))
        write_wav(self.root / "en" / "minute.wav", tone_pcm(200, 300), channels=2)
        (self.root / "en" / "bad.wav").write_bytes(b"not a wav")
        self.prompts = PromptSet.open(self.root, "en")

    def test_sequences_use_the_language(self) -> None:
        """The set delegates to its language."""
        self.assertEqual(self.prompts.code, "en")
        self.assertEqual(self.prompts.sequence_number(21), ["20", "1"])
        self.assertEqual(self.prompts.duration(60), ["1", "minute"])
        self.assertEqual(self.prompts.money(Decimal("1"), "USD"), ["1", "dollar"])
        self.assertEqual(self.prompts.date(datetime.date(2020, 1, 2))[:2], ["month-1", "ord-2"])
        self.assertEqual(self.prompts.digits("42"), ["4", "2"])

    def test_audio_cached_and_mono(self) -> None:
        """Prompts are decoded once; stereo files become mono."""
        first = self.prompts.audio("1")
        self.assertIs(self.prompts.audio("1"), first)
        self.assertEqual(self.prompts.audio("minute"), Audio(tone_pcm(200, 150)))

    def test_missing_and_bad(self) -> None:
        """Missing, unreadable and path-like names raise MissingPrompt."""
        self.assertIn("missing", str(self.assertRaises(MissingPrompt, self.prompts.audio, "2")))
        self.assertIn("cannot be used",
                      str(self.assertRaises(MissingPrompt, self.prompts.audio, "bad")))
        self.assertRaises(MissingPrompt, self.prompts.audio, "../en/1")
        self.assertRaises(MissingPrompt, self.prompts.audio, "A")
        missing = self.prompts.missing()
        self.assertNotIn("1", missing)
        self.assertIn("hundred", missing)
        self.assertRaises(MissingPrompt, self.prompts.preload)

    def test_open_errors(self) -> None:
        """A language without rules, or without a directory, fails to open."""
        self.assertRaises(KeyError, PromptSet.open, self.root, "xx")
        error = self.assertRaises(MissingPrompt, PromptSet.open, self.root, "de")
        self.assertIn("make prompts", str(error))


class PlayerTests(SynchronousTestCase):
    """Playing prompts as 20 ms frames."""

    def setUp(self) -> None:
        """Prompts of 100 and 300 samples."""
        self.root = Path(self.mktemp())
        (self.root / "en").mkdir(parents=True)
        write_wav(self.root / "en" / "a.wav", tone_pcm(1, 100))
        write_wav(self.root / "en" / "b.wav", tone_pcm(2, 300))
        self.prompts = PromptSet.open(self.root, "en")

    def test_joined_and_padded(self) -> None:
        """Prompts are joined sample to sample; only the last frame is padded."""
        player = Player(["a", "b", Audio(tone_pcm(3, 10))], self.prompts)
        self.assertEqual(player.total_ms, 51)
        frames = list(player)
        self.assertEqual([len(frame) for frame in frames], [FRAME_BYTES] * 3)
        joined = tone_pcm(1, 100) + tone_pcm(2, 300) + tone_pcm(3, 10)
        self.assertEqual(b"".join(frames), joined + bytes(3 * FRAME_BYTES - len(joined)))
        self.assertEqual((player.stopped, player.played_ms), ("finished", 60))
        self.assertIsNone(player.next_frame())

    def test_barge_in_callback(self) -> None:
        """The interrupt callback stops the player before the next frame."""
        digits: list[str] = []
        player = Player(["b", "b", "b"], self.prompts, interrupt=lambda: bool(digits))
        self.assertIsNotNone(player.next_frame())
        self.assertIsNotNone(player.next_frame())
        digits.append("5")
        self.assertIsNone(player.next_frame())
        self.assertEqual((player.stopped, player.played_ms), ("interrupted", 40))

    def test_stop(self) -> None:
        """stop() ends playback with its reason, once."""
        player = Player(["b"], self.prompts)
        player.stop("hangup")
        player.stop("again")
        self.assertEqual(list(player), [])
        self.assertEqual(player.stopped, "hangup")

    def test_missing_fails_up_front(self) -> None:
        """A missing prompt fails when the player is built, before any audio."""
        self.assertRaises(MissingPrompt, Player, ["a", "zzz"], self.prompts)
        self.assertRaises(MissingPrompt, Player, ["a"])
        self.assertRaises(WavError, Player, [Audio(b"\0\0", rate=16000)])

    def test_empty(self) -> None:
        """Nothing to play finishes at once."""
        player = Player([], self.prompts)
        self.assertIsNone(player.next_frame())
        self.assertEqual(player.stopped, "finished")


def load_generator():
    """Import tools/make_prompts.py (tools is not a package)."""
    spec = importlib.util.spec_from_file_location("make_prompts", ROOT / "tools" /
                                                  "make_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GeneratorTests(SynchronousTestCase):
    """tools/make_prompts.py with the real espeak-ng (skipped without it on a
    laptop, a failure under CI=true)."""

    def setUp(self) -> None:
        """Find espeak-ng and load the generator."""
        self.espeak = require_program("espeak-ng", "espeak-ng")
        self.generator = load_generator()
        self.out = Path(self.mktemp())

    def test_generates_playable_prompts(self) -> None:
        """Generated prompts are 8 kHz mono speech, trimmed and normalised, in
        both languages, and a second run remakes nothing."""
        for code, names in (("en", {"20", "minutes"}), ("de", {"21", "ord-3"})):
            made = self.generator.generate(LANGUAGES[code], self.out, espeak=self.espeak,
                                           only=names)
            self.assertEqual(sorted(made), sorted(names))
            for name in names:
                audio = read_wav(self.out / code / f"{name}.wav")
                self.assertEqual((audio.rate, audio.channels), (8000, 1))
                self.assertTrue(150 < audio.duration_ms < 2000, audio.duration_ms)
                values = struct.unpack(f"<{audio.sample_count}h", audio.pcm)
                self.assertEqual(max(abs(v) for v in values), self.generator.PEAK)
            manifest = json.loads((self.out / code / "manifest.json").read_text())
            self.assertEqual(set(manifest), names)
            again = self.generator.generate(LANGUAGES[code], self.out, espeak=self.espeak,
                                            only=names)
            self.assertEqual(again, [])
        prompts = PromptSet.open(self.out, "en")
        frames = list(Player(prompts.duration(1200)[:2], prompts))
        self.assertGreater(len(frames), 10)

    def test_changed_text_is_remade(self) -> None:
        """A manifest entry that no longer matches the words is regenerated."""
        self.generator.generate(LANGUAGES["en"], self.out, espeak=self.espeak, only={"7"})
        manifest_path = self.out / "en" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["7"]["text"] = "eight"
        manifest_path.write_text(json.dumps(manifest))
        made = self.generator.generate(LANGUAGES["en"], self.out, espeak=self.espeak, only={"7"})
        self.assertEqual(made, ["7"])

    def test_unknown_name_and_main(self) -> None:
        """An unknown prompt name is an error; main() reports it with status 1."""
        self.assertRaises(KeyError, self.generator.generate, LANGUAGES["en"], self.out,
                          espeak=self.espeak, only={"nope"})
        status = self.generator.main(["--out", str(self.out), "--lang", "en", "--only", "nope"])
        self.assertEqual(status, 1)
        status = self.generator.main(["--out", str(self.out), "--lang", "en", "--only", "0",
                                      "--espeak", "no-such-espeak-program"])
        self.assertEqual(status, 2)
        status = self.generator.main(["--out", str(self.out), "--lang", "en", "--only", "0"])
        self.assertEqual(status, 0)
        self.assertTrue((self.out / "en" / "0.wav").is_file())
