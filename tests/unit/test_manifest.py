from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from backup_pipelines.cli import main as cli_main
from backup_pipelines.errors import ManifestError, MissingSecretError
from backup_pipelines.manifest import (
    CommandDataset,
    FilesDataset,
    load_manifest,
    manifest_json_schema,
    parse_manifest,
    read_secret,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPIENT = "age1p2xdngslz92zezwfmqqtwl4zwg8ptz9l7nrcr0vfhfy7vqdsxd4qjv55r2"

VALID = {
    "repositories": {"local": {"type": "local", "path": "backups"}},
    "servers": {"pg": {"kind": "postgres", "user": "backup", "password_env": "PG_PASSWORD"}},
    "datasets": {
        "orders": {
            "kind": "postgres",
            "schedule": "hourly",
            "rpo": "1h",
            "rto": "30m",
            "retention": {"keep_hourly": 24, "keep_within": "7d"},
            "repositories": ["local"],
            "encryption": {"recipients": [RECIPIENT]},
            "source": {"server": "pg", "database": "orders"},
        }
    },
}


def errors_of(data: dict, file: str = "m.yaml") -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(yaml.safe_dump(data), file)
    return [problem.render(file) for problem in caught.value.problems]


def with_dataset(**changes: object) -> dict:
    data = json.loads(json.dumps(VALID))
    data["datasets"]["orders"].update(changes)
    return data


def test_valid_manifest_parses_durations_and_defaults() -> None:
    manifest = parse_manifest(yaml.safe_dump(VALID))
    dataset = manifest.dataset("orders")
    assert dataset.rpo == timedelta(hours=1)
    assert dataset.retention.keep_within == timedelta(days=7)
    assert dataset.verification.compare_row_counts is True
    assert manifest.recipients_for("orders") == [RECIPIENT]


def test_unknown_field_is_named_with_file_line_and_dataset() -> None:
    [message] = errors_of(with_dataset(retension={"keep_last": 1}))
    assert message.startswith("m.yaml:")
    assert "datasets.orders.retension" in message
    assert "unknown field 'retension'" in message


def test_bad_duration_names_the_field_and_the_accepted_forms() -> None:
    [message] = errors_of(with_dataset(rpo="1 hour"))
    assert "datasets.orders.rpo" in message
    assert "invalid duration '1 hour'" in message and "30m" in message


def test_unknown_repository_lists_the_known_ones() -> None:
    [message] = errors_of(with_dataset(repositories=["local", "offsite"]))
    assert "datasets.orders.repositories.1" in message
    assert "unknown repository 'offsite' (known: local)" in message


def test_bad_cron_schedule_is_one_clear_message() -> None:
    [message] = errors_of(with_dataset(schedule="every hour"))
    assert "datasets.orders.schedule" in message
    assert "invalid schedule 'every hour'" in message


def test_cron_schedule_is_accepted() -> None:
    manifest = parse_manifest(yaml.safe_dump(with_dataset(schedule="0 */6 * * *", rpo="6h")))
    assert manifest.dataset("orders").schedule == "0 */6 * * *"


def test_unknown_server_is_reported() -> None:
    data = with_dataset(source={"server": "pg2", "database": "x"})
    [message] = errors_of(data)
    assert "datasets.orders.source.server" in message and "unknown server 'pg2'" in message


def test_encryption_is_on_by_default_and_needs_recipients() -> None:
    data = with_dataset()
    del data["datasets"]["orders"]["encryption"]
    [message] = errors_of(data)
    assert "datasets.orders.encryption" in message and "enabled: false" in message


def test_encryption_can_be_turned_off_only_explicitly() -> None:
    manifest = parse_manifest(yaml.safe_dump(with_dataset(encryption={"enabled": False})))
    assert manifest.recipients_for("orders") == []


def test_malformed_recipient_is_rejected() -> None:
    [message] = errors_of(with_dataset(encryption={"recipients": ["age1notakey"]}))
    assert "datasets.orders.encryption.recipients.0" in message and "not an age X25519 public key" in message


def test_every_problem_is_reported_at_once() -> None:
    messages = errors_of(with_dataset(rpo="soon", rto="later", schedule="weekly-ish"))
    assert len(messages) == 3


def test_file_trees_need_a_restic_repository_and_databases_an_object_one() -> None:
    data = with_dataset()
    data["repositories"]["restic"] = {"type": "restic", "repository": "r", "password_env": "RESTIC_PASSWORD"}
    data["datasets"]["configs"] = {
        **data["datasets"]["orders"],
        "kind": "files",
        "source": {"paths": ["/etc"]},
        "repositories": ["local"],
    }
    data["datasets"]["orders"]["repositories"] = ["restic"]
    messages = errors_of(data)
    assert any(
        "datasets.configs.repositories.0" in m and "files dataset needs a restic repository" in m for m in messages
    )
    assert any("datasets.orders.repositories.0" in m and "postgres dataset needs a local or s3" in m for m in messages)


def test_retention_needs_a_rule() -> None:
    [message] = errors_of(with_dataset(retention={}))
    assert "datasets.orders.retention" in message and "at least one keep_" in message


def test_missing_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_PASSWORD", raising=False)
    with pytest.raises(MissingSecretError, match=r"PG_PASSWORD is not set \(needed by servers.pg.password_env\)"):
        read_secret("PG_PASSWORD", "servers.pg.password_env")


def test_recipients_file_removed_after_loading_is_reported_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "recipients.txt").write_text(f"# the backup team\n{RECIPIENT}\n")
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump(with_dataset(encryption={"recipients_file": "keys/recipients.txt"}))
    )
    manifest = load_manifest(tmp_path / "m.yaml")
    assert manifest.recipients_for("orders") == [RECIPIENT]
    (tmp_path / "keys" / "recipients.txt").unlink()
    with pytest.raises(MissingSecretError, match=r"recipients\.txt"):
        manifest.recipients_for("orders")


def test_unreadable_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: cannot read"):
        load_manifest(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("datasets: [\n")
    with pytest.raises(ManifestError, match=r"bad.yaml:\d+: not valid YAML"):
        load_manifest(tmp_path / "bad.yaml")


@pytest.fixture
def example_manifest(tmp_path: Path) -> Path:
    """The example manifest, copied beside the age recipients file the demo generates (`.local/` is not
    committed, and recipients files are checked at load time)."""
    keys = tmp_path / ".local" / "keys"
    keys.mkdir(parents=True)
    (keys / "age-recipients.txt").write_text(RECIPIENT + "\n")
    copy = tmp_path / "backup_manifest.yaml"
    copy.write_text((ROOT / "backup_manifest.yaml").read_text())
    return copy


def test_example_manifest_is_valid_and_mirrors_the_seed(example_manifest: Path) -> None:
    manifest = load_manifest(example_manifest)
    names = ["postgres_main", "cluster_main", "shop_mysql", "configs", "secrets", "notes_sqlite"]
    assert list(manifest.active_datasets()) == names
    kinds = {"postgres", "postgres_cluster", "mysql", "files", "command", "sqlite"}
    assert {d.kind for d in manifest.active_datasets().values()} == kinds
    assert manifest.datasets["postgres_main"].schedule == "hourly"
    configs, secrets = manifest.datasets["configs"], manifest.datasets["secrets"]
    assert isinstance(configs, FilesDataset) and isinstance(secrets, CommandDataset)
    assert configs.retention.keep_daily == 90
    assert secrets.retention.keep_daily == 365
    assert manifest.encryption_for("secrets").enabled


def test_json_schema_describes_every_field() -> None:
    schema = manifest_json_schema()
    postgres = schema["$defs"]["PostgresDataset"]
    assert postgres["additionalProperties"] is False
    models = [schema, *schema["$defs"].values()]
    undescribed = [
        name for model in models for name, field in model.get("properties", {}).items() if "description" not in field
    ]
    assert undescribed == []
    assert {"rpo", "rto", "retention", "repositories", "encryption", "verification"} <= set(postgres["properties"])


def test_committed_json_schema_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    assert committed == manifest_json_schema(), "regenerate: backup-pipelines schema > docs/manifest.schema.json"


def test_cli_validate_exits_1_listing_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(with_dataset(rpo="x", repositories=["nowhere"])))
    assert cli_main(["--manifest", str(tmp_path / "m.yaml"), "validate"]) == 1
    stderr = capsys.readouterr().err
    assert "2 problem(s)" in stderr and "datasets.orders.rpo" in stderr and "m.yaml" in stderr


def test_cli_validate_and_schema_succeed_on_the_example(
    example_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--manifest", str(example_manifest), "validate"]) == 0
    assert "valid: 6 datasets (6 backed up)" in capsys.readouterr().out
    assert cli_main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Manifest"


def test_the_aws_example_manifest_is_valid() -> None:
    manifest = load_manifest(ROOT / "docs" / "examples" / "aws.yaml")
    assert [dataset.kind for dataset in manifest.active_datasets().values()] == ["rds", "aurora", "ebs"]
    assert list(manifest.watched_buckets()) == ["uploads_bucket"]
    assert manifest.recipients_for("orders_rds") == []  # KMS, not age


AWS = {
    "repositories": {
        "west": {"type": "aws_snapshots", "region": "eu-west-1"},
        "central": {"type": "aws_snapshots", "region": "eu-central-1", "offsite": True, "kms_key_id": "alias/dr"},
        "central_no_key": {"type": "aws_snapshots", "region": "eu-central-1"},
        "local": {"type": "local", "path": "backups"},
    },
    "datasets": {
        "db": {
            "kind": "rds",
            "schedule": "daily",
            "rpo": "1d",
            "rto": "1h",
            "retention": {"keep_daily": 7},
            "repositories": ["west", "central"],
            "source": {"db_instance_identifier": "db-prod", "region": "eu-west-1"},
        }
    },
}


def aws_with(**changes: object) -> dict:
    data = json.loads(json.dumps(AWS))
    data["datasets"]["db"].update(changes)
    return data


def test_aws_datasets_need_snapshot_repositories_in_the_source_region_and_no_age() -> None:
    assert parse_manifest(yaml.safe_dump(AWS)).dataset("db").kind == "rds"
    [message] = errors_of(aws_with(repositories=["central", "west"]))
    assert "datasets.db.repositories.0" in message and "is in eu-central-1, the source in eu-west-1" in message
    [message] = errors_of(aws_with(repositories=["west", "local"]))
    assert "a rds dataset needs an aws_snapshots repository; 'local' is not one" in message
    data = aws_with(repositories=["west", "west_again"])
    data["repositories"]["west_again"] = {"type": "aws_snapshots", "region": "eu-west-1", "offsite": True}
    [message] = errors_of(data)
    assert "'west_again' and 'west' keep snapshots in the same region (eu-west-1)" in message
    [message] = errors_of(aws_with(repositories=["west", "central_no_key"]))
    assert "'central_no_key' receives copies of encrypted RDS snapshots from eu-west-1: give it a kms_key_id" in message
    source = {"db_instance_identifier": "db-prod", "region": "eu-west-1", "require_encryption": False}
    parse_manifest(yaml.safe_dump(aws_with(repositories=["west", "central_no_key"], source=source)))
    query = {"name": "orders", "sql": "select count(*) from orders", "expect": {"min": 1}}
    [message] = errors_of(aws_with(verification={"queries": [query]}))
    assert "verification.queries run on the restored instance only with source.restore_login" in message
    login = {"database": "orders", "user": "admin", "password_env": "ORDERS_PASSWORD"}
    source = {"db_instance_identifier": "db-prod", "region": "eu-west-1", "restore_login": login}
    parse_manifest(yaml.safe_dump(aws_with(source=source, verification={"queries": [query]})))
    same = {**query, "expect": {"same_as_source": True}}
    [message] = errors_of(aws_with(source=source, verification={"queries": [same]}))
    assert "same_as_source needs the source queried inside the snapshot" in message
    [message] = errors_of(aws_with(encryption={"recipients": [RECIPIENT]}))
    assert "encrypted with KMS by AWS, not with age" in message
    [message] = errors_of(aws_with(kind="ebs", source={"volume_id": "disk-1", "region": "eu-west-1"}))
    assert "datasets.db.source.volume_id" in message
    data = aws_with()
    data["datasets"]["files"] = {**data["datasets"]["db"], "kind": "files", "source": {"paths": ["etc"]}}
    data["datasets"]["files"]["encryption"] = {"enabled": False}
    assert any("a files dataset needs a restic repository; 'west'" in m for m in errors_of(data))


def test_a_bucket_dataset_is_checked_not_backed_up() -> None:
    data = aws_with()
    data["datasets"]["uploads"] = {"kind": "s3", "source": {"bucket": "uploads", "region": "eu-west-1"}}
    manifest = parse_manifest(yaml.safe_dump(data))
    assert list(manifest.active_datasets()) == ["db"] and manifest.watched_buckets()["uploads"].schedule == "daily"
    data["datasets"]["uploads"]["rpo"] = "1d"
    [message] = errors_of(data)
    assert "datasets.uploads.rpo" in message and "unknown field 'rpo'" in message


def test_a_bad_operation_schedule_is_named() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(yaml.safe_dump({**VALID, "schedules": {"retention": "every night"}}))
    assert "schedules.retention" in str(caught.value) and "every night" in str(caught.value)
