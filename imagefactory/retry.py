"""One retry policy for everything that touches the network: source fetches, pulls and pushes,
the Debian bootstrap. Each caller says which failures are transient; the policy says how often
and how long to wait (exponential backoff), from the ``network_retries`` settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tenacity import Retrying

    from .config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff for transient network errors; tests pass tiny waits."""

    attempts: int = 4
    initial: float = 2.0
    maximum: float = 30.0
    timeout: float = 60.0  # per connection / read, where the caller can set one

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(attempts=settings.network_retries, initial=float(settings.network_retry_delay))

    def retrying(self, transient: Callable[[BaseException], bool]) -> Retrying:
        """A tenacity loop: retry while ``transient(error)``, then re-raise the last error."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential  # only when used

        return Retrying(stop=stop_after_attempt(max(1, self.attempts)),
                        wait=wait_exponential(multiplier=self.initial, max=self.maximum),
                        retry=retry_if_exception(transient), reraise=True)


__all__ = ["RetryPolicy"]
