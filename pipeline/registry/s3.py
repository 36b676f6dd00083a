"""The registry in S3 through boto3. Credentials and endpoint come from the environment (boto3's own chain)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.registry.store import Store, StoreError

CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5, 60
LOCK_POLL_S = 0.5


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", lock_ttl_s: float = 3600, max_attempts: int = 5):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}"
        self.lock_ttl_s = lock_ttl_s
        # standard retry mode: exponential backoff with jitter on throttling, 5xx and connection errors
        config = Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
        self.client = boto3.client("s3", config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as err:  # messages name the operation, never the credentials
            raise StoreError(f"S3 {what} failed at {self.description} after retries: {err}; check "
                             "AWS_ENDPOINT_URL_S3, the bucket and the credentials in the environment") from err

    def check_writable(self, need_bytes: int) -> None:
        """A real write and delete under the prefix: a read-only credential fails here, before any training."""
        probe = self._key(f"preflight-{socket.gethostname()}-{os.getpid()}.probe")
        with self._errors("write check (put and delete of a probe object)"):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=probe)

    def read(self, key: str) -> bytes | None:
        with self._errors(f"read of {key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except ClientError as err:
                if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None
                raise

    def write(self, key: str, data: bytes) -> None:
        with self._errors(f"write of {key}"):  # one PUT: readers see the old object or the new one
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload(self, key: str, path: Path) -> None:
        with self._errors(f"upload of {key}"):
            self.client.upload_file(str(path), self.bucket, self._key(key))

    def download(self, key: str, path: Path) -> None:
        with self._errors(f"download of {key}"):
            self.client.download_file(self.bucket, self._key(key), str(path))

    def list(self, prefix: str) -> list[str]:
        keys, cut = [], len(self.prefix) + 1 if self.prefix else 0
        with self._errors(f"listing of {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=self._key(prefix)):
                keys += [item["Key"][cut:] for item in page.get("Contents", [])]
        return sorted(k for k in keys if not k.startswith(("lock", "preflight-")))

    def _read_lock(self, key: str) -> tuple[bytes | None, str | None]:
        with self._errors("read of the lock"):
            try:
                found = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as err:
                if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None, None
                raise
            return found["Body"].read(), found["ETag"]

    @contextlib.contextmanager
    def lock(self, timeout_s: float) -> Iterator[None]:
        """A lock object created with a conditional PUT (If-None-Match: *); one left by a killed run expires."""
        key, deadline = self._key("lock.json"), time.monotonic() + timeout_s
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + self.lock_ttl_s})
        while True:
            with self._errors("lock"):
                try:
                    mine = self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode(),
                                                  IfNoneMatch="*")["ETag"]
                    break
                except ClientError as err:
                    if err.response["Error"]["Code"] not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                        raise
            held, etag = self._read_lock(key)
            if held and json.loads(held).get("expires", 0) < time.time():
                # take over the expired lock only if it is still the one read: of two contenders, one wins
                with self._errors("takeover of an expired lock"):
                    try:
                        mine = self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode(),
                                                      IfMatch=etag)["ETag"]
                        break
                    except ClientError as err:
                        if err.response["Error"]["Code"] not in ("PreconditionFailed", "412", "NoSuchKey", "404",
                                                                 "ConditionalRequestConflict"):
                            raise
                continue
            if time.monotonic() > deadline:
                raise StoreError(f"{self.description} is locked by another run ({held.decode() if held else '?'}); "
                                 "wait for it to finish")
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            with self._errors("unlock"):
                try:  # only our own lock: after an expiry another run may hold it now
                    self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=mine)
                except ClientError as err:
                    if err.response["Error"]["Code"] not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                        raise
