"""Script-runtime calls of a `Session`: which scikit-learn versions the server can run.

Each runtime is one scikit-learn version (`framework_version` selects it); the server builds
one on its first use, or ahead of time through `build_runtime` (`skmaker runtimes build`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from skmaker.errors import error_for_rpc
from skmaker.v1 import runtimes_pb2, runtimes_pb2_grpc

# A build takes minutes (wheels, a virtual environment, the worker code).
BUILD_TIMEOUT_S = 3600.0


def runtime_description(runtime: runtimes_pb2.ScriptRuntime) -> dict[str, Any]:
    """One runtime as a dict (`Name`, `FrameworkVersion`, `SageMakerFrameworkVersion`,
    `State`, `Python`, `IsDefault`)."""
    return {
        "Name": runtime.name,
        "FrameworkVersion": runtime.framework_version,
        "SageMakerFrameworkVersion": runtime.sagemaker_framework_version,
        "State": runtime.state,
        "Python": runtime.python,
        "IsDefault": runtime.is_default,
    }


class RuntimeCalls:
    """Runtime calls of a `Session`; see that class for the connection settings."""

    # Provided by Session.
    _rpc: Callable[..., Any]
    _metadata: tuple[tuple[str, str], ...]

    def _init_runtimes(self, channel: grpc.Channel) -> None:
        """Binds the RuntimeService stub."""
        self._runtimes = runtimes_pb2_grpc.RuntimeServiceStub(channel)

    def list_runtimes(self) -> list[dict[str, Any]]:
        """Every runtime the server can run, oldest first (see `runtime_description`)."""
        response = self._rpc(
            self._runtimes.ListRuntimes, runtimes_pb2.ListRuntimesRequest(), idempotent=True
        )
        return [runtime_description(runtime) for runtime in response.runtimes]

    def build_runtime(self, framework_version: str = "") -> Iterator[str]:
        """Builds the runtime `framework_version` selects ("1.2-1", "1.2" or "sklearn-1.2";
        empty: the newest) unless it is built; yields its progress lines as they come.

        Raises:
            InvalidArgument: the server has no runtime for that version.
            InternalError: a build step failed.
        """
        request = runtimes_pb2.BuildRuntimeRequest(framework_version=framework_version)
        try:
            for progress in self._runtimes.BuildRuntime(
                request, timeout=BUILD_TIMEOUT_S, metadata=self._metadata
            ):
                yield progress.message
        except grpc.RpcError as err:
            raise error_for_rpc(err) from None
