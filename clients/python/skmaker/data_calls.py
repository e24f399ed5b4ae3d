"""`DataCalls`: the artifact-store part of `Session`, shaped like SageMaker's S3 helpers.

Mixed into `Session`, which owns the channel to the control and the call policy (deadlines,
retrying UNAVAILABLE for idempotent calls, mapping errors). Uploads and downloads files and
folders (`upload_data`, `download_data`), lists, reads and writes single objects
(`list_s3_files`, `read_s3_file`, `upload_string_as_file_body`); `s3://<default bucket>/<key>`
names `store://<key>`. Long transfers show a progress bar on stderr.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from skmaker.errors import NotFound
from skmaker.v1 import artifacts_pb2_grpc, transfer

S3_SCHEME = "s3://"


class DataCalls:
    """Artifact-store calls of a `Session`; see that class for the connection settings."""

    # Provided by Session.
    _call: Callable[..., Any]
    _artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    _metadata: tuple[tuple[str, str], ...]
    timeout_s: float
    transfer_timeout_s: float
    default_bucket_prefix: str | None
    store_uri: Callable[[str], str]
    public_uri: Callable[[str], str]

    def _progress(self, total: int, description: str) -> tqdm[Any]:
        # delay: a bar appears only for transfers that take more than a moment.
        return tqdm(
            total=total,
            desc=description,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            delay=1.0,
            file=sys.stderr,
            disable=None,
            leave=False,
        )

    def upload_data(
        self,
        path: str | os.PathLike[str],
        bucket: str | None = None,
        key_prefix: str = "data",
        extra_args: Mapping[str, Any] | None = None,
    ) -> str:
        """Uploads a file or a folder to the artifact store, as SageMaker's `upload_data`.

        A file lands at `store://<key_prefix>/<file name>` and that URI is returned. A folder's
        files land at `store://<key_prefix>/<path relative to the folder>` and
        `store://<key_prefix>` is returned, ready to be a channel of `fit()`. When the control
        keeps artifacts in an S3 store, the URI returned is the object's real `s3://` one
        (`s3://<bucket>/<store prefix>/<key>`, see `Session.public_uri`).

        Args:
            path: local file or folder.
            bucket: None or the default bucket (the store); with None, a
                `default_bucket_prefix` goes before `key_prefix`, as in SageMaker.
            key_prefix: where in the store the data goes.
            extra_args: accepted for compatibility; ignored.

        Raises:
            FileNotFoundError: when `path` does not exist.
            ValueError: for a key prefix that is not a relative path without "..", or
                another bucket than the default one.
        """
        del extra_args  # SageMaker's S3 upload arguments have no meaning here.
        if bucket is None:
            key_prefix = "/".join(p for p in (self.default_bucket_prefix, key_prefix) if p)
        else:  # an object key of the bucket: its key in the store (refuses another bucket)
            key_prefix = self.store_uri(f"{S3_SCHEME}{bucket}/{key_prefix.strip('/')}")
            key_prefix = key_prefix[len(transfer.SCHEME) :]
        return self.upload_to_store(path, key_prefix)

    def upload_to_store(self, path: str | os.PathLike[str], key_prefix: str) -> str:
        """`upload_data` with `key_prefix` a key of the store (no bucket or prefix mapping);
        returns the URI as `upload_data` does."""
        local = Path(path)
        prefix = key_prefix.strip("/")
        if local.is_file():
            files = [(local, PurePosixPath(prefix, local.name).as_posix())]
            result = transfer.store_uri(files[0][1])
        elif local.is_dir():
            if not prefix:
                raise ValueError("key_prefix must not be empty when uploading a folder")
            files = [
                (file, PurePosixPath(prefix, *file.relative_to(local).parts).as_posix())
                for file in sorted(local.rglob("*"))
                if file.is_file()
            ]
            result = transfer.store_uri(prefix)
        else:
            raise FileNotFoundError(f"no such file or folder: {str(local)!r}")
        for _, key in files:
            transfer.key_of(key)  # fail before sending anything
        total = sum(file.stat().st_size for file, _ in files)
        with self._progress(total, f"upload {result}") as bar:
            for file, key in files:
                self._call(
                    lambda file=file, key=key: transfer.upload_file(
                        self._artifacts,
                        file,
                        transfer.store_uri(key),
                        timeout_s=self.transfer_timeout_s,
                        metadata=self._metadata,
                        progress=bar.update,
                    ),
                    idempotent=False,
                )
        return self.public_uri(result)

    def download_data(
        self,
        path: str | os.PathLike[str],
        bucket: str,
        key_prefix: str = "",
        extra_args: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Downloads the objects at or below a key into the local folder `path`, as SageMaker's.

        `download_data(path, session.default_bucket(), "data/train")` is SageMaker's form; a
        URI in place of the bucket (`download_data(path, "store://data/train")`, or an
        `s3://<default bucket>/...` one) names the key directly. An object named by the key
        itself lands as `path/<its base name>`; objects below it keep their layout relative to
        it (an empty key downloads the whole store, each object at its key). Returns the
        local paths written, sorted.

        Raises:
            NotFound: when nothing is stored at or below the key.
            ValueError: for another bucket than the default one, or a bad key.
        """
        del extra_args  # SageMaker's S3 download arguments have no meaning here.
        if "://" in bucket:
            if key_prefix:
                raise ValueError("give either a URI or a bucket and key_prefix, not both")
            uri = self.store_uri(bucket)
        else:
            uri = self.store_uri(f"{S3_SCHEME}{bucket}/{key_prefix.strip('/')}")
        prefix_key = transfer.key_of(uri) if uri != transfer.SCHEME else ""
        infos = self._call(
            lambda: transfer.list_artifacts(
                self._artifacts, uri, timeout_s=self.timeout_s, metadata=self._metadata
            ),
            idempotent=True,
        )
        if not infos:
            raise NotFound(f"nothing stored at or below {uri}")
        destination = Path(path)
        written = []
        with self._progress(sum(info.size for info in infos), f"download {uri}") as bar:
            for info in infos:
                key = transfer.key_of(info.uri)
                if not prefix_key:
                    relative = key
                elif key == prefix_key:
                    relative = PurePosixPath(key).name
                else:
                    relative = key[len(prefix_key) + 1 :]
                target = destination.joinpath(*PurePosixPath(relative).parts)
                self._call(
                    lambda info=info, target=target: transfer.download_file(
                        self._artifacts,
                        info.uri,
                        target,
                        timeout_s=self.transfer_timeout_s,
                        metadata=self._metadata,
                        progress=bar.update,
                    ),
                    idempotent=True,
                )
                written.append(str(target))
        return sorted(written)

    def list_s3_files(self, bucket: str, key_prefix: str) -> list[str]:
        """The keys of the objects at or below `key_prefix` in the default bucket (the store),
        sorted, as SageMaker's.

        Raises:
            ValueError: for another bucket or a bad key.
        """
        uri = self.store_uri(f"{S3_SCHEME}{bucket}/{key_prefix.strip('/')}")
        infos = self._call(
            lambda: transfer.list_artifacts(
                self._artifacts, uri, timeout_s=self.timeout_s, metadata=self._metadata
            ),
            idempotent=True,
        )
        return sorted(transfer.key_of(info.uri) for info in infos)

    def read_s3_file(self, bucket: str, key_prefix: str) -> str:
        """The text (UTF-8) of the object at `key_prefix` in the default bucket, as SageMaker's.

        Raises:
            NotFound: when there is no such object.
            ValueError: for another bucket or a bad key.
        """
        uri = self.store_uri(f"{S3_SCHEME}{bucket}/{key_prefix.strip('/')}")
        with tempfile.TemporaryDirectory(prefix="skmaker-read-") as scratch:
            target = Path(scratch) / "object"
            self._call(
                lambda: transfer.download_file(
                    self._artifacts,
                    uri,
                    target,
                    timeout_s=self.transfer_timeout_s,
                    metadata=self._metadata,
                ),
                idempotent=True,
            )
            return target.read_text(encoding="utf-8")

    def upload_string_as_file_body(
        self, body: str | bytes, bucket: str, key: str, kms_key: str | None = None
    ) -> str:
        """Stores `body` (str as UTF-8) as the object `key` of the default bucket, as
        SageMaker's; returns its `store://` URI.

        Raises:
            ValueError: for another bucket or a bad key.
        """
        del kms_key  # SageMaker's S3 encryption key has no meaning here.
        uri = self.store_uri(f"{S3_SCHEME}{bucket}/{key.strip('/')}")
        transfer.key_of(uri)  # fail before sending anything
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        with tempfile.TemporaryDirectory(prefix="skmaker-upload-") as scratch:
            source = Path(scratch) / "object"
            source.write_bytes(data)
            self._call(
                lambda: transfer.upload_file(
                    self._artifacts,
                    source,
                    uri,
                    timeout_s=self.transfer_timeout_s,
                    metadata=self._metadata,
                ),
                idempotent=False,
            )
        return self.public_uri(uri)
