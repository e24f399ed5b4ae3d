"""Training input channels: `TrainingInput` and the mapping from `fit()` arguments to channels.

As in the SageMaker SDK, a plain string given to `fit()` is the channel `training` and a dict
names the channels. A channel's data is an artifact-store URI (`store://...`, what
`Session.upload_data` returns, or `s3://<Session.default_bucket()>/...`, which names the same
key) or a `file://` path on the trainer's machine. Local paths are not uploaded implicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skmaker.v1 import names

DEFAULT_CHANNEL = "training"
SUPPORTED_SCHEMES = ("store://", "file://", "s3://")

MAX_CHANNELS = 20


@dataclass(init=False)
class TrainingInput:
    """One channel's data, with SageMaker's `TrainingInput` signature.

    Only `s3_data` (the URI) and `content_type` change what skmaker does; the other arguments
    are kept so that SageMaker code runs unchanged.

    Args:
        s3_data: where the data is: `store://...`, `s3://<default bucket>/...` (the same
            store) or `file:///abs/path`.
        distribution: SageMaker's S3DataDistributionType; one trainer gets everything anyway.
        compression: SageMaker's CompressionType; not applied.
        content_type: MIME type, written to inputdataconfig.json as ContentType.
        record_wrapping: SageMaker's RecordWrapperType; not applied.
        s3_data_type: SageMaker's S3DataType; prefixes are always read whole.
        input_mode: SageMaker's TrainingInputMode; skmaker always copies (File mode).
        **kwargs: further SageMaker arguments (attribute_names, target_attribute_name, ...).
    """

    s3_data: str
    distribution: str | None = None
    compression: str | None = None
    content_type: str | None = None
    record_wrapping: str | None = None
    s3_data_type: str = "S3Prefix"
    input_mode: str | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        s3_data: str,
        distribution: str | None = None,
        compression: str | None = None,
        content_type: str | None = None,
        record_wrapping: str | None = None,
        s3_data_type: str = "S3Prefix",
        input_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.s3_data = s3_data
        self.distribution = distribution
        self.compression = compression
        self.content_type = content_type
        self.record_wrapping = record_wrapping
        self.s3_data_type = s3_data_type
        self.input_mode = input_mode
        self.extra_args = dict(kwargs)


def _check_uri(channel: str, uri: Any) -> str:
    if not isinstance(uri, str):
        raise TypeError(
            f"channel {channel!r}: expected a URI string or TrainingInput, got {type(uri).__name__}"
        )
    if not uri.startswith(SUPPORTED_SCHEMES):
        raise ValueError(
            f"channel {channel!r}: {uri!r} is not a data URI. Upload local data first with "
            "session.upload_data(path) (it returns a store:// URI; "
            "s3://<session.default_bucket()>/<key> names the same), or pass file:///abs/path "
            "for data on the trainer's machine"
        )
    return uri


def channels_from_inputs(
    inputs: str | TrainingInput | Mapping[str, str | TrainingInput] | None,
) -> dict[str, TrainingInput]:
    """The channels `fit(inputs)` creates, by name.

    Raises:
        TypeError: for an input that is neither a string, a TrainingInput nor a dict of them.
        ValueError: for a bad channel name, too many channels, or a value that is not a
            store://, file:// or s3:// URI.
    """
    if inputs is None:
        return {}
    named: Mapping[str, str | TrainingInput]
    if isinstance(inputs, str | TrainingInput):
        named = {DEFAULT_CHANNEL: inputs}
    elif isinstance(inputs, Mapping):
        named = inputs
    else:
        raise TypeError(
            "inputs must be a URI string, a TrainingInput or a dict of channel name -> URI, "
            f"got {type(inputs).__name__}"
        )
    if len(named) > MAX_CHANNELS:
        raise ValueError(f"at most {MAX_CHANNELS} channels are allowed, got {len(named)}")
    channels = {}
    for name, value in named.items():
        problem = names.channel_name_error(name)
        if problem:
            raise ValueError(problem)
        if isinstance(value, TrainingInput):
            _check_uri(name, value.s3_data)
            channels[name] = value
        else:
            channels[name] = TrainingInput(_check_uri(name, value))
    return channels
