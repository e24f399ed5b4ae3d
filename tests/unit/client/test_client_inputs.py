"""fit() inputs -> channels: a string is "training", a dict names channels (contract §1.3)."""

from __future__ import annotations

import pytest

from skmaker import TrainingInput
from skmaker.inputs import channels_from_inputs


def test_none_is_no_channel() -> None:
    assert channels_from_inputs(None) == {}


def test_plain_string_is_the_training_channel() -> None:
    channels = channels_from_inputs("store://data/iris")
    assert list(channels) == ["training"]
    assert channels["training"].s3_data == "store://data/iris"


def test_dict_names_the_channels() -> None:
    channels = channels_from_inputs(
        {
            "train": "store://d/train",
            "test": TrainingInput("file:///tmp/t", content_type="text/csv"),
        }
    )
    assert {name: c.s3_data for name, c in channels.items()} == {
        "train": "store://d/train",
        "test": "file:///tmp/t",
    }
    assert channels["test"].content_type == "text/csv"


def test_training_input_alone_is_the_training_channel() -> None:
    given = TrainingInput("s3://bucket/key", distribution="FullyReplicated", attribute_names=["a"])
    assert channels_from_inputs(given) == {"training": given}
    assert given.extra_args == {"attribute_names": ["a"]}


def test_local_paths_are_not_uploaded_implicitly() -> None:
    with pytest.raises(ValueError, match="upload_data"):
        channels_from_inputs({"train": "data/iris"})


@pytest.mark.parametrize("name", ["", "bad name", "x" * 65, "a/b"])
def test_bad_channel_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid channel name"):
        channels_from_inputs({name: "store://x"})


def test_more_than_twenty_channels_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 20"):
        channels_from_inputs({f"c{i}": "store://x" for i in range(21)})


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError):
        channels_from_inputs(["store://x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        channels_from_inputs({"train": 3})  # type: ignore[dict-item]
