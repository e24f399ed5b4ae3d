"""SageMaker's `sagemaker.s3` helpers over skmaker's artifact store (the default bucket).

    from skmaker.s3 import S3Downloader, S3Uploader
    uri = S3Uploader.upload("data/train.csv", f"s3://{bucket}/iris/train", sagemaker_session=s)
    S3Downloader.download(transformer.output_path, "predictions", sagemaker_session=s)
    S3Downloader.read_file(f"s3://{bucket}/iris/train/train.csv", sagemaker_session=s)

URIs are `s3://<session.default_bucket()>/<key>` or `store://<key>` (the same object); another
bucket is a ValueError. Without `sagemaker_session`, a `Session()` from the environment is used
for the one call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from skmaker.data_calls import S3_SCHEME
from skmaker.session import Session
from skmaker.v1 import transfer

T = TypeVar("T")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URL, as SageMaker's.

    Raises:
        ValueError: for another scheme.
    """
    if not url.startswith(S3_SCHEME):
        raise ValueError(f"expecting 's3' scheme, got {url!r}")
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    return bucket, key


def s3_path_join(*args: str) -> str:
    """Joins path parts with single slashes, keeping an `s3://` start, as SageMaker's."""
    parts = [str(arg) for arg in args if arg]
    if not parts:
        return ""
    head = parts[0]
    scheme = S3_SCHEME if head.startswith(S3_SCHEME) else ""
    pieces = [head[len(scheme) :].strip("/")] + [part.strip("/") for part in parts[1:]]
    return scheme + "/".join(piece for piece in pieces if piece)


@contextmanager
def _session(sagemaker_session: Session | None) -> Iterator[Session]:
    if sagemaker_session is not None:
        yield sagemaker_session
        return
    with Session() as session:
        yield session


def _bucket_and_key(session: Session, uri: str) -> tuple[str, str]:
    """The default bucket and the key a store:// or s3:// URI names (the key may be empty)."""
    store = session.store_uri(uri)
    if not store.startswith(transfer.SCHEME):
        raise ValueError(f"{uri!r} is not an s3:// or store:// URI")
    return parse_s3_url(session.s3_uri(store))


def _as_given(uri: str, session: Session, key: str) -> str:
    """The store key `key` in the scheme `uri` was given in."""
    if uri.startswith(S3_SCHEME):
        return session.s3_uri(key)
    return transfer.store_uri(key)


class S3Uploader:
    """SageMaker's `S3Uploader`: puts local files and strings into the store."""

    @staticmethod
    def upload(
        local_path: str | os.PathLike[str],
        desired_s3_uri: str,
        kms_key: str | None = None,
        sagemaker_session: Session | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> str:
        """Uploads a file or folder under `desired_s3_uri`; returns the URI of what was
        uploaded (`<desired>/<file name>` for a file, `<desired>` for a folder), in the scheme
        given."""
        del kms_key, callback
        with _session(sagemaker_session) as session:
            bucket, key = _bucket_and_key(session, desired_s3_uri)
            uploaded = session.upload_data(local_path, bucket, key)
            return _as_given(desired_s3_uri, session, session.store_key(uploaded))

    @staticmethod
    def upload_string_as_file_body(
        body: str | bytes,
        desired_s3_uri: str,
        kms_key: str | None = None,
        sagemaker_session: Session | None = None,
    ) -> str:
        """Stores `body` as the object `desired_s3_uri`; returns that URI."""
        with _session(sagemaker_session) as session:
            bucket, key = _bucket_and_key(session, desired_s3_uri)
            uploaded = session.upload_string_as_file_body(body, bucket, key, kms_key)
            return _as_given(desired_s3_uri, session, session.store_key(uploaded))


class S3Downloader:
    """SageMaker's `S3Downloader`: reads objects from the store."""

    @staticmethod
    def download(
        s3_uri: str,
        local_path: str | os.PathLike[str],
        kms_key: str | None = None,
        sagemaker_session: Session | None = None,
    ) -> list[str]:
        """Downloads the objects at or below `s3_uri` into `local_path`; returns the local
        paths (see `Session.download_data`)."""
        del kms_key
        with _session(sagemaker_session) as session:
            bucket, key = _bucket_and_key(session, s3_uri)
            return session.download_data(local_path, bucket, key)

    @staticmethod
    def read_file(s3_uri: str, sagemaker_session: Session | None = None) -> str:
        """The UTF-8 text of the object `s3_uri`."""
        with _session(sagemaker_session) as session:
            bucket, key = _bucket_and_key(session, s3_uri)
            return session.read_s3_file(bucket, key)

    @staticmethod
    def list(s3_uri: str, sagemaker_session: Session | None = None) -> list[str]:
        """The URIs of the objects at or below `s3_uri`, in the scheme given, sorted."""
        with _session(sagemaker_session) as session:
            bucket, key = _bucket_and_key(session, s3_uri)
            keys = session.list_s3_files(bucket, key)
            return [_as_given(s3_uri, session, found) for found in keys]
