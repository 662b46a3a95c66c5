"""Server settings: one dataclass, filled from flags, then `RUNCACHE_*` environment variables, then defaults."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_DATA_DIR = ".runcache"
DOWNLOAD_MODES = ("proxy", "direct")
TRANSFER_MODES = ("proxy", "direct")


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    blobs: str = ""  # where finished archives live: empty for data_dir/blobs, or s3://bucket/prefix
    uploads: str = "auto"  # where uploads in flight live: auto (beside an object-store --blobs, else local), local
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = ""  # empty: SQLite file in data_dir
    public_url: str = ""  # empty: derived from each request's Host
    secret: str = ""  # empty: generated once and kept in data_dir/secret
    reservation_ttl: int = 3600  # seconds an unfinished upload keeps its key reserved
    upload_idle_timeout: int = 300  # seconds without bytes after which an upload expires (0: only the TTL)
    url_ttl: int = 600  # seconds a signed blob URL stays valid
    downloads: str = "proxy"  # proxy: archives stream through the server; direct: presigned object-store URLs
    transfers: str = "proxy"  # direct: v2 uploads to a write SAS URL as well as direct downloads (azure:// blobs)
    github_jwks_url: str = ""
    github_jwks_file: str = ""
    github_issuer: str = ""
    github_audience: str = ""
    results_upstream: str = ""  # where unknown /twirp/ services are forwarded
    storage_limit_gb: int = 10  # default per-repository cache size limit (GB of 1024^3 bytes)
    retention_days: int = 7  # default days an entry is kept after its last access
    janitor_interval: int = 60  # seconds between housekeeping passes (expired uploads, retention)
    max_entry_size_mb: int = 10240  # largest archive accepted (GitHub's 10 GB), within the repository's limit
    max_uploads_per_repo: int = 100  # uploads in progress per repository
    max_blocks_per_upload: int = 5000  # Azure blocks (and v1 chunks) per upload
    max_entries_per_repo: int = 20000  # entries per repository; least recently used beyond it are evicted
    min_free_mb: int = 1024  # free space new uploads must leave on the data volume (at most 10% of it)
    header_timeout: int = 10  # seconds a connection has to send a complete request head
    max_connections: int = 1000  # open connections; past it the longest-idle one is closed
    forward_max_body_mb: int = 64  # largest body forwarded to --results-upstream
    db_pool_size: int = 20  # connections each process keeps to PostgreSQL (and as many more at peaks)
    node_id: str = ""  # empty: host name and data directory (see `node`)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if env is None else env)
        s = cls()
        for f in fields(cls):
            raw = env.get(f"RUNCACHE_{f.name.upper()}")
            if raw is not None and raw != "":
                setattr(s, f.name, _convert(f.name, raw, getattr(s, f.name)))
        for name, value in overrides.items():
            if value is not None:
                setattr(s, name, _convert(name, value, getattr(s, name)))
        return s

    @property
    def node(self) -> str:
        """This process's name for the uploads it stages. Two servers on one host (replicas, each with
        its own data directory) must differ, or each one's start-up recovery would drop the other's."""
        if self.node_id:
            return self.node_id
        where = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}:{where}"

    @property
    def embedded(self) -> bool:
        """The SQLite default: one server per data directory. Anything else may have several replicas."""
        return self.database.startswith("sqlite")

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    def master_secret(self, *, create: bool = True) -> bytes:
        """The server's signing secret: configured, or created once (0600) in the data directory.

        Only the server creates it (create=True); `runcache token` must find the server's own secret,
        because a token signed with a fresh one is refused with nothing to point at the cause."""
        if self.secret:
            return self.secret.encode()
        path = self.data_dir / "secret"
        if not create and not path.is_file():
            where = self.data_dir.resolve()
            reason = "does not exist" if not self.data_dir.is_dir() else "holds no runcache secret"
            raise ValueError(
                f"data directory {where} {reason}: tokens must be signed with the server's secret. "
                "Pass the server's --data-dir (or RUNCACHE_DATA_DIR), set the server's RUNCACHE_SECRET, "
                "or start the server there once (runcache serve) to create it"
            )
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def derived_key(self, purpose: str, *, create: bool = True) -> bytes:
        # Separate keys per use, so a signed URL can never be replayed as a token or vice versa.
        return hmac.new(self.master_secret(create=create), purpose.encode(), hashlib.sha256).digest()


def _convert(name: str, value: object, current: object) -> object:
    if isinstance(current, Path):
        return Path(str(value)).expanduser()
    if isinstance(current, bool):
        return str(value).lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        try:
            return int(str(value))
        except ValueError:
            raise ValueError(f"setting {name} must be an integer, got {value!r}") from None
    return str(value)
