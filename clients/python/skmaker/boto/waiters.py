"""boto3's waiter shape over a describe call: poll until a success or failure state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from skmaker import errors as skmaker_errors
from skmaker.boto.errors import ClientError, WaiterError


class Waiter:
    """boto3's waiter shape: `wait(**kwargs)` polls until a success or failure state."""

    def __init__(
        self,
        name: str,
        describe: Callable[..., dict[str, Any]],
        status_key: str,
        success: frozenset[str],
        failure: frozenset[str],
        *,
        gone_is_success: bool = False,
    ) -> None:
        self.name = name
        self._describe = describe
        self._status_key = status_key
        self._success = success
        self._failure = failure
        self._gone_is_success = gone_is_success

    def wait(self, **kwargs: Any) -> None:
        """Polls the describe call with `kwargs` until success.

        `WaiterConfig` (`Delay` seconds, `MaxAttempts`) is honoured; the default polls for up
        to an hour, faster at first than boto3 (skmaker's resources change in seconds).

        Raises:
            WaiterError: on a failure state, or when the attempts run out.
        """
        config = dict(kwargs.pop("WaiterConfig", None) or {})
        delay_s = float(config.get("Delay", 2.0))
        max_attempts = int(config.get("MaxAttempts", 0)) or None
        deadline = time.monotonic() + 3600.0
        interval_s = min(0.1, delay_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._describe(**kwargs)
            except ClientError as err:
                if self._gone_is_success and isinstance(err, skmaker_errors.NotFound):
                    return
                raise
            status = response.get(self._status_key, "")
            if status in self._success:
                return
            if status in self._failure:
                reason = response.get("FailureReason", "")
                raise WaiterError(
                    self.name,
                    f"Waiter encountered a terminal failure state: {self._status_key} is "
                    f"{status}" + (f" ({reason})" if reason else ""),
                    response,
                )
            if (max_attempts and attempt >= max_attempts) or time.monotonic() > deadline:
                raise WaiterError(self.name, "Max attempts exceeded", response)
            time.sleep(interval_s)
            interval_s = min(delay_s, interval_s * 1.5)
