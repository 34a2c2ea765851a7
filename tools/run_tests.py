"""Run the trial suite and end with the plain line ``N passed, M failed``.

Trial's own summary (``PASSED (successes=3, skips=1)`` or
``FAILED (failures=1, errors=2, successes=40)``) is read back and turned
into one line that CI can count.  The exit status is non-zero when any test
failed or errored, and also when no test ran at all.
"""

from __future__ import annotations

import re
import subprocess
import sys

SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<counts>[^)]*)\)\s*$")


def main(argv: list[str]) -> int:
    """Run trial with C{argv} as its arguments and print the count line."""
    command = [sys.executable, "-m", "twisted.trial", *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    last_summary = None
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if SUMMARY.match(line.strip()):
            last_summary = line.strip()
    code = process.wait()
    counts = {"successes": 0, "failures": 0, "errors": 0, "skips": 0,
              "expectedFailures": 0, "unexpectedSuccesses": 0}
    if last_summary is not None:
        for part in SUMMARY.match(last_summary).group("counts").split(","):
            key, _, value = part.strip().partition("=")
            if key in counts and value.isdigit():
                counts[key] = int(value)
    passed = counts["successes"] + counts["expectedFailures"]
    failed = counts["failures"] + counts["errors"] + counts["unexpectedSuccesses"]
    skipped = counts["skips"]
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if passed + failed == 0:
        print("no test ran", file=sys.stderr)
        return 1
    if failed or code != 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
