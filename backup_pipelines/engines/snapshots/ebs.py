"""EBS volumes: volume snapshots, restore tests on a temporary volume."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code
from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.engines.snapshots.base import (
    TAG_RESTORE_TEST,
    SnapshotEngine,
    _outcome,
)
from backup_pipelines.errors import SourceUnavailableError, StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.repository.snapshot_tags import (
    NOT_FOUND_RETRIES,
    TAG_DATASET,
    tag_dict,
    tag_list,
)


class EbsEngine(SnapshotEngine):
    """EBS volumes: volume snapshots; restore tests create a temporary volume from the snapshot."""

    kind = "ebs"
    format = "ebs-snapshot"
    complete_status = "completed"
    size_field = "VolumeSize"
    restored_noun = "volume"

    def temporary_resources(self, store: SnapshotStore, name: str) -> list[tuple[str, datetime]]:
        filters = [{"Name": f"tag:{TAG_DATASET}", "Values": [name]}, {"Name": "tag-key", "Values": [TAG_RESTORE_TEST]}]
        pages = store.client("ec2").get_paginator("describe_volumes").paginate(Filters=filters)
        return [
            (str(volume["VolumeId"]), volume["CreateTime"])
            for page in pages
            for volume in page["Volumes"]
            if volume.get("State") != "deleting"
        ]

    def check_source(self, manifest: Manifest, name: str, store: SnapshotStore) -> None:
        self._volume(manifest, name, store)

    def _volume(self, manifest: Manifest, name: str, store: SnapshotStore) -> dict[str, Any]:
        volume = self.source(manifest, name).volume_id
        try:
            return dict(store.client("ec2").describe_volumes(VolumeIds=[volume])["Volumes"][0])
        except AWS_ERRORS as error:
            raise SourceUnavailableError(
                f"dataset {name}: EBS volume {volume} in {store.region}: {describe_error(error)}"
            ) from error

    def create_snapshot(
        self, manifest: Manifest, name: str, store: SnapshotStore, identifier: str, tags: dict[str, str]
    ) -> str:
        volume = self.source(manifest, name).volume_id
        try:
            answer = store.client("ec2").create_snapshot(
                VolumeId=volume,
                Description=f"backup-pipelines {name} {tags.get('bp-partition', '')}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )
        except AWS_ERRORS as error:
            raise StorageError(f"CreateSnapshot of {volume} in {store.region}: {describe_error(error)}") from error
        return str(answer["SnapshotId"])

    def _zone(self, manifest: Manifest, name: str, store: SnapshotStore) -> str:
        source = self.source(manifest, name)
        if store.region == source.region:  # zones belong to one region: elsewhere any zone will do
            if source.restore_availability_zone:
                return str(source.restore_availability_zone)
            with contextlib.suppress(SourceUnavailableError):  # the volume may be gone (a disaster)
                return str(self._volume(manifest, name, store)["AvailabilityZone"])
        available = [{"Name": "state", "Values": ["available"]}]
        zones = store.client("ec2").describe_availability_zones(Filters=available)["AvailabilityZones"]
        return str(zones[0]["ZoneName"])

    def start_restore(
        self,
        manifest: Manifest,
        name: str,
        store: SnapshotStore,
        record: BackupRecord,
        target: str,
        tags: dict[str, str],
    ) -> str:
        source = self.source(manifest, name)
        try:
            answer = store.client("ec2").create_volume(
                SnapshotId=record.object_name,
                AvailabilityZone=self._zone(manifest, name, store),
                VolumeType=source.restore_volume_type,
                TagSpecifications=[
                    {"ResourceType": "volume", "Tags": tag_list({"Name": target, TAG_DATASET: name, **tags})}
                ],
            )
        except AWS_ERRORS as error:
            raise StorageError(
                f"creating a volume from {record.object_name} in {store.region}: {describe_error(error)}"
            ) from error
        return str(answer["VolumeId"])

    def wait_restored(self, store: SnapshotStore, resource: str) -> None:
        store.wait("ec2", "volume_available", f"restored volume {resource}", VolumeIds=[resource])

    def describe_restored(self, store: SnapshotStore, resource: str) -> dict[str, Any]:
        return dict(store.client("ec2").describe_volumes(VolumeIds=[resource])["Volumes"][0])

    def compare(self, snapshot: dict[str, Any], restored: dict[str, Any]) -> list[CheckOutcome]:
        tags = tag_dict(restored.get("Tags"))
        return [
            _outcome("volume state", "available", restored.get("State")),
            _outcome("size (GiB)", snapshot.get("VolumeSize"), restored.get("Size")),
            _outcome("encrypted", bool(snapshot.get("Encrypted")), bool(restored.get("Encrypted"))),
            _outcome("from snapshot", snapshot.get("SnapshotId"), restored.get("SnapshotId")),
            CheckOutcome("tagged", TAG_DATASET, sorted(tags), TAG_DATASET in tags),
        ]

    def delete_restored(self, store: SnapshotStore, resource: str) -> None:
        """Delete the volume CreateVolume returned. EC2 may not see a volume made a moment ago: "not found"
        is believed only after a few polls."""
        for attempt in range(NOT_FOUND_RETRIES):
            try:
                store.client("ec2").delete_volume(VolumeId=resource)
                break
            except AWS_ERRORS as error:
                if error_code(error) == "InvalidVolume.NotFound" and attempt < NOT_FOUND_RETRIES - 1:
                    time.sleep(store.config.poll_seconds)
                    continue
                if error_code(error) == "InvalidVolume.NotFound":
                    return
                raise StorageError(
                    f"the temporary volume {resource} in {store.region} could not be deleted "
                    f"({describe_error(error)}): delete it by hand, it costs money"
                ) from error
        store.wait("ec2", "volume_deleted", f"deleting temporary volume {resource}", VolumeIds=[resource])
