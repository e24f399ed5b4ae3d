"""The artifact store in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, radosgw).

`--artifact-store s3://BUCKET[/PREFIX]`: key `k` is the object `PREFIX/k` of `BUCKET`, and
`s3://BUCKET/PREFIX/k` names it in every URI the API takes. boto3 finds the endpoint and the
credentials as every AWS tool does (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `~/.aws/...`).

Callers move bytes themselves: PresignDownload hands out presigned GET URLs (a ranged GET reads
a byte range) and StartUpload presigned PUT URLs, one or one per part of a multipart upload,
each signed with the Content-MD5 the caller announced, so the object store refuses other bytes.
An object's sha256 rides along as the user metadata `sha256` (signed into the PUT), so
downloads can check it; objects written around skmaker (a script's own boto3 call) have none,
and their downloads check the size alone. The calls that stream bytes through the control
(UploadArtifact, DownloadArtifact) still work, for callers that cannot reach the object store.

The control itself reads and writes objects only for what it does with their content: a code
bundle's entry point check, a model archive's check, the shard boundaries of a transform input
and the assembly of shard outputs into `.out` files.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, BinaryIO, cast

import boto3
import botocore.config
import botocore.exceptions

from services.control.artifacts.base import (
    CHUNK_BYTES,
    SCHEME,
    ArtifactInfo,
    StoreLocation,
    UploadPlan,
    UploadRequest,
    check_upload_header,
    copy_checked_upload,
    is_listed,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

# S3 refuses parts under 5 MiB (all but the last) and more than 10,000 parts.
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
# The largest part UploadPartCopy copies.
MAX_COPY_PART_BYTES = 5 * 1024**3
_SHA256_METADATA = "sha256"
_SPOOL_BYTES = 8 * 1024 * 1024


def parse_store_uri(uri: str) -> StoreLocation:
    """`s3://BUCKET[/PREFIX]` as a location.

    Raises:
        InvalidArgument: another scheme, no bucket, or `.`/`..` in the prefix.
    """
    if not uri.startswith("s3://"):
        raise InvalidArgument(f"--artifact-store {uri!r}: expected s3://BUCKET[/PREFIX]")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(part in {"", ".", ".."} for part in prefix.split("/") if prefix):
        raise InvalidArgument(f"--artifact-store {uri!r}: expected s3://BUCKET[/PREFIX]")
    return StoreLocation("s3", bucket, prefix)


def _client(endpoint_url: str | None) -> Any:
    # Path-style addressing (`host/bucket/key`): what S3-compatible servers all answer, and
    # what AWS S3 answers too; virtual-host style needs DNS for every bucket name.
    config = botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3ArtifactStore:
    """Objects in one bucket (below a prefix) of an S3-compatible store. Thread-safe (boto3's
    clients are)."""

    def __init__(
        self,
        location: StoreLocation,
        max_upload_bytes: int,
        *,
        presign_endpoint_url: str = "",
        url_ttl_s: int = 3600,
    ) -> None:
        """Connects and checks that the bucket exists.

        Args:
            location: The bucket and prefix.
            max_upload_bytes: Uploads over this size are refused.
            presign_endpoint_url: The endpoint presigned URLs name, when callers reach the
                object store at another address than the control does; "" for the same.
            url_ttl_s: How long a presigned URL works.

        Raises:
            FailedPrecondition: the bucket cannot be reached (missing, no credentials, ...).
        """
        self._location = location
        self._bucket = location.bucket
        self._max_upload_bytes = max_upload_bytes
        self._url_ttl_s = url_ttl_s
        self._s3 = _client(None)
        self._presigner = _client(presign_endpoint_url) if presign_endpoint_url else self._s3
        try:
            self._s3.head_bucket(Bucket=self._bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise FailedPrecondition(
                f"artifact store {location.s3_uri} cannot be reached: {err}"
            ) from err

    @property
    def location(self) -> StoreLocation:
        """The bucket and prefix."""
        return self._location

    def _object(self, key: str) -> str:
        return f"{self._location.prefix}/{key}" if self._location.prefix else key

    def _key(self, name: str) -> str:
        prefix = self._location.prefix
        return name[len(prefix) + 1 :] if prefix else name

    def local_path(self, key: str) -> str:
        """ "": no object has a file on this machine."""
        return ""

    # ----------------------------------------------------------------- presigned transfers

    def _head(self, key: str) -> ArtifactInfo:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=self._object(key))
        except botocore.exceptions.ClientError as err:
            if _is_missing(err):
                raise NotFound(f"artifact {SCHEME}{key} not found") from None
            raise
        sha256 = str(head.get("Metadata", {}).get(_SHA256_METADATA, ""))
        return ArtifactInfo(key=key, size=int(head["ContentLength"]), sha256=sha256)

    def stat(self, key: str) -> ArtifactInfo:
        """The object's info, from a HEAD request.

        Raises:
            NotFound: when there is no object at `key`.
        """
        return self._head(key)

    def presign_get(self, key: str) -> tuple[ArtifactInfo, str]:
        """The object's info and a GET URL valid for `url_ttl_s`.

        Raises:
            NotFound: when there is no object at `key`.
        """
        info = self._head(key)
        url = self._presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._object(key)},
            ExpiresIn=self._url_ttl_s,
        )
        return info, str(url)

    def start_upload(self, upload: UploadRequest) -> UploadPlan:
        """One presigned PUT URL, or a multipart upload with one URL per part.

        Raises:
            ResourceExhausted: over the upload limit.
            InvalidArgument: a bad size or digest, a missing MD5, parts that do not add up to
                the size or are smaller than S3 allows.
        """
        sha256 = check_upload_header(upload.key, upload.size, upload.sha256, self._max_upload_bytes)
        metadata = {_SHA256_METADATA: sha256}
        common = {"Bucket": self._bucket, "Key": self._object(upload.key)}
        if not upload.part_md5s:
            if not upload.content_md5:
                raise InvalidArgument(f"upload of {upload.key!r}: content_md5 is required")
            url = self._presigner.generate_presigned_url(
                "put_object",
                Params={**common, "ContentMD5": upload.content_md5, "Metadata": metadata},
                ExpiresIn=self._url_ttl_s,
            )
            headers = (("Content-MD5", upload.content_md5), ("x-amz-meta-sha256", sha256))
            return UploadPlan(url=str(url), headers=headers)
        _check_parts(upload)
        created = self._s3.create_multipart_upload(**common, Metadata=metadata)
        upload_id = str(created["UploadId"])
        part_urls = tuple(
            str(
                self._presigner.generate_presigned_url(
                    "upload_part",
                    Params={
                        **common,
                        "UploadId": upload_id,
                        "PartNumber": number,
                        "ContentMD5": md5,
                    },
                    ExpiresIn=self._url_ttl_s,
                )
            )
            for number, md5 in enumerate(upload.part_md5s, start=1)
        )
        return UploadPlan(upload_id=upload_id, part_urls=part_urls)

    def complete_upload(
        self, upload: UploadRequest, upload_id: str, part_etags: Iterable[str]
    ) -> ArtifactInfo:
        """Completes a multipart upload (`upload_id`) from its parts, then checks that the
        object has the announced size and sha256; a wrong one is deleted.

        Raises:
            InvalidArgument: the parts do not complete, or the object differs from `upload`.
            NotFound: a single PUT that did not happen.
        """
        common = {"Bucket": self._bucket, "Key": self._object(upload.key)}
        if upload_id:
            parts = [
                {"PartNumber": number, "ETag": etag}
                for number, etag in enumerate(part_etags, start=1)
            ]
            try:
                self._s3.complete_multipart_upload(
                    **common, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except botocore.exceptions.ClientError as err:
                self._abort(upload_id, common)
                raise InvalidArgument(f"upload of {upload.key!r} did not complete: {err}") from None
        info = self._head(upload.key)
        if info.size != upload.size or info.sha256 != upload.sha256.strip().lower():
            self._s3.delete_object(**common)
            raise InvalidArgument(
                f"upload of {upload.key!r} stored {info.size} bytes sha256 {info.sha256!r}; "
                f"the header said {upload.size} bytes sha256 {upload.sha256!r}"
            )
        return info

    def _abort(self, upload_id: str, common: dict[str, str]) -> None:
        try:
            self._s3.abort_multipart_upload(**common, UploadId=upload_id)
        except botocore.exceptions.ClientError:
            pass  # already gone: nothing is left to clean up

    # ----------------------------------------------------------------- writing

    def put(self, key: str, size: int, sha256: str, chunks: Iterable[bytes]) -> ArtifactInfo:
        """Stores `chunks` (streamed through the control) once their size and digest match.

        Raises:
            ResourceExhausted: `size` is over the upload limit.
            InvalidArgument: bad header; more or fewer bytes than announced; a digest mismatch.
        """
        expected = check_upload_header(key, size, sha256, self._max_upload_bytes)
        with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
            copy_checked_upload(key, chunks, size, expected, spool)
            spool.seek(0)
            return self._upload(key, cast(BinaryIO, spool), size, expected)

    def write(self, key: str, produce: Callable[[BinaryIO], object]) -> ArtifactInfo:
        """Stores what `produce` writes (the control's own output, e.g. an assembled `.out`).

        The object appears whole or not at all (a PUT, or a multipart upload boto3 completes
        only once every part arrived).
        """
        with tempfile.TemporaryFile() as scratch:
            produce(cast(BinaryIO, scratch))
            scratch.flush()
            size = scratch.tell()
            scratch.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: scratch.read(CHUNK_BYTES), b""):
                digest.update(block)
            scratch.seek(0)
            return self._upload(key, cast(BinaryIO, scratch), size, digest.hexdigest())

    def _upload(self, key: str, source: BinaryIO, size: int, sha256: str) -> ArtifactInfo:
        self._s3.upload_fileobj(
            source,
            self._bucket,
            self._object(key),
            ExtraArgs={"Metadata": {_SHA256_METADATA: sha256}},
        )
        return ArtifactInfo(key=key, size=size, sha256=sha256)

    def concatenate(self, key: str, part_keys: Sequence[str]) -> ArtifactInfo:
        """Stores the parts' bytes, in order, as the object `key`.

        When S3 allows it (every part but the last at least 5 MiB, none over 5 GiB), the
        object store copies the parts itself (a multipart upload of UploadPartCopy calls), so
        no byte goes through the control; the result then has no sha256 (the control never saw
        its bytes). Otherwise the control copies them (`write`).

        Raises:
            NotFound: a part is missing.
        """
        sizes = [self._head(part).size for part in part_keys]
        fits = (
            1 < len(sizes) <= MAX_PARTS
            and all(size >= MIN_PART_BYTES for size in sizes[:-1])
            and max(sizes) <= MAX_COPY_PART_BYTES
        )
        if not fits:
            return self.write(key, lambda out: self._copy_parts_into(part_keys, out))
        common = {"Bucket": self._bucket, "Key": self._object(key)}
        upload_id = str(self._s3.create_multipart_upload(**common)["UploadId"])
        try:
            parts = []
            for number, part in enumerate(part_keys, start=1):
                copied = self._s3.upload_part_copy(
                    **common,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self._bucket, "Key": self._object(part)},
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            self._s3.complete_multipart_upload(
                **common, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(upload_id, common)
            raise
        return ArtifactInfo(key=key, size=sum(sizes), sha256="")

    def _copy_parts_into(self, part_keys: Sequence[str], out: BinaryIO) -> None:
        for part in part_keys:
            _info, chunks = self.read_chunks(part)
            for chunk in chunks:
                out.write(chunk)

    def delete(self, key: str) -> bool:
        """Removes the object at `key`; False when there was none."""
        try:
            self._head(key)
        except NotFound:
            return False
        self._s3.delete_object(Bucket=self._bucket, Key=self._object(key))
        return True

    def delete_tree(self, prefix_key: str) -> int:
        """Removes every object at or below `prefix_key`, staged shard outputs included."""
        if not prefix_key:
            raise InvalidArgument("refusing to delete the whole artifact store")
        names = [name for name, _size in self._names_under(prefix_key)]
        for start in range(0, len(names), 1000):  # DeleteObjects takes 1000 keys a call
            batch = [{"Key": name} for name in names[start : start + 1000]]
            self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True})
        return len(names)

    # ----------------------------------------------------------------- reading

    def open(self, key: str) -> tuple[ArtifactInfo, IO[bytes]]:
        """The object's info and a seekable local copy of its bytes (a temporary file).

        Raises:
            NotFound: when there is no object at `key`.
        """
        info, chunks = self.read_chunks(key)
        copy = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)
        try:
            for chunk in chunks:
                copy.write(chunk)
            copy.seek(0)
        except BaseException:
            copy.close()
            raise
        return info, cast(IO[bytes], copy)

    def read_chunks(
        self, key: str, offset: int = 0, length: int = 0
    ) -> tuple[ArtifactInfo, Iterator[bytes]]:
        """The object's info and its bytes (or `length` bytes from `offset`) in 1 MiB chunks.

        Raises:
            NotFound: when there is no object at `key`.
            InvalidArgument: a negative offset or length, or an offset beyond the object.
        """
        if offset < 0 or length < 0:
            raise InvalidArgument(f"offset {offset} and length {length} must not be negative")
        info = self._head(key)
        if offset > info.size:
            raise InvalidArgument(
                f"offset {offset} lies beyond the end of {info.uri} ({info.size} bytes)"
            )
        end = info.size if length == 0 else min(info.size, offset + length)
        if end == offset:
            return info, iter(())
        body = self._get(key, offset, end - offset)
        return info, cast(Iterator[bytes], body.iter_chunks(CHUNK_BYTES))

    def _get(self, key: str, offset: int, length: int) -> Any:
        try:
            response = self._s3.get_object(
                Bucket=self._bucket,
                Key=self._object(key),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except botocore.exceptions.ClientError as err:
            if _is_missing(err):
                raise NotFound(f"artifact {SCHEME}{key} not found") from None
            raise
        return response["Body"]

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of the object at `key` from `offset`; fewer at its end.

        Raises:
            NotFound: when there is no object at `key`.
        """
        if length <= 0:
            self._head(key)
            return b""
        try:
            return bytes(self._get(key, offset, length).read())
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # the offset is at or past the end
            raise

    def list(self, prefix_key: str) -> list[ArtifactInfo]:
        """Objects whose key is `prefix_key` or starts with `prefix_key + "/"`, sorted by key.

        The sha256 of listed objects is "" (a listing carries no metadata; PresignDownload and
        DownloadArtifact tell it).
        """
        infos = [
            ArtifactInfo(key=self._key(name), size=size, sha256="")
            for name, size in self._names_under(prefix_key)
            if is_listed(self._key(name))
        ]
        return sorted(infos, key=lambda info: info.key)

    def exists_at_or_under(self, prefix_key: str) -> bool:
        """True when an object is at `prefix_key` or below it as a folder."""
        return any(is_listed(self._key(name)) for name, _size in self._names_under(prefix_key))

    def _names_under(self, prefix_key: str) -> Iterator[tuple[str, int]]:
        """(object name, size) of every object at or below `prefix_key`, staged ones too."""
        base = self._object(prefix_key) if prefix_key else self._location.prefix
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=base)
        for page in pages:
            for item in page.get("Contents", []):
                name = str(item["Key"])
                if not base or name == base or name.startswith(base + "/"):
                    yield name, int(item["Size"])


def _check_parts(upload: UploadRequest) -> None:
    parts = len(upload.part_md5s)
    size, part_bytes = upload.size, upload.part_bytes
    if part_bytes < MIN_PART_BYTES or parts > MAX_PARTS:
        raise InvalidArgument(
            f"upload of {upload.key!r}: parts must be at least {MIN_PART_BYTES} bytes, "
            f"at most {MAX_PARTS} of them"
        )
    if parts != max(1, -(-size // part_bytes)):
        raise InvalidArgument(
            f"upload of {upload.key!r}: {size} bytes in parts of {part_bytes} are "
            f"{-(-size // part_bytes)} parts, not {parts}"
        )


def _is_missing(err: botocore.exceptions.ClientError) -> bool:
    code = str(err.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}
