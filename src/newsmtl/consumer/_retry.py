"""Retry with exponential backoff for transient downstream errors."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from newsmtl.consumer._kafka import is_transient

__all__ = ["retry_transient"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    initial_backoff_s: float,
    max_backoff_s: float,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """Await ``operation()`` until it succeeds, backing off after each transient error.

    Transient errors (see :func:`~newsmtl.consumer.is_transient`) are retried forever: a batch is
    never skipped because a broker or Redis was briefly away. Any other error is raised at once.
    Cancellation (shutdown past its grace period) stops the retries. ``on_error`` sees every
    failure, transient or not (metrics).
    """
    backoff = initial_backoff_s
    attempt = 0
    while True:
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            if not is_transient(exc):
                raise
            attempt += 1
            # Full jitter keeps replicas that failed together from retrying in lock-step.
            delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - not cryptographic
            log.warning(
                "%s failed (attempt %d, %s: %s); retrying in %.2f s",
                what,
                attempt,
                type(exc).__name__,
                exc,
                delay,
                extra={"attempt": attempt, "error_type": type(exc).__name__},
            )
            await asyncio.sleep(delay)
            backoff = min(max_backoff_s, backoff * 2)
