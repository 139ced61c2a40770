"""Retention as assets: `<dataset>/retention` prunes a dataset's repositories daily and shows what it kept.

They form their own group, `retention`, so materializing a dataset's group backs up without pruning."""

from typing import Any

import dagster as dg

from assets.keys import RETENTION_GROUP, DatasetKeys
from backup_pipelines.manifest import Manifest, as_cron
from backup_pipelines.prune import PruneReport, prune_dataset
from backup_pipelines.repository import open_repository
from resources import ManifestResource


class RetentionResource(dg.ConfigurableResource):
    """Run-level retention settings: `dry_run: true` plans and reports without deleting anything."""

    dry_run: bool = False


def retention_key(name: str) -> dg.AssetKey:
    return DatasetKeys(name).retention


def _report_metadata(report: PruneReport) -> dict[str, Any]:
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("backup_id", "string"),
            dg.TableColumn("partition", "string"),
            dg.TableColumn("created_at", "string"),
            dg.TableColumn("kept_by", "string"),
        ]
    )
    kept = [
        dg.TableRecord(
            {
                "backup_id": r.backup_id,
                "partition": r.partition_key,
                "created_at": r.created_at[:19],
                "kept_by": ", ".join(reasons),
            }
        )
        for r, reasons in report.kept
    ]
    return {
        "dry_run": report.dry_run,
        "kept_count": len(report.kept),
        "expired_count": len(report.expired),
        "bytes_freed": report.bytes_freed,
        "kept": dg.MetadataValue.table(kept, schema=schema),
        "expired": dg.MetadataValue.json(
            [
                {"backup_id": r.backup_id, "partition": r.partition_key, "created_at": r.created_at}
                for r in report.expired
            ]
        ),
        "finished_interrupted": dg.MetadataValue.json(report.finished_interrupted),
        "leftovers": dg.MetadataValue.json(
            [
                {"repository": repository, "kind": item.kind, "uri": item.uri, "bytes": item.size}
                for repository, item in report.leftovers
            ]
        ),
        "damaged_sidecars": dg.MetadataValue.json(
            [{"repository": repository, "uri": item.uri, "reason": item.reason} for repository, item in report.damaged]
        ),
    }


def build_retention_asset(manifest: Manifest, name: str) -> dg.AssetsDefinition:
    """Return `<name>/retention`: prune the dataset's repositories and record every expired partition."""
    keys = DatasetKeys(name)

    @dg.asset(
        key=retention_key(name),
        deps=[keys.backup],
        group_name=RETENTION_GROUP,
        kinds={"retention"},
        description=f"Backups of {name} kept and expired by its retention policy, in every repository.",
    )
    def retention(
        context: dg.AssetExecutionContext, manifest: ManifestResource, retention: RetentionResource
    ) -> dg.MaterializeResult:
        loaded = manifest.load()
        report = prune_dataset(loaded, name, dry_run=retention.dry_run)
        if not report.dry_run:
            remaining = {
                record.partition_key
                for repository in loaded.dataset(name).repositories
                for record in open_repository(loaded, repository).list_backups(name)
            }
            for partition in report.expired_partitions(remaining):
                context.log_event(
                    dg.AssetObservation(
                        asset_key=keys.backup,
                        partition=partition,
                        metadata={"expired": True, "expired_by": "retention", "run_id": context.run.run_id},
                    )
                )
        context.log.info(
            f"{name}: kept {len(report.kept)}, expired {len(report.expired)}, {len(report.leftovers)} leftover(s), "
            f"freed {report.bytes_freed:,} bytes" + (" (dry run: nothing deleted)" if report.dry_run else "")
        )
        for _, damaged in report.damaged:  # never deleted automatically: its object may be the only copy
            context.log.warning(f"{damaged.describe()}: kept, repair or remove it by hand")
        return dg.MaterializeResult(metadata=_report_metadata(report))

    return retention


def build_retention_job(manifest: Manifest) -> tuple[Any, dg.ScheduleDefinition]:
    """The `retention` job over every dataset, and its schedule (`schedules.retention`, daily by default)."""
    job = dg.define_asset_job(
        "retention",
        selection=dg.AssetSelection.assets(*[retention_key(n) for n in manifest.active_datasets()]),
        description="Apply every dataset's retention policy to its repositories (run config: dry_run).",
    )
    schedule = dg.ScheduleDefinition(
        name="retention_schedule",
        job=job,
        cron_schedule=as_cron(manifest.schedules.retention),
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return job, schedule
