"""S3 locations: ``s3://bucket/prefix`` URIs and a client configured as AWS tools are.

The endpoint and credentials come from the environment exactly as the AWS CLI, DVC and
boto3 read them (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), so one set of variables serves every tool.
Credentials are never logged or put into error messages.
"""

from __future__ import annotations

import os
from typing import Any

from exdd.errors import ConfigError

S3_SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b/``); the prefix is empty or ends with '/'."""
    if not is_s3_uri(uri):
        raise ConfigError(f"{uri}: not an s3:// URI")
    bucket, _, prefix = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ConfigError(f"{uri}: S3 URI has no bucket name")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client() -> Any:
    """A boto3 S3 client; path-style addressing whenever a custom endpoint is set."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError("S3 access needs boto3: pip install 'exdd[mlops]'") from None
    custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    config = Config(s3={"addressing_style": "path"}) if custom else None
    return boto3.client("s3", region_name=region or DEFAULT_REGION, config=config)
