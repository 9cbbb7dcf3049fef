"""The delivery rules, as pure values: what to do with a claimed delivery, and what an attempt meant.

`plan` decides, from the delivery, its post's version, the message this subscription last got for
the post and the platform's capabilities, whether to skip it, send a card or edit the message
already sent. `outcome` reads what the adapter returned or raised as sent, retry, dead, disable or
move. Neither looks at a clock, a store or a random number: the dispatcher (`bot.dispatcher`) passes
them in and carries the answer out, so the rules are tested as tables (tests/test_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.adapters.base import (
    Capabilities,
    InvalidPayload,
    PermanentError,
    RateLimited,
    TargetMoved,
    TransientError,
)
from bot.models import EditPolicy
from storage.codecs import UPDATED
from storage.values import DeliveryJob, SentRef

# --- what to do -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to send; the delivery is settled as skipped with this reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send a card: the post itself, or (`update`) an "Updated:" follow-up of an edited post."""

    update: bool = False


@dataclass(frozen=True, slots=True)
class Edit:
    """Edit the message already sent so that it shows the new text."""

    message_ref: str


Plan = Skip | Send | Edit

IGNORED = Skip("edit policy: ignore")
ALREADY_SENT = Skip("already sent this version")
SEND = Send()
FOLLOW_UP = Send(update=True)


def wants_last_sent(job: DeliveryJob) -> bool:
    """Whether `plan` needs the message this subscription last got for the post (an edit)."""
    return job.event == UPDATED and job.edit_policy != EditPolicy.IGNORE


def plan(job: DeliveryJob, post_version: int, last: SentRef | None, caps: Capabilities) -> Plan:
    """What to do with a claimed delivery of a post now at `post_version`; `last` is the message
    this subscription last got for the post (asked for only when `wants_last_sent`)."""
    if job.event != UPDATED:
        return SEND
    if job.edit_policy == EditPolicy.IGNORE:
        return IGNORED
    if last is not None and last.version >= post_version:
        return ALREADY_SENT
    if job.edit_policy == EditPolicy.EDIT and caps.can_edit and last is not None:
        return Edit(last.message_ref)
    return FOLLOW_UP


def refused_edit(error: BaseException) -> bool:
    """An edit the platform refuses for good (the message is gone or cannot be edited): the change
    goes out as a follow-up instead."""
    return isinstance(error, PermanentError | InvalidPayload)


# --- what it meant -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    reference: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again: at `until` (a rate limit's retry-after), or after a backoff when None."""

    attempts: int
    error: str
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Dead:
    """Given up: `max_attempts` were made, or (`refused`) the platform refuses the payload."""

    attempts: int
    error: str
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Disable:
    """The target refuses every delivery (the bot was removed, the hook deleted): disable its
    subscriptions; this delivery is dead."""

    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class Move:
    """The target moved (a Telegram group became a supergroup): its subscriptions follow."""

    new_address: str


Outcome = Sent | Retry | Dead | Disable | Move


def outcome(
    result: str | BaseException,
    attempts: int,
    *,
    max_attempts: int,
    now: float,
    send_timeout: float,
) -> Outcome:
    """What an attempt's result (the message reference, or what was raised) means, after `attempts`
    earlier attempts."""
    if isinstance(result, str):
        return Sent(result)
    made = attempts + 1
    until: float | None = None
    if isinstance(result, TargetMoved):
        return Move(result.new_address)
    if isinstance(result, PermanentError):
        return Disable(made, str(result) or type(result).__name__)
    if isinstance(result, InvalidPayload):
        return Dead(made, str(result) or "invalid payload", refused=True)
    if isinstance(result, RateLimited):
        error, until = str(result), now + result.retry_after
    elif isinstance(result, TransientError):
        error = str(result) or type(result).__name__
    elif isinstance(result, TimeoutError):
        error = f"no answer in {send_timeout:g}s"
    else:
        error = f"{type(result).__name__}: {result}"
    return retry(made, error, until, max_attempts=max_attempts)


def retry(attempts: int, error: str, until: float | None, *, max_attempts: int) -> Retry | Dead:
    """Attempt number `attempts` failed for a passing reason: again, unless it was the last."""
    if attempts >= max_attempts:
        return Dead(attempts, error)
    return Retry(attempts, error, until)


def backoff(attempts: int, base: float, most: float, jitter: float) -> float:
    """Seconds to wait before attempt `attempts + 1`: exponential, capped at `most`, times
    `jitter` (the dispatcher draws it between 0.5 and 1.0)."""
    return float(min(most, base * 2 ** (attempts - 1)) * jitter)
