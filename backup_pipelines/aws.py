"""boto3 clients for the AWS-native parts (RDS and EBS snapshots, bucket checks), and AWS error helpers."""

from __future__ import annotations

import math
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import AwsAccess, read_secret


def make_client(service: str, access: AwsAccess, where: str, region: str | None = None) -> Any:
    """Return a boto3 client of `service` for `access` (its region unless `region` is given).

    Credentials come from the variables the manifest names (a MissingSecretError names a missing one), else
    from boto3's default chain (instance profile, AWS_PROFILE, ...)."""
    import boto3  # loaded when AWS is first needed: it costs every process ~0.1 s and ~20 MB otherwise
    from botocore.config import Config

    key = read_secret(access.access_key_id_env, where) if access.access_key_id_env else None
    secret = read_secret(access.secret_access_key_env, where) if access.secret_access_key_env else None
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]  # boto3's stubs overload on literal service names
        region_name=region or access.region,
        endpoint_url=access.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )


def error_code(error: BaseException) -> str:
    """Return the AWS error code of a ClientError ("DBSnapshotNotFound", ...), or ""."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def describe_error(error: BaseException) -> str:
    """Return an AWS error as "Code: message" for an operator."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', error)}"
    if isinstance(error, WaiterError):
        return f"{error.last_response.get('Error', {}).get('Message', '') or error}"
    return str(error)


def wait(
    client: Any, waiter: str, what: str, minutes: int, poll_seconds: int, not_found_retries: int = 0, **arguments: Any
) -> None:
    """Wait with boto3's waiter `waiter` (polling every `poll_seconds`, for at most `minutes`).

    `not_found_retries` polls again that many times when AWS says the resource does not exist: a resource
    created a moment ago can be invisible for a while (EC2 is eventually consistent), and botocore's waiters
    give up at once on an error they do not expect. Raise StorageError naming `what` when the wait fails,
    times out, or AWS cannot be reached."""
    attempts = max(1, math.ceil(minutes * 60 / poll_seconds))
    for retry in range(not_found_retries + 1):
        try:
            client.get_waiter(waiter).wait(**arguments, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": attempts})
            return
        except WaiterError as error:
            code = str((error.last_response or {}).get("Error", {}).get("Code", ""))
            if "NotFound" in code and retry < not_found_retries:  # InvalidVolume.NotFound, DBClusterNotFoundFault
                time.sleep(poll_seconds)
                continue
            raise StorageError(f"{what} did not finish ({waiter}) within {minutes} min: {error}") from error
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"{what}: {describe_error(error)}") from error


AWS_ERRORS = (BotoCoreError, ClientError)
