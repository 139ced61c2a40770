"""A repository in an S3 bucket: AWS, or any S3-compatible endpoint (MinIO, Ceph, a local test server).

New objects go up as multipart uploads with one part in flight while the next fills, so memory is bounded by
about two parts; an aborted upload is aborted server-side and leaves nothing under the final key.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from backup_pipelines.errors import StorageError
from backup_pipelines.repository.base import BackupRecord, MissingObjectError, ObjectWriter, Repository
from backup_pipelines.repository.inventory import UNFINISHED_UPLOAD, Leftover, StoredObject

NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', error)}"
    return str(error)


class S3ObjectWriter(ObjectWriter):
    """Streams one object to S3 as a multipart upload (or a single PUT when it stays under one part)."""

    def __init__(self, repository: S3Repository, key: str) -> None:
        self.repository = repository
        self.key = key
        self.part_size = repository.part_size
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.parts_sent = 0
        self.pending: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=1)
        self.uploader: threading.Thread | None = None
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        self._raise_upload_error()
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            part = bytes(self.buffer[: self.part_size])
            del self.buffer[: self.part_size]
            self._send_part(part)
        return len(data)

    def _send_part(self, part: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.repository.call(
                "create_multipart_upload", Key=self.key, **self.repository.put_arguments()
            )["UploadId"]
            self.uploader = threading.Thread(target=self._upload_loop, name="s3-upload", daemon=True)
            self.uploader.start()
        self.parts_sent += 1
        self.pending.put((self.parts_sent, part))
        self._raise_upload_error()

    def _upload_loop(self) -> None:
        while (item := self.pending.get()) is not None:
            number, part = item
            if self.error is not None:
                continue
            try:
                response = self.repository.call(
                    "upload_part", Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=part
                )
                self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
            except BaseException as error:
                self.error = error

    def _raise_upload_error(self) -> None:
        if self.error is not None:
            where = f"s3://{self.repository.bucket}/{self.key}"  # self.key is already the full key
            raise StorageError(f"upload of {where} failed: {_describe(self.error)}")

    def _finish_uploader(self) -> None:
        if self.uploader is not None and self.uploader.is_alive():
            self.pending.put(None)
            self.uploader.join()

    def commit(self) -> None:
        try:
            if self.upload_id is None:
                self.repository.call(
                    "put_object", Key=self.key, Body=bytes(self.buffer), **self.repository.put_arguments()
                )
                return
            if self.buffer:
                self._send_part(bytes(self.buffer))
                self.buffer.clear()
            self._finish_uploader()
            self._raise_upload_error()
            parts = sorted(self.parts, key=lambda part: part["PartNumber"])
            self.repository.call(
                "complete_multipart_upload",
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.buffer.clear()
        if self.uploader is not None:
            self.error = self.error or StorageError("aborted")
            while not self.pending.empty():
                try:
                    self.pending.get_nowait()
                except queue.Empty:
                    break
            self._finish_uploader()
        if self.upload_id is not None:
            # An unfinished upload is invisible anyway; a bucket lifecycle rule cleans up what abort cannot.
            with contextlib.suppress(BotoCoreError, ClientError):
                self.repository.client.abort_multipart_upload(
                    Bucket=self.repository.bucket, Key=self.key, UploadId=self.upload_id
                )
            self.upload_id = None


class S3Repository(Repository):
    """Backups as objects under `s3://bucket/prefix/`."""

    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        part_size: int = 16 << 20,
        put_extra: dict[str, str] | None = None,
        lock: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(name)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else make_s3_client("us-east-1", None, None, None)
        self.part_size = part_size
        self.put_extra = put_extra or {}
        self.lock = lock

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}"

    def put_arguments(self) -> dict[str, Any]:
        """Extra arguments of every PUT / multipart upload: SSE settings, and the object lock's retention."""
        arguments: dict[str, Any] = dict(self.put_extra)
        if self.lock is not None:
            mode, days = self.lock
            arguments["ObjectLockMode"] = mode.upper()
            arguments["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=days)
        return arguments

    def call(self, operation: str, Key: str, **arguments: Any) -> Any:
        """Call boto3 `operation` on `Key` (a full key). Raise StorageError naming the object on failure."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=Key, **arguments)
        except (BotoCoreError, ClientError) as error:
            message = f"S3 {operation} on s3://{self.bucket}/{Key} failed: {_describe(error)}"
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in NOT_FOUND:
                raise MissingObjectError(message) from error
            raise StorageError(message) from error

    def open_writer(self, path: str) -> ObjectWriter:
        return S3ObjectWriter(self, self.key(path))

    def put_bytes(self, path: str, data: bytes) -> None:
        self.call("put_object", Key=self.key(path), Body=data, **self.put_arguments())

    def open_object(self, path: str) -> IO[bytes]:
        body: IO[bytes] = self.call("get_object", Key=self.key(path))["Body"]
        return body

    def read_bytes(self, path: str) -> bytes:
        stream = self.open_object(path)
        try:
            return stream.read()
        finally:
            stream.close()

    def _full_prefix(self, prefix: str) -> str:
        return self.key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")

    def _relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object under `prefix` from ListObjectsV2 (one request per 1,000 keys)."""
        full_prefix = self._full_prefix(prefix)
        found = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                found += [
                    StoredObject(self._relative(item["Key"]), int(item["Size"]), item["LastModified"])
                    for item in page.get("Contents", [])
                ]
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"cannot list s3://{self.bucket}/{full_prefix}: {_describe(error)}") from error
        return sorted(found, key=lambda item: item.path)

    def exists(self, path: str) -> bool:
        try:
            self.call("head_object", Key=self.key(path))
        except MissingObjectError:
            return False
        return True

    def leftovers(self, dataset: str, older_than: datetime) -> list[Leftover]:
        """The leftovers of `Repository.leftovers`, plus multipart uploads under `<dataset>/` never completed
        nor aborted whose last part (or start) is older than `older_than`: a running upload sends a part every
        few seconds, so it never looks stale."""
        found = super().leftovers(dataset, older_than)
        full_prefix = self._full_prefix(f"{dataset}/")
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            uploads = [
                upload
                for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix)
                for upload in page.get("Uploads", [])
            ]
        except (BotoCoreError, ClientError) as error:
            where = f"s3://{self.bucket}/{full_prefix}"
            raise StorageError(f"cannot list the unfinished uploads of {where}: {_describe(error)}") from error
        for upload in uploads:
            size, last = self._upload_parts(upload["Key"], upload["UploadId"])
            modified = max([upload["Initiated"], *last])
            if modified < older_than:
                path = self._relative(upload["Key"])
                uri = f"{self.uri(path)} (upload {upload['UploadId'][:16]})"
                found.append(Leftover(UNFINISHED_UPLOAD, path, uri, size, modified, upload["UploadId"]))
        return found

    def _upload_parts(self, key: str, upload_id: str) -> tuple[int, list[datetime]]:
        """Return the bytes an unfinished upload holds and the time of its newest part (if any)."""
        size, newest = 0, list[datetime]()
        paginator = self.client.get_paginator("list_parts")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    size += int(part["Size"])
                    newest = [max([*newest, part["LastModified"]])]
        except (BotoCoreError, ClientError) as error:
            code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None
            if code != "NoSuchUpload":  # else finished or aborted meanwhile
                raise StorageError(f"cannot list the parts of s3://{self.bucket}/{key}: {_describe(error)}") from error
        return size, newest

    def remove_leftover(self, leftover: Leftover) -> bool:
        """Remove a leftover; an unfinished upload is aborted (gone already counts as removed)."""
        if leftover.upload_id is None:
            return super().remove_leftover(leftover)
        try:
            self.call("abort_multipart_upload", Key=self.key(leftover.path), UploadId=leftover.upload_id)
        except MissingObjectError:
            return False
        return True

    def delete(self, path: str) -> None:
        self.call("delete_object", Key=self.key(path))

    def locked_until(self, record: BackupRecord) -> datetime | None:
        """Return the object lock's retain-until date of the backup's data (or far future under a legal hold)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(record.object_path))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot read the lock of {self.uri(record.object_path)}: {_describe(error)}") from error
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return datetime.max.replace(tzinfo=UTC)
        until: datetime | None = head.get("ObjectLockRetainUntilDate")
        return until


def make_s3_client(region: str, endpoint_url: str | None, access_key: str | None, secret_key: str | None) -> Any:
    """Return a boto3 S3 client for the region/endpoint, with standard retries and path-style addressing
    for custom endpoints. Credentials default to boto3's chain when not given."""
    import boto3  # loaded when S3 is first needed (see backup_pipelines.aws.make_client)
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else {},
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )
