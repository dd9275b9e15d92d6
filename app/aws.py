"""What every AWS client of ours shares."""

from __future__ import annotations

import os


def local_credentials(endpoint_url: str | None) -> dict[str, str]:
    """Dummy keys for a local endpoint (moto, DynamoDB Local) when none are configured:
    those accept any signature, but botocore still needs keys to sign with. Real
    credentials in the environment win; against AWS itself nothing is added."""
    has_credentials = "AWS_ACCESS_KEY_ID" in os.environ or "AWS_PROFILE" in os.environ
    if endpoint_url and not has_credentials:
        return {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return {}
