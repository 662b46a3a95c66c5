"""A throwaway Azurite (Microsoft's Azure Storage emulator, the `azurite` npm package of tests/node) serving
the Blob API on a loopback port, in memory, for the Azure blob-store tests."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from helpers import stop_service, wait_until_up

NODE_DIR = Path(__file__).resolve().parent / "node"
# Azurite's one built-in account and its published key (not a secret: every emulator has it).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteMissing(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    def __init__(self, container: str = "runcache", *, memory_mb: float = 4096) -> None:
        """`memory_mb`: Azurite's --extentMemoryLimit, the bytes of blob data it holds before it refuses
        writes (a store that fills up); deleted blobs' bytes count until its garbage collection, every
        10 minutes."""
        self.container = container
        self.memory_mb = memory_mb
        self.dir = Path(tempfile.mkdtemp(prefix="runcache-azurite-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        account = f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY}"
        return f"DefaultEndpointsProtocol=http;{account};BlobEndpoint={self.endpoint};"

    @property
    def env(self) -> dict[str, str]:
        """What runcache needs to reach this account."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def start(self, timeout: float = 60) -> Azurite:
        binary = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
        if not binary.exists():
            raise AzuriteMissing(f"no {binary} (the azurite devDependency of tests/node): run scripts/setup --dev")
        self.port = _free_port()
        args = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence"]
        # Memory for blob bytes is bounded (the default is half the machine); the SDKs may send newer API versions.
        args += ["--extentMemoryLimit", str(self.memory_mb), "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
        self.log = open(self.dir / "azurite.log", "wb")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        failure = wait_until_up(self.proc, lambda: self.service().create_container(self.container) or True, timeout)
        if failure is None:
            return self
        tail = (self.dir / "azurite.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise AzuriteMissing(f"Azurite did not start ({failure}); is scripts/setup --dev done? Log:\n{tail}")

    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, retry_total=0)

    def blobs(self, prefix: str = "") -> dict[str, int]:
        """Every committed blob under `prefix` with its size, read straight from the emulator."""
        container = self.service().get_container_client(self.container)
        return {b.name: b.size for b in container.list_blobs(name_starts_with=prefix)}

    def stop(self) -> None:
        stop_service(self.proc, getattr(self, "log", None), self.dir)
