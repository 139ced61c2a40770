"""The manifest refuses what cannot work (absurd numbers, impossible RPOs, duplicate keys, missing or secret
age keys), naming the field and the line, all problems at once and never as a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from backup_pipelines.errors import ManifestError
from backup_pipelines.manifest import load_manifest, parse_manifest
from tests.conftest import cli_folder

ROOT = Path(__file__).resolve().parents[2]
RECIPIENT = "age1p2xdngslz92zezwfmqqtwl4zwg8ptz9l7nrcr0vfhfy7vqdsxd4qjv55r2"
SECRET = str(pyrage.x25519.Identity.generate())

# Line numbers below refer to this text (line 1 is `repositories:`).
MANIFEST = f"""\
repositories:
  local: {{type: local, path: backups}}
datasets:
  orders:
    kind: sqlite
    schedule: hourly
    rpo: 1h
    rto: 30m
    retention:
      keep_hourly: 24
    repositories: [local]
    encryption:
      recipients: [{RECIPIENT}]
    source: {{path: orders.db}}
"""


def problems_of(text: str, file: str = "m.yaml") -> list[str]:
    """Parse `text`, expecting a ManifestError; return its problems rendered as the operator sees them."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file)
    return [problem.render(file) for problem in caught.value.problems]


def replaced(old: str, new: str) -> str:
    assert old in MANIFEST
    return MANIFEST.replace(old, new)


def test_the_base_manifest_of_these_tests_is_valid() -> None:
    assert parse_manifest(MANIFEST).dataset("orders").kind == "sqlite"


def test_a_duration_too_large_for_python_is_a_named_field_not_an_overflow_traceback() -> None:
    [message] = problems_of(replaced("rpo: 1h", "rpo: 99999999999999w"))
    assert message.startswith("m.yaml:7: datasets.orders.rpo: duration '99999999999999w' is too long")


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("rpo: 1h", "rpo: 5200w", "datasets.orders.rpo", 7),
        ("rto: 30m", "rto: 5200w", "datasets.orders.rto", 8),
        ("rto: 30m", "rto: 30m\n    retry_delay: 4000d", "datasets.orders.retry_delay", 9),
        ("keep_hourly: 24", "keep_hourly: 24\n      keep_within: 522w", "datasets.orders.retention.keep_within", 11),
        ("keep_hourly: 24", "keep_hourly: 24\n      min_age: 87601h", "datasets.orders.retention.min_age", 11),
    ],
)
def test_every_duration_is_at_most_ten_years(old: str, new: str, field: str, line: int) -> None:
    [message] = problems_of(replaced(old, new))
    assert message.startswith(f"m.yaml:{line}: {field}: duration")
    assert "at most 3650d (10 years)" in message


def test_a_reminder_longer_than_ten_years_is_refused() -> None:
    [message] = problems_of(MANIFEST + "alerts:\n  reminder: 100000d\n")
    assert message.startswith("m.yaml:16: alerts.reminder: duration '100000d' is too long")


def test_a_date_that_does_not_exist_names_the_field_instead_of_a_traceback() -> None:
    messages = problems_of("partition_start: 2026-13-01\n" + replaced("rpo: 1h", "rpo: 1h\n    start: 2026-02-30"))
    assert messages[0].startswith("m.yaml:1: partition_start: ") and "month" in messages[0]
    assert messages[1].startswith("m.yaml:9: datasets.orders.start: ") and "day" in messages[1]


def test_an_rpo_shorter_than_a_daily_schedule_can_never_be_met() -> None:
    [message] = problems_of(replaced("schedule: hourly", "schedule: daily"))
    assert message.startswith("m.yaml:7: datasets.orders.rpo: rpo 1h can never be met")
    assert "up to 1d between runs" in message


def test_an_rpo_is_judged_against_the_longest_gap_of_a_cron_schedule() -> None:
    [message] = problems_of(replaced("schedule: hourly", "schedule: '*/5 9-17 * * 1-5'"))
    assert message.startswith("m.yaml:7: datasets.orders.rpo: rpo 1h can never be met")
    assert "up to 3785m between runs" in message  # Friday 17:55 to Monday 09:00
    weekends_covered = replaced("schedule: hourly", "schedule: '*/5 9-17 * * 1-5'").replace("rpo: 1h", "rpo: 3d")
    assert parse_manifest(weekends_covered).dataset("orders").schedule == "*/5 9-17 * * 1-5"


def test_an_rpo_equal_to_a_monthly_crons_longest_month_is_accepted() -> None:
    text = replaced("schedule: hourly", "schedule: '0 3 1 * *'").replace("rpo: 1h", "rpo: 31d")
    assert parse_manifest(text).dataset("orders").rpo.days == 31
    [message] = problems_of(text.replace("rpo: 31d", "rpo: 30d"))
    assert "datasets.orders.rpo: rpo 30d can never be met" in message and "up to 31d" in message


@pytest.mark.parametrize(
    ("old", "new", "path", "lines"),
    [
        ("rto: 30m", "rto: 30m\n    rpo: 2h", "datasets.orders.rpo", (7, 9)),
        (
            "      keep_hourly: 24",
            "      keep_hourly: 24\n      keep_hourly: 48",
            "datasets.orders.retention.keep_hourly",
            (10, 11),
        ),
        ("datasets:\n", "datasets:\n  orders: {}\n", "datasets.orders", (4, 5)),
    ],
)
def test_a_duplicated_key_is_refused_naming_the_key_and_both_lines(
    old: str, new: str, path: str, lines: tuple[int, int]
) -> None:
    messages = problems_of(replaced(old, new))
    key = path.rsplit(".", 1)[-1]
    expected = f"m.yaml:{lines[1]}: {path}: duplicate key {key!r} on lines {lines[0]} and {lines[1]}"
    assert any(message.startswith(expected) for message in messages), messages


def test_a_duplicated_key_in_a_list_item_and_at_the_top_level_are_both_found() -> None:
    text = MANIFEST + "repositories:\n  other: {type: local, path: b}\n"
    query = "      - name: orders\n        sql: select 1\n        expect: {min: 1}\n        sql: select 2\n"
    text = text.replace("rto: 30m", f"rto: 30m\n    verification:\n      queries:\n{query}    tags: {{a: '1', a: '2'}}")
    messages = problems_of(text)
    assert "m.yaml:22: repositories: duplicate key 'repositories' on lines 1 and 22" in " ".join(messages)
    assert any(
        message.startswith(
            "m.yaml:14: datasets.orders.verification.queries.0.sql: duplicate key 'sql' on lines 12 and 14"
        )
        for message in messages
    )
    assert any("m.yaml:15: datasets.orders.tags.a: duplicate key 'a' on lines 15 and 15" in m for m in messages)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1e20", "valid integer"),
        ("1.0e+20", "valid integer"),
        ("100000000000000000000", "less than or equal to 10000"),
        ("2.5", "valid integer"),
        ("24.0", "valid integer"),
    ],
)
def test_retention_counts_are_whole_numbers_within_bounds(value: str, expected: str) -> None:
    [message] = problems_of(replaced("keep_hourly: 24", f"keep_hourly: {value}"))
    assert message.startswith("m.yaml:10: datasets.orders.retention.keep_hourly: ")
    assert expected in message


@pytest.mark.parametrize(
    ("block", "field", "expected"),
    [
        ("servers:\n  pg: {kind: postgres, user: u, port: 70000}\n", "servers.pg.port", "less than or equal to 65535"),
        ("servers:\n  pg: {kind: postgres, user: u, port: 5432.0}\n", "servers.pg.port", "valid integer"),
        (
            "alerts:\n  channels:\n    hook: {type: webhook, url_env: URL, timeout_seconds: .inf}\n",
            "alerts.channels.hook.timeout_seconds",
            "less than or equal to 120",
        ),
        (
            "alerts:\n  channels:\n    hook: {type: webhook, url_env: URL, retries: 1e9}\n",
            "alerts.channels.hook.retries",
            "valid integer",
        ),
    ],
)
def test_ports_timeouts_and_retries_are_bounded_numbers(block: str, field: str, expected: str) -> None:
    [message] = problems_of(MANIFEST + block)
    assert f": {field}: " in message and expected in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("rto: 30m", "rto: 30m\n    compliance: {copies: 1000}", "datasets.orders.compliance.copies"),
        ("rto: 30m", "rto: 30m\n    anomaly: {spike_above: 1e9}", "datasets.orders.anomaly.spike_above"),
        ("rto: 30m", "rto: 30m\n    retries: 3.0", "datasets.orders.retries"),
        (
            "local: {type: local, path: backups}",
            "s3: {type: s3, bucket: abc, part_size_mb: 1e6}",
            "repositories.s3.part_size_mb",
        ),
    ],
)
def test_counts_sizes_and_factors_have_upper_bounds(old: str, new: str, field: str) -> None:
    text = (
        replaced(old, new).replace("repositories: [local]", "repositories: [s3]") if "s3" in new else replaced(old, new)
    )
    [message] = problems_of(text)
    assert f": {field}: " in message


def with_recipients_file(tmp_path: Path, content: str | None) -> Path:
    """Write the base manifest using keys/recipients.txt (with `content`, or none at all); return its path."""
    if content is not None:
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "recipients.txt").write_text(content)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(replaced(f"recipients: [{RECIPIENT}]", "recipients_file: keys/recipients.txt"))
    return manifest


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [problem.render("m.yaml") for problem in caught.value.problems]


def test_a_missing_recipients_file_is_refused_at_load_time_relative_to_the_manifest(tmp_path: Path) -> None:
    [message] = load_problems(with_recipients_file(tmp_path, None))
    assert message.startswith("m.yaml:13: datasets.orders.encryption.recipients_file: age recipients file")
    assert f"{tmp_path}/keys/recipients.txt does not exist" in message


def test_a_recipients_file_is_read_relative_to_the_manifests_folder_not_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = with_recipients_file(tmp_path, f"# the backup team\n\n{RECIPIENT}\n")
    monkeypatch.chdir(ROOT)
    assert load_manifest(manifest).recipients_for("orders") == [RECIPIENT]


def test_every_line_of_a_recipients_file_must_be_an_age_public_key(tmp_path: Path) -> None:
    messages = load_problems(with_recipients_file(tmp_path, f"{RECIPIENT}\nssh-ed25519 AAAA\n"))
    [message] = messages
    assert "datasets.orders.encryption.recipients_file: " in message
    assert "recipients.txt line 2: not an age X25519 public key" in message


def test_a_recipients_file_without_recipients_is_refused(tmp_path: Path) -> None:
    [message] = load_problems(with_recipients_file(tmp_path, "# nobody yet\n"))
    assert "datasets.orders.encryption.recipients_file: " in message and "lists no recipient" in message


def test_a_secret_key_in_a_recipients_file_is_called_a_secret_and_not_repeated(tmp_path: Path) -> None:
    identity_file = f"# created: 2026-12-01\n# public key: {RECIPIENT}\n{SECRET}\n"
    [message] = load_problems(with_recipients_file(tmp_path, identity_file))
    assert "recipients.txt line 3: this is an age SECRET key" in message
    assert "must never be in the manifest" in message and SECRET not in message


def test_a_secret_key_pasted_as_a_recipient_is_called_a_secret_and_not_repeated() -> None:
    [message] = problems_of(replaced(f"recipients: [{RECIPIENT}]", f"recipients: [{RECIPIENT}, {SECRET}]"))
    assert message.startswith("m.yaml:13: datasets.orders.encryption.recipients.1: this is an age SECRET key")
    assert "must never be in the manifest" in message and SECRET not in message


def test_every_hole_is_reported_together_never_as_a_traceback() -> None:
    text = "partition_start: 2026-13-01\n" + MANIFEST.replace("rpo: 1h", "rpo: 99999999999999w").replace(
        "rto: 30m", "rto: 5200w\n    schedule: daily"
    ).replace("keep_hourly: 24", "keep_hourly: 1e20").replace(RECIPIENT, SECRET)
    messages = problems_of(text)
    fields = [message.split(": ")[1] for message in messages]
    assert sorted(fields) == sorted(
        [
            "partition_start",
            "datasets.orders.rpo",
            "datasets.orders.rto",
            "datasets.orders.schedule",
            "datasets.orders.retention.keep_hourly",
            "datasets.orders.encryption.recipients.0",
        ]
    )
    assert all(message.startswith("m.yaml:") for message in messages)


def test_the_code_location_raises_only_the_problems_for_the_ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backup_pipelines.definitions import VALIDATION_CLI_ENV, InvalidManifestError, load_code_location

    (tmp_path / "m.yaml").write_text(replaced("rpo: 1h", "rpo: 5200w"))
    monkeypatch.setenv("BACKUP_MANIFEST", str(tmp_path / "m.yaml"))
    monkeypatch.delenv(VALIDATION_CLI_ENV, raising=False)
    with pytest.raises(InvalidManifestError) as caught:
        load_code_location()
    assert str(caught.value).startswith(f"manifest {tmp_path / 'm.yaml'} has 1 problem(s):\n")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def dagster_validate(arguments: list[str], manifest: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run `dagster definitions validate` as a user would, on `manifest`; return the finished process."""
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    environment = {**os.environ, "BACKUP_MANIFEST": str(manifest), "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", *arguments]
    return subprocess.run(command, cwd=cli_folder(), env=environment, capture_output=True, text=True, timeout=300)


def without_dagsters_own_warning(output: str) -> list[str]:
    """The output's lines, minus the SupersessionWarning Dagster prints before it imports the code location."""
    lines = output.splitlines()
    if lines and "SupersessionWarning" in lines[0]:
        lines = lines[2:]  # the warning and the source line Python prints under it
    return lines


@pytest.mark.parametrize("target", [["-m", "backup_pipelines.definitions"], ["-w", str(ROOT / "workspace.yaml")]])
def test_dagster_definitions_validate_prints_the_problems_first_and_exits_non_zero(
    target: list[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(replaced("rpo: 1h", "rpo: 99999999999999w").replace("keep_hourly: 24", "keep_hourly: 1e20"))
    result = dagster_validate(target, manifest, tmp_path / "dagster_home")
    assert result.returncode == 1
    lines = without_dagsters_own_warning(result.stderr)
    assert lines[0] == f"manifest {manifest} has 2 problem(s):", result.stderr
    assert lines[1].startswith(f"{manifest}:7: datasets.orders.rpo: duration '99999999999999w' is too long")
    assert lines[2].startswith(f"{manifest}:10: datasets.orders.retention.keep_hourly: ")
    assert len(lines) == 3 and "Traceback" not in result.stdout + result.stderr
