"""The command line's plain copies (bot.choices) stay equal to what they copy: `livedesk --help`
shows them without loading the registry, the settings or the store."""

from __future__ import annotations

import pytest

from bot import choices
from bot.platforms import NAMES
from bot.targets import FLAVORS
from storage import values
from storage.models import EditPolicy


@pytest.mark.parametrize(
    ("copy", "source"),
    [
        (choices.PLATFORM_NAMES, NAMES),
        (choices.FLAVORS, FLAVORS),
        (choices.EDIT_POLICIES, tuple(policy.value for policy in EditPolicy)),
        (choices.MAX_PER_PAGE, values.MAX_PER_PAGE),
        (choices.MIN_FEED_INTERVAL, values.MIN_FEED_INTERVAL),
    ],
    ids=["platforms", "flavors", "edit policies", "search page size", "poll interval"],
)
def test_the_command_line_offers_what_the_code_accepts(copy: object, source: object) -> None:
    assert copy == source
