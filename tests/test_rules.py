"""The delivery rules as tables: what a claimed delivery becomes, and what an attempt's result means."""

from __future__ import annotations

import pytest

from bot import rules
from bot.adapters.base import (
    Capabilities,
    DeliveryError,
    InvalidPayload,
    PermanentError,
    RateLimited,
    TargetMoved,
    TransientError,
)
from bot.models import EditPolicy, Target
from storage.codecs import CREATED, UPDATED
from storage.values import DeliveryJob, SentRef

EDITS = Capabilities(max_text=4096, markup="plain", can_edit=True)
NO_EDITS = Capabilities(max_text=4096, markup="plain", can_edit=False)


def _job(event: str = CREATED, policy: EditPolicy = EditPolicy.EDIT) -> DeliveryJob:
    return DeliveryJob(
        id=7,
        subscription_id=3,
        post_rowid=11,
        version=2,
        post_version=2,
        event=event,
        attempts=0,
        state="pending",
        subscription_state="active",
        target=Target(platform="terminal", address="demo"),
        source_id=None,
        query=None,
        edit_policy=policy,
    )


SENT_V1 = SentRef("msg-1", 1)
SENT_V2 = SentRef("msg-1", 2)


@pytest.mark.parametrize(
    ("event", "policy", "last", "caps", "expected"),
    [
        # A new post is sent, whatever the policy and whatever was sent before.
        (CREATED, EditPolicy.EDIT, None, EDITS, rules.Send()),
        (CREATED, EditPolicy.IGNORE, None, EDITS, rules.Send()),
        (CREATED, EditPolicy.FOLLOW_UP, SENT_V1, EDITS, rules.Send()),
        # An edit: ignored by policy, skipped when that version went out, else edit or follow up.
        (UPDATED, EditPolicy.IGNORE, SENT_V1, EDITS, rules.Skip("edit policy: ignore")),
        (UPDATED, EditPolicy.EDIT, SENT_V2, EDITS, rules.Skip("already sent this version")),
        (UPDATED, EditPolicy.EDIT, SentRef("msg-1", 5), EDITS, rules.ALREADY_SENT),
        (UPDATED, EditPolicy.EDIT, SENT_V1, EDITS, rules.Edit("msg-1")),
        (UPDATED, EditPolicy.EDIT, SENT_V1, NO_EDITS, rules.Send(update=True)),
        (UPDATED, EditPolicy.EDIT, None, EDITS, rules.Send(update=True)),
        (UPDATED, EditPolicy.FOLLOW_UP, SENT_V1, EDITS, rules.Send(update=True)),
        (UPDATED, EditPolicy.FOLLOW_UP, None, NO_EDITS, rules.Send(update=True)),
    ],
)
def test_plan(
    event: str,
    policy: EditPolicy,
    last: SentRef | None,
    caps: Capabilities,
    expected: rules.Plan,
) -> None:
    assert rules.plan(_job(event, policy), 2, last, caps) == expected


@pytest.mark.parametrize(
    ("event", "policy", "wanted"),
    [
        (CREATED, EditPolicy.EDIT, False),
        (UPDATED, EditPolicy.IGNORE, False),
        (UPDATED, EditPolicy.EDIT, True),
        (UPDATED, EditPolicy.FOLLOW_UP, True),
    ],
)
def test_the_last_message_is_asked_for_only_when_an_edit_needs_it(
    event: str, policy: EditPolicy, wanted: bool
) -> None:
    assert rules.wants_last_sent(_job(event, policy)) is wanted


NOW = 1000.0


@pytest.mark.parametrize(
    ("result", "attempts", "expected"),
    [
        ("ref-9", 0, rules.Sent("ref-9")),
        ("ref-9", 4, rules.Sent("ref-9")),
        (TargetMoved("-100200"), 0, rules.Move("-100200")),
        (PermanentError("bot was blocked"), 0, rules.Disable(1, "bot was blocked")),
        (PermanentError(), 2, rules.Disable(3, "PermanentError")),
        (InvalidPayload("invalid_blocks"), 0, rules.Dead(1, "invalid_blocks", refused=True)),
        (InvalidPayload(), 4, rules.Dead(5, "invalid payload", refused=True)),
        (TransientError("502 bad gateway"), 0, rules.Retry(1, "502 bad gateway")),
        (TransientError(), 1, rules.Retry(2, "TransientError")),
        (TransientError("502 bad gateway"), 4, rules.Dead(5, "502 bad gateway")),
        (TimeoutError(), 0, rules.Retry(1, "no answer in 60s")),
        (TimeoutError(), 4, rules.Dead(5, "no answer in 60s")),
        (RateLimited(3.5), 0, rules.Retry(1, "rate limited, retry after 3.5s", NOW + 3.5)),
        (RateLimited(2, global_=True), 4, rules.Dead(5, "rate limited, retry after 2s")),
        (ValueError("boom"), 0, rules.Retry(1, "ValueError: boom")),
        (DeliveryError("odd"), 0, rules.Retry(1, "DeliveryError: odd")),
        (KeyError("x"), 4, rules.Dead(5, "KeyError: 'x'")),
    ],
)
def test_outcome(result: str | BaseException, attempts: int, expected: rules.Outcome) -> None:
    got = rules.outcome(result, attempts, max_attempts=5, now=NOW, send_timeout=60.0)
    assert got == expected


@pytest.mark.parametrize(
    ("attempts", "jitter", "seconds"),
    [(1, 1.0, 2.0), (2, 1.0, 4.0), (3, 0.5, 4.0), (6, 1.0, 60.0), (20, 0.75, 45.0)],
)
def test_backoff_doubles_up_to_its_cap(attempts: int, jitter: float, seconds: float) -> None:
    assert rules.backoff(attempts, 2.0, 60.0, jitter) == seconds


def test_a_refused_edit_becomes_a_follow_up_and_nothing_else_does() -> None:
    assert rules.refused_edit(PermanentError("message to edit not found"))
    assert rules.refused_edit(InvalidPayload("message can't be edited"))
    assert not rules.refused_edit(TransientError("timeout"))
    assert not rules.refused_edit(RateLimited(1))
