"""Generate the prompt sets with espeak-ng: ``make prompts``.

For every language in ``media.server.languages`` this speaks each prompt's
words with espeak-ng (Debian package ``espeak-ng``), converts the result
from espeak-ng's 22050 Hz to the media server's 8000 Hz 16-bit mono with
``media.server.resample``, trims the silence around the words (keeping
20 ms), normalises the peak to -6 dBFS (headroom for mixing) and writes
``<out>/<lang>/<name>.wav``.

A ``manifest.json`` in each language directory records the voice, speed
and words each file was made from; a run regenerates only the files whose
entry changed or whose file is missing, so ``make prompts`` is cheap when
nothing changed.  Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written prompt.

Usage: ``python tools/make_prompts.py [--out prompts] [--lang en] [--only 1,20]
[--force] [--espeak espeak-ng] [--speed 150]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

from media.server.languages import LANGUAGES, Language
from media.server.pcm import RATE, saturate, to_bytes, to_samples
from media.server.resample import resample
from media.server.wav import read_wav, write_wav

#: Words per minute for espeak-ng: a little slower than its default, for the phone.
SPEED = 150
#: Peak level after normalisation (-6 dBFS).
PEAK = 16384
#: Samples below this magnitude count as silence when trimming.
SILENCE = 256
#: Silence kept before and after the words (20 ms).
MARGIN = RATE // 50
#: Seconds one espeak-ng run may take.
TIMEOUT = 30


def speak(espeak: str, voice: str, speed: int, text: str, workdir: Path) -> bytes:
    """Speak C{text} with espeak-ng and return it as 8 kHz 16-bit mono PCM."""
    target = workdir / "speech.wav"
    subprocess.run(
        [espeak, "-v", voice, "-s", str(speed), "-z", "-b", "1", "-w", str(target), text],
        check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    audio = read_wav(target, rate=None).mono()
    return resample(audio.pcm, audio.rate, RATE)


def shape(pcm: bytes) -> bytes:
    """Trim the silence around C{pcm} (keeping L{MARGIN}) and normalise its peak."""
    samples = to_samples(pcm)
    loud = [i for i, value in enumerate(samples) if abs(value) >= SILENCE]
    if not loud:
        return to_bytes(array("h", bytes(2 * MARGIN)))
    start = max(0, loud[0] - MARGIN)
    end = min(len(samples), loud[-1] + 1 + MARGIN)
    samples = samples[start:end]
    peak = max(abs(value) for value in samples)
    return to_bytes(saturate([value * PEAK // peak for value in samples]))


def generate(language: Language, out: Path, *, espeak: str, speed: int = SPEED,
             only: set[str] | None = None, force: bool = False) -> list[str]:
    """Write the prompts of C{language} under C{out}; return the names made.

    @param only: restrict the run to these prompt names.
    @param force: regenerate even the files the manifest says are current.
    @raise KeyError: for a name in C{only} that the language does not have.
    """
    directory = out / language.code
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = {}
    names = sorted(language.prompts)
    if only is not None:
        unknown = only - set(names)
        if unknown:
            raise KeyError(f"{language.code} has no prompt {', '.join(sorted(unknown))}")
        names = [name for name in names if name in only]
    made = []
    with tempfile.TemporaryDirectory(prefix="make-prompts-") as work:
        for name in names:
            entry = {"voice": language.voice, "speed": speed, "text": language.prompts[name]}
            target = directory / f"{name}.wav"
            if not force and manifest.get(name) == entry and target.is_file():
                continue
            pcm = shape(speak(espeak, language.voice, speed, entry["text"], Path(work)))
            partial = directory / f".{name}.wav.partial"
            write_wav(partial, pcm)
            os.replace(partial, target)
            manifest[name] = entry
            made.append(name)
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True)
                             + "\n", encoding="utf-8")
    return made


def main(argv: list[str] | None = None) -> int:
    """Parse C{argv}, generate, print one line per language; return the exit status."""
    parser = argparse.ArgumentParser(description="Generate the prompt WAVs with espeak-ng.")
    parser.add_argument("--out", type=Path, default=Path("prompts"), help="prompt root")
    parser.add_argument("--lang", action="append", choices=sorted(LANGUAGES),
                        help="a language to generate (default: all)")
    parser.add_argument("--only", help="comma-separated prompt names to generate")
    parser.add_argument("--force", action="store_true", help="regenerate every file")
    parser.add_argument("--espeak", default="espeak-ng", help="the espeak-ng program")
    parser.add_argument("--speed", type=int, default=SPEED, help="words per minute")
    args = parser.parse_args(argv)
    espeak = shutil.which(args.espeak)
    if espeak is None:
        print(f"make_prompts: {args.espeak} not found; install it with: "
              "apt-get install espeak-ng", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    try:
        for code in args.lang or sorted(LANGUAGES):
            made = generate(LANGUAGES[code], args.out, espeak=espeak, speed=args.speed,
                            only=only, force=args.force)
            print(f"{code}: {len(made)} prompt(s) written to {args.out / code}")
    except (KeyError, subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", None) or b""
        print(f"make_prompts: {error} {detail.decode(errors='replace').strip()}".rstrip(),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
