"""Dagster resources: the thin configurable layer between the assets and the core."""

from resources.keys import AgeIdentityResource
from resources.manifest import ManifestResource
from resources.notifier import NotifierResource

__all__ = ["AgeIdentityResource", "ManifestResource", "NotifierResource"]
