#!/usr/bin/env python3
"""Runs one benchmark command and writes what it printed into docs/benchmarks.md, between the
markers `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, stamped with the date and the commit:
the previous run's tables for that benchmark are replaced, everything else in the file stays.
The markers are appended at the end of the file the first time.

Usage: scripts/bench-record.py NAME COMMAND [ARG...]   (exits with the command's status)
"""
import datetime
import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    name, cmd = sys.argv[1], sys.argv[2:]
    run = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(run.stdout)
    if run.returncode != 0:
        print(f"bench-record: {' '.join(cmd)} failed ({run.returncode}); {DOC.name} unchanged",
              file=sys.stderr)
        return run.returncode
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                            text=True).stdout.strip() or "unknown"
    # The document itself changes with every recorded benchmark: not a local change of the code.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            f":!{DOC.relative_to(DOC.parent.parent)}"],
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n"
             f"Last `make bench` run: {when}, commit {commit}{' (with local changes)' if dirty else ''},"
             f" `{' '.join(pathlib.Path(c).name if i == 0 else c for i, c in enumerate(cmd))}`.\n\n"
             f"{run.stdout.strip()}\n"
             f"<!-- /bench:{name} -->")
    text = DOC.read_text()
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->",
                         re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n## Latest run: {name}\n\n{block}\n"
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
