"""`python -m bot …` is the `livedesk` command."""

from bot.cli import main

raise SystemExit(main())
