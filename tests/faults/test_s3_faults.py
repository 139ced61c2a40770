"""Storage errors mid-upload, through a proxy of our own in front of moto's S3 server: error statuses, reset
connections, stalls longer than the client's timeout and lost replies, on each request of a backup or after
N bytes, once or as an outage. The failed backup must leave no backup that does not restore; prune then
clears what the failure left (unfinished uploads, objects without a sidecar) and the next run succeeds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import run_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import open_object_repository
from backup_pipelines.repository import s3 as s3_module
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, manifest_dict, write_manifest
from tests.faults.common import (
    assert_committed_backups_restore,
    assert_next_run_succeeds,
    command_manifest,
    expect_failure,
)
from tests.faults.s3_proxy import Fault, FaultyS3Proxy

FAULT_READ_TIMEOUT = 1.5
PART = 5 << 20
BIG_OBJECT_REQUESTS = ["POST create", "PUT part 1", "PUT part 2", "POST complete", "PUT sidecar"]
SMALL_OBJECT_REQUESTS = ["PUT object", "PUT companion", "PUT sidecar"]


@pytest.fixture(scope="module")
def proxy(s3_endpoint: S3Endpoint) -> Iterator[FaultyS3Proxy]:
    server = FaultyS3Proxy(s3_endpoint.url)
    try:
        yield server
    finally:
        server.close()


CLIENTS: dict[tuple[Any, ...], Any] = {}


@pytest.fixture(autouse=True)
def impatient_client(monkeypatch: pytest.MonkeyPatch, proxy: FaultyS3Proxy) -> Iterator[None]:
    """S3 clients without retries and with a read timeout shorter than the proxy's stall, so one injected
    fault is one failed request (the project's own client retries 5 times and waits 120 s)."""
    import boto3
    from botocore.config import Config

    def make_client(region: str, endpoint_url: str | None, access_key: str | None, secret_key: str | None) -> Any:
        key = (region, endpoint_url, access_key, secret_key)
        if key not in CLIENTS:  # building a boto3 client costs about as much as a small backup: reuse it
            CLIENTS[key] = build_client(region, endpoint_url, access_key, secret_key)
        return CLIENTS[key]

    def build_client(region: str, endpoint_url: str | None, access_key: str | None, secret_key: str | None) -> Any:
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=FAULT_READ_TIMEOUT,
        )
        return boto3.session.Session().client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    monkeypatch.setattr(s3_module, "make_s3_client", make_client)
    proxy.arm(None)
    yield
    proxy.arm(None)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5.25 MB that zstd does not shrink: a multipart upload of two parts (5 MB and the rest)."""
    import random

    path = tmp_path_factory.mktemp("s3-faults") / "big.bin"
    path.write_bytes(random.Random(7).randbytes((5 << 20) + (256 << 10)))
    return path


BUCKETS: list[str] = []


@pytest.fixture(autouse=True)
def empty_buckets_afterwards(s3_endpoint: S3Endpoint) -> Iterator[None]:
    """moto keeps everything in memory and slows down as it fills: each case's bucket goes at its end."""
    yield
    client = s3_endpoint.client()
    while BUCKETS:
        bucket = BUCKETS.pop()
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


def s3_repository(proxy: FaultyS3Proxy, s3_endpoint: S3Endpoint) -> dict[str, Any]:
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    BUCKETS.append(bucket)
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": "backups",
        "endpoint_url": proxy.url,
        "access_key_id_env": S3_KEY_ENV,
        "secret_access_key_env": S3_SECRET_ENV,
        "part_size_mb": 5,
    }


def big_manifest(tmp_path: Path, age_keys: KeyPair, big_file: Path, repository: dict[str, Any]) -> Manifest:
    dataset = {
        "kind": "command",
        "source": {"command": ["cat", str(big_file)], "validate_command": ["cmp", "-", str(big_file)]},
    }
    return command_manifest(tmp_path, age_keys, {"blob": dataset}, {"s3": repository})


def assert_no_debris_after_prune(manifest: Manifest, name: str) -> None:
    """Prune removes what the failure left: afterwards every object belongs to a listed backup and no
    multipart upload is unfinished."""
    prune_dataset(manifest, name, now=datetime.now(UTC) + timedelta(minutes=5), leftover_age=timedelta(0))
    repository = open_object_repository(manifest, manifest.dataset(name).repositories[0])
    listing = repository.scan(name)
    owned = set()
    for record in listing.records:
        owned |= {record.object_path, record.sidecar_path, record.marker_path}
        owned |= {record.companion_path(label) for label in record.companions}
    stray = [item.path for item in repository.list_objects(f"{name}/") if item.path not in owned]
    assert stray == [], f"left after prune: {stray}"
    uploads = repository.client.list_multipart_uploads(Bucket=repository.bucket).get("Uploads", [])  # type: ignore[attr-defined]
    assert uploads == []


def run_fault(proxy: FaultyS3Proxy, manifest: Manifest, name: str, partition: str, fault: Fault) -> None:
    proxy.arm(fault)
    try:
        expect_failure(lambda: run_backup(manifest, name, partition))
        assert proxy.fired, f"the fault never fired: {proxy.log}"
    finally:
        proxy.arm(None)
    assert_committed_backups_restore(manifest, name)
    assert_no_debris_after_prune(manifest, name)
    assert_next_run_succeeds(manifest, name, partition)


def test_a_clean_big_backup_makes_the_requests_the_faults_target(
    tmp_path: Path, age_keys: KeyPair, big_file: Path, proxy: FaultyS3Proxy, s3_endpoint: S3Endpoint
) -> None:
    manifest = big_manifest(tmp_path, age_keys, big_file, s3_repository(proxy, s3_endpoint))
    proxy.log.clear()
    run_backup(manifest, "blob", "2026-12-01")
    assert [line.split()[0] for line in proxy.log] == [request.split()[0] for request in BIG_OBJECT_REQUESTS]


BIG_FAULTS = [
    *[Fault(mode, at_request=n) for mode in ("500", "reset", "lost_reply") for n in range(1, 6)],
    Fault("503", at_request=2),
    *[Fault("stall", at_request=n) for n in (2, 5)],
    *[Fault("reset", after_bytes=n) for n in (1 << 20, PART + 100_000)],
    Fault("stall", after_bytes=3 << 20),
    *[Fault("503", at_request=n, outage=True) for n in (2, 5)],
    Fault("lost_reply", at_request=5, outage=True),
]


def _name(fault: Fault) -> str:
    where = f"request{fault.at_request}" if fault.at_request else f"after{fault.after_bytes}bytes"
    return f"{fault.mode}-{where}" + ("-outage" if fault.outage else "")


@pytest.mark.parametrize("fault", BIG_FAULTS, ids=_name)
def test_a_storage_fault_during_a_multipart_upload_commits_nothing_that_does_not_restore(
    tmp_path: Path, age_keys: KeyPair, big_file: Path, proxy: FaultyS3Proxy, s3_endpoint: S3Endpoint, fault: Fault
) -> None:
    manifest = big_manifest(tmp_path, age_keys, big_file, s3_repository(proxy, s3_endpoint))
    run_fault(proxy, manifest, "blob", "2026-12-01", fault)


SMALL_FAULTS = [Fault(mode, at_request=n) for mode in ("500", "lost_reply") for n in (1, 2, 3)]


@pytest.mark.parametrize("fault", SMALL_FAULTS, ids=_name)
def test_a_storage_fault_on_a_postgres_object_companion_or_sidecar_commits_nothing_that_does_not_restore(
    tmp_path: Path,
    postgres: PostgresSandbox,
    faults_database: str,
    age_keys: KeyPair,
    proxy: FaultyS3Proxy,
    s3_endpoint: S3Endpoint,
    fault: Fault,
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], database=faults_database)
    data["repositories"] = {"s3": s3_repository(proxy, s3_endpoint)}
    data["datasets"]["app_db"]["repositories"] = ["s3"]
    manifest = write_manifest(tmp_path / "m.yaml", data)
    proxy.log.clear()
    run_fault(proxy, manifest, "app_db", "2026-12-01-05:00", fault)
    assert len(proxy.log) >= len(SMALL_OBJECT_REQUESTS)
