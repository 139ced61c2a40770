"""Benchmark: our file-tree backups against direct `restic backup`, side by side on the same tree.

Builds a tree of about `--size-gb` of poorly compressible files (a few thousand), then times in one run:
restic's own first and unchanged-second backup into one repository, and ours (run_backup of a `files`
dataset: the walk of every entry with xattrs, the sha256 of every file within the default hash budget, the
walk stored as its own snapshot, restic with tags) first and second into another. On the second run the
walk reuses the previous walk's digests of unchanged files, so only the stat calls and restic remain; the
restore test (not timed here) hashes the restored copy. Target: ours at most 1.2x.
Run: `.venv/bin/python benchmarks/bench_files.py --size-gb 1` (`--size-gb 0.1 --files 1000 --rounds 1`
for a quick look).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402


def build_tree(root: Path, size_gb: float, files: int) -> None:
    per_file = int(size_gb * 1e9 / files)
    for index in range(files):
        folder = root / f"d{index % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(max(1, int(per_file * (0.5 + (index % 10) / 10)))))


def timed(function: object) -> float:
    started = time.monotonic()
    function()  # type: ignore[operator]
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3, help="fresh repositories per round; best times kept")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-bench-files-") as work:
        folder = Path(work)
        build_tree(folder / "tree", arguments.size_gb, arguments.files)
        os.environ["BENCH_RESTIC_PASSWORD"] = "bench"
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")  # our walk cache, removed with the folder
        from backup_pipelines.manifest import load_manifest
        from backup_pipelines.operations import run_backup
        from backup_pipelines.repository import ResticRepository, open_repository

        best: dict[str, float] = {}
        for round_number in range(arguments.rounds):
            raw_env = {
                **os.environ,
                "RESTIC_REPOSITORY": str(folder / f"raw-repo-{round_number}"),
                "RESTIC_PASSWORD": "bench",
            }
            subprocess.run(["restic", "init"], env=raw_env, check=True, capture_output=True)
            manifest_path = folder / f"m{round_number}.yaml"
            manifest_path.write_text(
                yaml.safe_dump(
                    {
                        "repositories": {
                            "restic": {
                                "type": "restic",
                                "repository": str(folder / f"our-repo-{round_number}"),
                                "password_env": "BENCH_RESTIC_PASSWORD",
                            }
                        },
                        "datasets": {
                            "tree": {
                                "kind": "files",
                                "schedule": "daily",
                                "rpo": "26h",
                                "rto": "1h",
                                "retention": {"keep_last": 3},
                                "repositories": ["restic"],
                                "encryption": {"enabled": False},
                                "source": {"paths": [str(folder / "tree")]},
                            }
                        },
                    }
                )
            )
            manifest = load_manifest(manifest_path)
            store = open_repository(manifest, "restic")
            assert isinstance(store, ResticRepository)
            store.ensure_initialized()  # both repositories exist before timing, as restic's own does
            raw = ["restic", "backup", "--host", "bench", str(folder / "tree")]

            def direct(argv: list[str] = raw, env: dict[str, str] = raw_env) -> None:
                subprocess.run(argv, env=env, check=True, capture_output=True)

            def ours(partition: str, loaded: object = manifest) -> None:
                run_backup(loaded, "tree", partition)  # type: ignore[arg-type]

            results = {
                "raw first": timed(direct),
                "ours first": timed(lambda: ours("2026-11-01")),
                "raw second": timed(direct),
                "ours second": timed(lambda: ours("2026-11-02")),
            }
            best = {label: min(seconds, best.get(label, seconds)) for label, seconds in results.items()}
        results = best
        for label, seconds in results.items():
            print(f"{label:<12} {seconds:7.2f} s")
        print(f"first backup ratio  {results['ours first'] / results['raw first']:.3f}")
        print(f"second backup ratio {results['ours second'] / results['raw second']:.3f}")
        print("target: both ratios <= 1.2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
