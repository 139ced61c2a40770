"""Reading a manifest file: YAML to a validated Manifest, with every problem named by file, line and field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from backup_pipelines.errors import ManifestError, MissingSecretError, Problem
from backup_pipelines.manifest.model import Manifest
from backup_pipelines.manifest.types import (
    DEFAULT_MANIFEST,
    MANIFEST_ENV,
    PGBACKREST_KINDS,
    RESTIC_KINDS,
    SAFE_LOADER,
    SERVER_KINDS,
    SNAPSHOT_KINDS,
    UNION_PARENTS,
    UNION_TAGS,
    WATCH_KINDS,
    recipient_problem,
)

MERGE_TAG = "tag:yaml.org,2002:merge"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _ManifestLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe YAML loader, except that a date or time that does not exist (2026-13-01) stays a string, so
    the field it is in reports it instead of the whole file failing with a traceback."""

    def construct_lenient_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_ManifestLoader.add_constructor(TIMESTAMP_TAG, _ManifestLoader.construct_lenient_timestamp)


def read_secret(variable: str, needed_by: str) -> str:
    """Return the value of environment variable `variable`.

    Raise MissingSecretError naming the variable and what needs it if it is unset or empty.
    """
    value = os.environ.get(variable)
    if not value:
        raise MissingSecretError(f"environment variable {variable} is not set (needed by {needed_by})")
    return value


def default_manifest_path() -> Path:
    """Return the manifest path: $BACKUP_MANIFEST if set, else ./backup_manifest.yaml."""
    return Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Given a manifest path (default: `default_manifest_path()`), return the validated Manifest.

    Raise ManifestError listing every problem, each with the file, line and field path.
    """
    file = Path(path) if path is not None else default_manifest_path()
    try:
        text = file.read_text()
    except OSError as error:
        raise ManifestError(str(file), [Problem("", f"cannot read the manifest: {error.strerror}")]) from error
    return parse_manifest(text, str(file))


def parse_manifest(text: str, file: str = "<manifest>") -> Manifest:
    """Given the YAML text of a manifest and the name to report it under, return the validated Manifest.

    Relative paths checked at load time (recipients_file) are resolved against the file's folder, or the
    current folder for text without a file. Raise ManifestError listing every problem found.
    """
    root, data = _read_yaml(text, file)
    if not isinstance(data, dict):
        raise ManifestError(file, [Problem("", "the manifest must be a mapping with datasets and repositories")])
    base_dir = Path(file).resolve().parent if file != "<manifest>" else Path.cwd()
    problems = _duplicate_key_problems(root, "", set())
    problems += _cross_reference_problems(data) + _recipients_file_problems(data, base_dir)
    problems += _ca_file_problems(data, base_dir)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        problems = [_problem_from(item) for item in error.errors()] + problems
    if problems:
        raise ManifestError(file, [_with_line(problem, root) for problem in problems])
    if file != "<manifest>":
        manifest._path = Path(file).resolve()
    return manifest


def _read_yaml(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """Parse the YAML text once; return its node tree (positions, duplicate keys) and its data.

    Raise ManifestError with the line if the text is not YAML.
    """
    loader = _ManifestLoader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ManifestError(file, [Problem("", f"not valid YAML: {error}", line)]) from error
    except RecursionError as error:
        raise ManifestError(file, [Problem("", "not usable YAML: nested too deeply")]) from error
    finally:
        loader.dispose()


def _duplicate_key_problems(node: yaml.Node | None, path: str, seen: set[int]) -> list[Problem]:
    """Return a problem for every key written twice in one mapping, anywhere under `node` (YAML would keep
    only the last one silently), naming the key's path and both lines."""
    if node is None or id(node) in seen:  # aliases share nodes, and may even loop
        return []
    seen.add(id(node))
    problems = []
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                continue
            where = f"{path}.{key.value}" if path else str(key.value)
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first_lines:
                first = first_lines[(key.tag, key.value)]
                message = f"duplicate key {key.value!r} on lines {first} and {line}: YAML would keep only the last"
                problems.append(Problem(where, message, line))
            first_lines.setdefault((key.tag, key.value), line)
            problems += _duplicate_key_problems(value, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_key_problems(item, f"{path}.{index}" if path else str(index), seen)
    return problems


def _recipients_file_problems(data: dict[str, Any], base_dir: Path) -> list[Problem]:
    """Return the problems of every enabled encryption block's recipients_file: missing, unreadable, empty,
    or holding a line that is not an age public key (a secret key above all)."""
    blocks = [("encryption", data.get("encryption"))] + [
        (f"datasets.{name}.encryption", _mapping(dataset).get("encryption"))
        for name, dataset in _mapping(data.get("datasets")).items()
    ]
    problems = []
    for where, block in blocks:
        settings = _mapping(block)
        name = settings.get("recipients_file")
        if settings.get("enabled", True) is not False and isinstance(name, str) and name:
            problems += _recipients_file_lines(f"{where}.recipients_file", name, base_dir)
    return problems


def _ca_file_problems(data: dict[str, Any], base_dir: Path) -> list[Problem]:
    """Return a problem for every repository's s3.ca_file (pgbackrest repositories have one) that is missing,
    unreadable or holds no PEM certificate: pgBackRest would only fail on it at the first backup or WAL push.
    Whether the cluster's system user can read it is checked when the configuration is written."""
    problems = []
    for name, repository in _mapping(data.get("repositories")).items():
        value = _mapping(_mapping(repository).get("s3")).get("ca_file")
        if not isinstance(value, str) or not value:
            continue
        where, path = f"repositories.{name}.s3.ca_file", _resolved(value, base_dir)
        try:
            text = path.read_text(errors="replace")
        except OSError as error:
            problems.append(Problem(where, f"cannot read the CA file {path}: {error.strerror}"))
            continue
        if "-----BEGIN CERTIFICATE-----" not in text:
            problems.append(Problem(where, f"the CA file {path} holds no PEM certificate"))
    return problems


def _resolved(name: str, base_dir: Path) -> Path:
    """`name` with ~ expanded, relative to `base_dir` unless absolute."""
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else base_dir / path


def _recipients_file_lines(where: str, name: str, base_dir: Path) -> list[Problem]:
    path = _resolved(name, base_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [Problem(where, f"age recipients file {path} does not exist (relative to the manifest's folder)")]
    except (OSError, UnicodeDecodeError) as error:
        return [Problem(where, f"cannot read the age recipients file {path}: {error}")]
    problems = []
    recipients = 0
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        recipients += 1
        problem = recipient_problem(line)
        if problem:
            problems.append(Problem(where, f"{path} line {number}: {problem}"))
    if not recipients:
        problems.append(Problem(where, f"the age recipients file {path} lists no recipient"))
    return problems


def manifest_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the manifest, generated from the models."""
    return Manifest.model_json_schema()


def _cross_reference_problems(data: dict[str, Any]) -> list[Problem]:
    """Return the problems between sections (unknown repository or server names, missing encryption),
    working on the raw data so they are reported together with the field errors."""
    repositories = _mapping(data.get("repositories"))
    servers = _mapping(data.get("servers"))
    top_encryption = data.get("encryption")
    problems = []
    for name, dataset in _mapping(data.get("datasets")).items():
        if not isinstance(dataset, dict):
            continue
        where = f"datasets.{name}"
        names = dataset.get("repositories")
        regions: dict[Any, str] = {}
        listed: set[str] = set()
        for index, repository in enumerate(names if isinstance(names, list) else []):
            if isinstance(repository, str):
                if repository in listed:
                    message = f"{repository!r} is listed twice: one repository is one copy"
                    problems.append(Problem(f"{where}.repositories.{index}", message))
                    continue
                listed.add(repository)
            config = _mapping(repositories.get(repository)) if isinstance(repository, str) else {}
            if config.get("type") == "aws_snapshots":
                place = (config.get("region"), config.get("endpoint_url"))
                if place in regions:
                    message = (
                        f"{repository!r} and {regions[place]!r} keep snapshots in the same region ({place[0]}): "
                        "one place, not two copies"
                    )
                    problems.append(Problem(f"{where}.repositories.{index}", message))
                regions.setdefault(place, repository)
            if isinstance(repository, str) and repository not in repositories:
                message = f"unknown repository {repository!r} (known: {', '.join(repositories) or 'none'})"
                problems.append(Problem(f"{where}.repositories.{index}", message))
            elif isinstance(repository, str):
                problems += _repository_problems(where, index, repositories[repository], repository, dataset)
        known_channels = _mapping(_mapping(data.get("alerts")).get("channels"))
        channels = _mapping(dataset.get("alerts")).get("channels")
        for index, channel in enumerate(channels if isinstance(channels, list) else []):
            if isinstance(channel, str) and channel not in known_channels:
                message = f"unknown alert channel {channel!r} (known: {', '.join(known_channels) or 'none'})"
                problems.append(Problem(f"{where}.alerts.channels.{index}", message))
        kind = dataset.get("kind")
        source_server = _mapping(dataset.get("source")).get("server") if kind in SERVER_KINDS else None
        restore_server = _mapping(dataset.get("restore_test")).get("server")
        for path, server in (
            (f"{where}.source.server", source_server),
            (f"{where}.restore_test.server", restore_server),
        ):
            if isinstance(server, str):
                problems += _server_problem(servers, path, server, kind)
        needs_age = kind not in (*SNAPSHOT_KINDS, *WATCH_KINDS, *PGBACKREST_KINDS)
        if needs_age and dataset.get("enabled", True) and dataset.get("encryption") is None and top_encryption is None:
            problems.append(
                Problem(
                    f"{where}.encryption",
                    "encryption is on by default: give age recipients here or in the top-level encryption "
                    "block, or write enabled: false to turn it off explicitly",
                )
            )
    blocks = [("encryption", top_encryption)] + [
        (f"datasets.{name}.encryption", _mapping(dataset).get("encryption"))
        for name, dataset in _mapping(data.get("datasets")).items()
    ]
    for where, block in blocks:
        settings = _mapping(block)
        if (
            settings
            and settings.get("enabled", True)
            and not (settings.get("recipients") or settings.get("recipients_file"))
        ):
            problems.append(Problem(where, "encryption is enabled but lists no recipients or recipients_file"))
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _repository_family(kind: Any) -> tuple[str, str]:
    """The repository type a dataset kind needs, and how to say it."""
    if kind in RESTIC_KINDS:
        return "restic", "a restic repository"
    if kind in SNAPSHOT_KINDS:
        return "aws_snapshots", "an aws_snapshots repository"
    if kind in PGBACKREST_KINDS:
        return "pgbackrest", "a pgbackrest repository"
    return "objects", "a local or s3 repository"


def _repository_problems(
    where: str, index: int, config: Any, repository: str, dataset: dict[str, Any]
) -> list[Problem]:
    kind = dataset.get("kind")
    repository_type = _mapping(config).get("type")
    family, wanted = _repository_family(kind)
    actual = repository_type if repository_type in ("restic", "aws_snapshots", "pgbackrest") else "objects"
    if actual != family:
        message = f"a {kind} dataset needs {wanted}; {repository!r} is not one"
        return [Problem(f"{where}.repositories.{index}", message)]
    source = _mapping(dataset.get("source"))
    region = source.get("region")
    encrypted_rds = kind in ("rds", "aurora") and source.get("require_encryption", True)
    if (
        index > 0
        and encrypted_rds
        and _mapping(config).get("region") != region
        and not _mapping(config).get("kms_key_id")
    ):
        message = (
            f"{repository!r} receives copies of encrypted RDS snapshots from {region}: give it a kms_key_id in "
            f"{_mapping(config).get('region')} (KMS keys are regional)"
        )
        return [Problem(f"{where}.repositories.{index}", message)]
    if index == 0 and family == "aws_snapshots" and region and _mapping(config).get("region") != region:
        message = (
            f"the first repository is where snapshots are taken: {repository!r} is in "
            f"{_mapping(config).get('region')}, the source in {region}"
        )
        return [Problem(f"{where}.repositories.{index}", message)]
    return []


def _server_problem(servers: dict[str, Any], path: str, server: str, kind: Any) -> list[Problem]:
    if server not in servers:
        return [Problem(path, f"unknown server {server!r} (known: {', '.join(servers) or 'none'})")]
    server_kind = _mapping(servers[server]).get("kind")
    if server_kind != {"postgres_cluster": "postgres", "mariadb_physical": "mysql"}.get(kind, kind):
        return [Problem(path, f"server {server!r} is a {server_kind} server, not {kind}")]
    return []


def _problem_from(error: Any) -> Problem:
    location = [str(part) for part in error["loc"]]
    # Discriminated unions add the tag ("postgres", "s3", "slack") as a location step: drop it.
    location = [
        part
        for index, part in enumerate(location)
        if not (index >= 2 and part in UNION_TAGS and location[index - 2] in UNION_PARENTS)
    ]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field {location[-1]!r}"
    elif error["type"] == "missing":
        message = f"required field {location[-1]!r} is missing"
    elif error["type"] == "union_tag_invalid":
        message = f"unknown kind or type {error['input'].get(_tag_name(location), '?')!r}: {error['msg']}"
    return Problem(".".join(location), message)


def _tag_name(location: list[str]) -> str:
    return "kind" if location and location[0] == "datasets" else "type"


def _with_line(problem: Problem, root: yaml.Node | None) -> Problem:
    """Return the problem with the line of the deepest node its path reaches, unless it has a line already."""
    if problem.line is not None:
        return problem
    node = root
    for part in problem.path.split(".") if problem.path else []:
        node = _child(node, part)
        if node is None:
            break
        line = node.start_mark.line + 1
        problem = Problem(problem.path, problem.message, line)
    return problem


def _child(node: yaml.Node | None, part: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                child: yaml.Node = value
                return child
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item: yaml.Node = node.value[int(part)]
        return item
    return None
