"""`python -m bot …` and the `livedesk` console script: bot.cli's main.

A Ctrl-C while the command is still loading (its first tenth of a second) ends it with one line
and exit code 130, as one later does, not with a traceback from whatever module was importing."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # bot.cli's too: not imported from there, which is what may be interrupted


def main() -> int:
    try:
        from bot.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
