"""Sanity tests for the torture-test corpus manifest in L{tests.trial.sip.torture_corpus}.

These check the corpus is whole and the manifest agrees with the files on
disk; what a codec does with each message is for the codec's own tests.
"""

from __future__ import annotations

import re

from twisted.trial import unittest

from tests.trial.sip import torture_corpus
from tests.trial.sip.torture_corpus import CORPUS_DIR, KINDS, MESSAGES, load


class TortureCorpusTests(unittest.SynchronousTestCase):
    """The manifest lists every C{.dat} file exactly once, and each file is there."""

    def test_every_entry_has_a_non_empty_file(self) -> None:
        """Every manifest entry names an existing, non-empty C{.dat} file."""
        for message in MESSAGES:
            path = CORPUS_DIR / message.filename
            self.assertTrue(path.is_file(), f"{message.name}: no file {path}")
            self.assertGreater(path.stat().st_size, 0, f"{message.name}: empty file")

    def test_names_are_unique(self) -> None:
        """No two manifest entries share a name."""
        names = [message.name for message in MESSAGES]
        self.assertEqual(len(names), len(set(names)))

    def test_every_file_is_in_the_manifest(self) -> None:
        """Every C{.dat} file in the corpus directory has a manifest entry."""
        on_disk = {path.name for path in CORPUS_DIR.glob("*.dat")}
        listed = {message.filename for message in MESSAGES}
        self.assertEqual(on_disk - listed, set())
        self.assertEqual(listed - on_disk, set())

    def test_fields_are_well_formed(self) -> None:
        """Kinds are known, sections name RFC 4475 or 5118, titles and notes are one line."""
        section = re.compile(r"^RFC (4475 3(\.\d+)+|5118 4\.\d+)$")
        for message in MESSAGES:
            self.assertIn(message.kind, KINDS, message.name)
            self.assertRegex(message.section, section, message.name)
            for text in (message.title, message.note):
                self.assertTrue(text, message.name)
                self.assertNotIn("\n", text, message.name)

    def test_rfc5118_names_carry_the_prefix(self) -> None:
        """RFC 5118 files, and only they, are named with the C{ipv6-} prefix."""
        for message in MESSAGES:
            self.assertEqual(
                message.name.startswith(torture_corpus.IPV6_PREFIX),
                message.rfc == 5118,
                message.name,
            )

    def test_counts(self) -> None:
        """RFC 4475 section 3 has 49 messages and RFC 5118 section 4 has 12."""
        self.assertEqual(sum(m.rfc == 4475 for m in MESSAGES), 49)
        self.assertEqual(sum(m.rfc == 5118 for m in MESSAGES), 12)

    def test_load(self) -> None:
        """C{load} returns the file's exact bytes, by name or file name."""
        data = load("noreason")
        self.assertTrue(data.startswith(b"SIP/2.0 100 \r\n"))
        self.assertEqual(load("noreason.dat"), data)
        self.assertIn(b"\x00", load("intmeth"))
        self.assertRaises(KeyError, load, "no-such-message")

    def test_messages_by_kind(self) -> None:
        """C{messages(kind)} partitions the manifest and refuses unknown kinds."""
        total = sum(len(torture_corpus.messages(kind)) for kind in KINDS)
        self.assertEqual(total, len(MESSAGES))
        self.assertEqual(torture_corpus.messages(), MESSAGES)
        self.assertRaises(ValueError, torture_corpus.messages, "bogus")
