"""RuntimeService: list the script runtimes and pre-build one (`skmaker runtimes ...`)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from services.control.runtimes import ControlRuntimes, RuntimeState
from skmaker.v1 import runtimes_pb2, runtimes_pb2_grpc


def runtime_to_pb(state: RuntimeState) -> runtimes_pb2.ScriptRuntime:
    """The wire form of one runtime."""
    return runtimes_pb2.ScriptRuntime(
        name=state.name,
        framework_version=state.framework_version,
        sagemaker_framework_version=state.sagemaker_framework_version,
        state=state.state,
        python=state.python,
        is_default=state.is_default,
    )


class RuntimeServicer(runtimes_pb2_grpc.RuntimeServiceServicer):
    """The operators' runtime API."""

    def __init__(self, runtimes: ControlRuntimes) -> None:
        """Serves `runtimes`."""
        self._runtimes = runtimes

    def ListRuntimes(
        self, request: runtimes_pb2.ListRuntimesRequest, context: grpc.ServicerContext
    ) -> runtimes_pb2.ListRuntimesResponse:
        """Every runtime that can be had, oldest first."""
        return runtimes_pb2.ListRuntimesResponse(
            runtimes=[runtime_to_pb(state) for state in self._runtimes.states()]
        )

    def BuildRuntime(
        self, request: runtimes_pb2.BuildRuntimeRequest, context: grpc.ServicerContext
    ) -> Iterator[runtimes_pb2.BuildRuntimeProgress]:
        """Builds the runtime asked for unless it is built, streaming its progress."""
        try:
            for line in self._runtimes.build_now(request.framework_version):
                yield runtimes_pb2.BuildRuntimeProgress(message=line)
        except RuntimeError as err:
            context.abort(grpc.StatusCode.INTERNAL, str(err))
        name = self._runtimes.resolve_name(request.framework_version)
        state = next(s for s in self._runtimes.states() if s.name == name)
        yield runtimes_pb2.BuildRuntimeProgress(
            message=f"{name}: {state.state}", runtime=runtime_to_pb(state), done=True
        )
