"""What the command line offers, as plain values: `livedesk --help` shows them without loading the
modules they come from (pydantic, the settings, the store: most of a command's start-up).

Each is a copy of its source, kept equal by tests/test_choices.py: the platforms of the registry
(`bot.platforms.NAMES`), the webhook flavors (`bot.targets.FLAVORS`), the edit policies
(`storage.models.EditPolicy`) and two of the store's limits (`storage.values`).
"""

from __future__ import annotations

PLATFORM_NAMES: tuple[str, ...] = ("telegram", "discord", "slack", "terminal")
FLAVORS: tuple[str, ...] = ("slack", "mattermost", "teams")
EDIT_POLICIES: tuple[str, ...] = ("edit", "follow-up", "ignore")
MAX_PER_PAGE = 50
"""The most hits one search page holds."""
MIN_FEED_INTERVAL = 10.0
"""The shortest poll interval of a followed blog, in seconds."""
