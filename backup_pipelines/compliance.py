"""The 3-2-1 rule: three copies of the data (the live source counts), on two media, one off-site, and, where
asked, one that cannot be deleted early. A pure judgement over where a backup's copies are."""

from __future__ import annotations

from dataclasses import dataclass

from backup_pipelines.manifest import Manifest


@dataclass(frozen=True)
class ComplianceResult:
    """The counts found, and the rules they break (empty when compliant)."""

    copies: int
    media: list[str]
    offsite: int
    immutable: int
    missing: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing


def judge(manifest: Manifest, name: str, holding: list[str]) -> ComplianceResult:
    """Given the repositories that hold dataset `name`'s newest backup, return its 3-2-1 standing."""
    rule = manifest.dataset(name).compliance
    placements = [manifest.repositories[repository] for repository in holding]
    media = sorted({placement.medium_name() for placement in placements})
    offsite = sum(1 for placement in placements if placement.offsite)
    immutable = sum(1 for placement in placements if placement.immutable)
    copies = len(placements) + 1  # the live source is one copy
    where = ", ".join(holding) or "no repository"
    missing = []
    if copies < rule.copies:
        backups = f"{len(placements)} backup cop{'y' if len(placements) == 1 else 'ies'}"
        missing.append(
            f"{rule.copies} copies: only {copies} (the source and {backups}, in {where}); "
            f"{_more(rule.copies - copies)} in the dataset's repositories"
        )
    if len(media) < rule.media:
        missing.append(
            f"{rule.media} media: only {len(media)} ({', '.join(media) or 'none'}); "
            f"{_more(rule.media - len(media))} on another medium (a repository's `medium`)"
        )
    if offsite < rule.offsite:
        missing.append(
            f"{rule.offsite} off-site: {offsite} of {where} marked `offsite: true`; {_more(rule.offsite - offsite)} "
            "off-site"
        )
    if immutable < rule.immutable:
        missing.append(
            f"{rule.immutable} immutable: {immutable} of {where} with S3 Object Lock; "
            f"{_more(rule.immutable - immutable)} with `object_lock`"
        )
    return ComplianceResult(copies, media, offsite, immutable, missing)


def _more(count: int) -> str:
    return f"{count} more repositor{'y' if count == 1 else 'ies'} needed"
