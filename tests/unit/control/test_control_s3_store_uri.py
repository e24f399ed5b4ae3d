"""`--artifact-store s3://BUCKET[/PREFIX]` and the `s3://` URIs that then name the store."""

from __future__ import annotations

import pytest

from services.control.artifacts import base
from services.control.artifacts.base import StoreLocation, key_of, store_uri_of, use_s3_location
from services.control.artifacts.s3_store import parse_store_uri
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://ml", "ml", ""),
        ("s3://ml/", "ml", ""),
        ("s3://ml/team/skmaker/", "ml", "team/skmaker"),
    ],
)
def test_a_store_uri_names_a_bucket_and_a_prefix(uri: str, bucket: str, prefix: str) -> None:
    assert parse_store_uri(uri) == StoreLocation("s3", bucket, prefix)


@pytest.mark.parametrize(
    "uri", ["ml", "gs://ml", "s3://", "s3:///x", "s3://ml/a/../b", "s3://ml/a//b"]
)
def test_other_store_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidArgument, match="expected s3://BUCKET"):
        parse_store_uri(uri)


def test_the_s3_uris_of_a_bucket_and_prefix_name_store_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "_s3_location_uri", base.s3_bucket_uri())  # restored after
    use_s3_location(StoreLocation("s3", "ml", "team/a"))
    assert store_uri_of("s3://ml/team/a/data/x.csv") == "store://data/x.csv"
    assert key_of("s3://ml/team/a/data/") == "data"
    # Outside the prefix, or the local store's bucket name: not this store.
    with pytest.raises(InvalidArgument, match="not an artifact-store URI"):
        key_of("s3://ml/team/b/x")
    with pytest.raises(InvalidArgument, match="not an artifact-store URI"):
        key_of("s3://skmaker/x")
