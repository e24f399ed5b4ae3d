"""`Predictor` and `SKLearnPredictor`: call a deployed endpoint as SageMaker's classes do.

    predictor = SKLearnPredictor("my-endpoint")    # numpy in, numpy out (what deploy() returns)
    predictor.predict(test_X.values)               # -> array([0, 2, 1, ...])
    raw = Predictor("my-endpoint", serializer=CSVSerializer())   # bytes out, the handler's
    raw.predict("5.1,3.5,1.4,0.2")                               # default accept -> b"[0]"
    predictor.delete_endpoint(); predictor.delete_model()

`predict` serializes the data (the serializer's CONTENT_TYPE becomes the request's content
type), asks for the deserializer's ACCEPT, and sends the call straight to the endpoint's
replicas, balanced per request (see `skmaker.routing`); the control only tells where they are.
Calls have a 60 s deadline; only UNAVAILABLE is retried.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from skmaker.autoscaling import AutoScalingPolicy
from skmaker.deserializers import BaseDeserializer, BytesDeserializer, NumpyDeserializer
from skmaker.errors import NotFound
from skmaker.routing import DEFAULT_TIMEOUT_S, EndpointRouter, addresses_target
from skmaker.serializers import BaseSerializer, IdentitySerializer, NumpySerializer
from skmaker.session import Session

log = logging.getLogger("skmaker")

# initial_args keys of InvokeEndpoint that predict() honours or safely ignores.
_HONOURED_ARGS = frozenset({"ContentType", "Accept", "CustomAttributes", "EndpointName"})
_IGNORED_ARGS = frozenset({"InferenceId", "TargetVariant"})


class Predictor:
    """Makes predictions with an endpoint: SageMaker's base `Predictor`, bytes in and out.

    Args:
        endpoint_name: the endpoint to call.
        sagemaker_session: the skmaker `Session` (SageMaker's argument name); a SageMaker
            session is ignored with a warning.
        serializer: turns `predict`'s data into the request (default `IdentitySerializer()`:
            bytes or str sent as they are, as application/octet-stream).
        deserializer: turns the answer into the result (default `BytesDeserializer()`: asks
            for `*/*`, which the handler answers in its default accept type, and returns the
            bytes).
        session: alias of `sagemaker_session`; default `Session()` from the environment.
        timeout_s: deadline of each `predict`, retries included (60 s, as SageMaker).
        **kwargs: SageMaker's other arguments (`component_name`, ...), accepted and ignored.

    Attributes:
        endpoint_name: the endpoint called.
        serializer: settable, as in SageMaker.
        deserializer: settable, as in SageMaker.
    """

    def __init__(
        self,
        endpoint_name: str,
        sagemaker_session: Any = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        *,
        session: Session | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if isinstance(sagemaker_session, Session):
            if session is not None and session is not sagemaker_session:
                raise ValueError("pass either session or sagemaker_session, not both")
            session = sagemaker_session
        elif sagemaker_session is not None:
            warnings.warn(
                "skmaker ignores a sagemaker_session that is not a skmaker Session",
                UserWarning,
                stacklevel=2,
            )
        ignored = sorted(name for name, value in kwargs.items() if value is not None)
        if ignored:
            warnings.warn(
                "skmaker ignores these SageMaker-only arguments: " + ", ".join(ignored),
                UserWarning,
                stacklevel=2,
            )
        self.endpoint_name = endpoint_name
        self.serializer: BaseSerializer = serializer or self._default_serializer()
        self.deserializer: BaseDeserializer = deserializer or self._default_deserializer()
        self.timeout_s = timeout_s
        self._session = session
        self._owns_session = False
        self._fixed_router: EndpointRouter | None = None
        self._model_name: str | None = None

    @classmethod
    def from_addresses(
        cls,
        addresses: Sequence[str],
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        *,
        endpoint_name: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Predictor:
        """A predictor bound to fixed replica addresses, without a control.

        For replicas started on their own (`python -m services.inference --model-dir ...`),
        tests and benchmarks. Calls balance over `addresses` per request; the list is never
        refreshed, and the endpoint/model management methods are unavailable.

        Args:
            addresses: replica addresses (`ip:port` literals to balance, or one host:port).
            serializer: as in the constructor.
            deserializer: as in the constructor.
            endpoint_name: sent with each call so a replica of another endpoint refuses it;
                empty skips the check.
            timeout_s: deadline of each `predict`, retries included.
            metadata: sent with every call, e.g. `(("authorization", "Bearer T"),)`.

        Raises:
            ValueError: for no address, or several host names (one channel cannot name them).
        """
        predictor = cls(
            endpoint_name,
            serializer=serializer,
            deserializer=deserializer,
            timeout_s=timeout_s,
        )
        predictor._fixed_router = EndpointRouter(
            endpoint_name,
            target=addresses_target(addresses),
            metadata=metadata,
            timeout_s=timeout_s,
        )
        return predictor

    @staticmethod
    def _default_serializer() -> BaseSerializer:
        return IdentitySerializer()

    @staticmethod
    def _default_deserializer() -> BaseDeserializer:
        return BytesDeserializer()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint_name={self.endpoint_name!r})"

    @property
    def endpoint(self) -> str:
        """Deprecated alias of `endpoint_name`, as in SageMaker's SDK v2."""
        warnings.warn(
            "predictor.endpoint is deprecated; use predictor.endpoint_name",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.endpoint_name

    @property
    def sagemaker_session(self) -> Session:
        """The session, created from the environment on first use when none was given.

        Raises:
            ValueError: for a predictor made by `from_addresses`, which has no control.
        """
        if self._session is None:
            if self._fixed_router is not None:
                raise ValueError(
                    "this predictor was made from replica addresses and has no control session"
                )
            self._session = Session()
            self._owns_session = True
        return self._session

    @property
    def content_type(self) -> str:
        """The MIME type of requests: the serializer's CONTENT_TYPE."""
        return str(self.serializer.CONTENT_TYPE)

    @property
    def accept(self) -> tuple[str, ...]:
        """The MIME types asked for: the deserializer's ACCEPT."""
        return tuple(self.deserializer.ACCEPT)

    def _router(self) -> EndpointRouter:
        if self._fixed_router is not None:
            return self._fixed_router
        return self.sagemaker_session.endpoint_router(self.endpoint_name)

    # -- predictions ---------------------------------------------------------------------------

    def predict(
        self,
        data: Any,
        initial_args: Mapping[str, str] | None = None,
        target_model: str | None = None,
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
    ) -> Any:
        """Serializes `data`, calls the endpoint, and returns the deserialized answer.

        Args:
            data: what the serializer takes (by default a NumPy array or a list of rows).
            initial_args: InvokeEndpoint arguments overriding the defaults: `ContentType`,
                `Accept`, `CustomAttributes` (and `InferenceId`, ignored).
            target_model: multi-model endpoints are not supported; must be None.
            target_variant: must be None or "AllTraffic" (the one variant).
            inference_id: accepted and ignored.
            custom_attributes: SageMaker's CustomAttributes, passed to the handler.

        Returns:
            What the deserializer makes of the answer (by default a NumPy array).

        Raises:
            ValueError: for an unsupported argument.
            InvalidArgument: the endpoint could not read the payload (content type, width...).
            ModelError: the script's own code raised.
            ResourceExhausted: the payload is over the replica's limit.
            Unavailable: no replica answered through the retries.
            DeadlineExceeded: no answer within `timeout_s`.
        """
        del inference_id
        if target_model is not None:
            raise ValueError("skmaker endpoints serve one model: target_model must be None")
        if target_variant not in (None, "AllTraffic"):
            raise ValueError("skmaker endpoints have one variant, 'AllTraffic'")
        args = dict(initial_args or {})
        unknown = sorted(set(args) - _HONOURED_ARGS - _IGNORED_ARGS)
        if unknown:
            raise ValueError(
                f"unsupported initial_args {unknown}; supported: {sorted(_HONOURED_ARGS)}"
            )
        if args.get("EndpointName", self.endpoint_name) != self.endpoint_name:
            raise ValueError("initial_args EndpointName differs from this predictor's endpoint")
        content_type = args.get("ContentType") or self.content_type
        accept = args.get("Accept") or ", ".join(self.accept)
        attributes = args.get("CustomAttributes") or custom_attributes or ""
        body = self.serializer.serialize(data)
        if not isinstance(body, bytes | str):
            raise ValueError(
                f"{type(self.serializer).__name__} made a {type(body).__name__}; "
                "a request body must be bytes or str"
            )
        answer, answer_type = self._router().invoke(
            body, content_type, accept, attributes, timeout_s=self.timeout_s
        )
        return self.deserializer.deserialize(io.BytesIO(answer), answer_type)

    # -- the endpoint and its model ------------------------------------------------------------

    def describe_endpoint(self) -> dict[str, Any]:
        """The endpoint's DescribeEndpoint-shaped dict (remembering which model it serves)."""
        description = self.sagemaker_session.describe_endpoint(self.endpoint_name)
        self._model_name = description.get("ModelName") or self._model_name
        return description

    def update_endpoint(
        self,
        initial_instance_count: int | None = None,
        instance_type: str | None = None,
        accelerator_type: str | None = None,
        model_name: str | None = None,
        tags: Any = None,
        kms_key: str | None = None,
        data_capture_config_dict: Any = None,
        max_instance_count: int | None = None,
        min_instance_count: int | None = None,
        wait: bool = True,
        autoscaling: AutoScalingPolicy | Mapping[str, Any] | None = None,
    ) -> None:
        """Changes the endpoint's replica count, model or scaling, without dropping calls.

        Args:
            initial_instance_count: the replica count to run.
            instance_type: SageMaker-only; ignored with a warning.
            accelerator_type: SageMaker-only; ignored with a warning.
            model_name: serve this model from now on.
            tags: SageMaker-only; ignored with a warning.
            kms_key: SageMaker-only; ignored with a warning.
            data_capture_config_dict: SageMaker-only; ignored with a warning.
            max_instance_count: with `min_instance_count`, SageMaker's managed instance
                scaling; becomes an autoscaling policy's bounds (needs `autoscaling` for the
                target, or use `autoscaling` alone).
            min_instance_count: see `max_instance_count`.
            wait: wait until the endpoint is InService again.
            autoscaling: a new target-tracking policy (skmaker's addition).

        Raises:
            ValueError: when nothing is to change, or min/max are given without a target.
            UnexpectedStatusException: when `wait` and the endpoint ended Failed.
        """
        ignored = sorted(
            name
            for name, value in {
                "instance_type": instance_type,
                "accelerator_type": accelerator_type,
                "tags": tags,
                "kms_key": kms_key,
                "data_capture_config_dict": data_capture_config_dict,
            }.items()
            if value is not None
        )
        if ignored:
            warnings.warn(
                "skmaker ignores these SageMaker-only arguments: " + ", ".join(ignored),
                UserWarning,
                stacklevel=2,
            )
        policy = AutoScalingPolicy.from_value(autoscaling) if autoscaling is not None else None
        if min_instance_count is not None or max_instance_count is not None:
            if policy is None:
                raise ValueError(
                    "min_instance_count/max_instance_count need autoscaling=... for the "
                    "target value on skmaker"
                )
            policy = dataclasses.replace(
                policy,
                min_replicas=min_instance_count or policy.min_replicas,
                max_replicas=max_instance_count or policy.max_replicas,
            )
        self.sagemaker_session.update_endpoint(
            self.endpoint_name,
            model_name=model_name,
            replicas=initial_instance_count,
            autoscaling=policy,
            wait=wait,
        )
        if model_name:
            self._model_name = model_name

    def delete_endpoint(self, delete_endpoint_config: bool = True, wait: bool = True) -> None:
        """Deletes the endpoint: its replicas drain and stop.

        Unlike SageMaker's, it waits (by default) until the endpoint is gone, so its replicas
        have stopped when it returns. The model the endpoint served is remembered for
        `delete_model()`, which may come before or after.

        Args:
            delete_endpoint_config: SageMaker's argument; skmaker has no endpoint configs.
            wait: return only once the endpoint is gone.

        Raises:
            NotFound: when there is no such endpoint.
        """
        del delete_endpoint_config
        if self._model_name is None:
            try:
                self.describe_endpoint()
            except NotFound:
                pass  # the delete below says so
        self.sagemaker_session.delete_endpoint(self.endpoint_name, wait=wait)

    def delete_model(self) -> None:
        """Deletes the model the endpoint serves (or served, after `delete_endpoint()`).

        As on SageMaker, an endpoint serving the model keeps serving it (and starts replicas
        of it when it scales) until it is deleted or moved to another model.

        Raises:
            NotFound: when the model, or the endpoint whose model is not yet known, is gone.
        """
        if self._model_name is None:
            self.describe_endpoint()
        assert self._model_name is not None, "describe_endpoint() records the model name"
        self.sagemaker_session.delete_model(self._model_name)

    def close(self) -> None:
        """Closes the connections this predictor opened (its own session or replica channel)."""
        if self._fixed_router is not None:
            self._fixed_router.close()
        if self._owns_session and self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SKLearnPredictor(Predictor):
    """SageMaker's `SKLearnPredictor`: a `Predictor` that sends and reads NumPy arrays.

    What `deploy()` returns. The defaults are `NumpySerializer()` (application/x-npy) and
    `NumpyDeserializer()` (asks for application/x-npy; reads x-npy, CSV and JSON answers);
    every argument is `Predictor`'s.
    """

    @staticmethod
    def _default_serializer() -> BaseSerializer:
        return NumpySerializer()

    @staticmethod
    def _default_deserializer() -> BaseDeserializer:
        return NumpyDeserializer()
