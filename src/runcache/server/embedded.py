"""runcache's server in a background thread of this process, on a random loopback port.

The same application ``runcache serve`` runs, configured by the same ``server_config``, over a data
directory of the caller's choosing: the one of a ``runcache run`` (see ``runcache.runner.endpoint``) or of
``runcache demo``. Callers hold :func:`runcache.runner.run.data_dir_lock` while it runs: the server's
start-up recovery clears upload staging, so two servers must never share a data directory at once; a
``runcache serve`` already running there is reported in one line (its ``DataDirInUse``).
"""

from __future__ import annotations

import threading
import time

from runcache.config import Settings

START_TIMEOUT = 30.0


class EmbeddedServerError(Exception):
    """The embedded server did not start, or its data directory is not free for it."""


class EmbeddedServer:
    def __init__(self, settings: Settings) -> None:
        settings.data_dir = settings.data_dir.resolve()
        self.settings = settings
        self.url = ""
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmbeddedServer:
        import uvicorn

        from runcache.server.app import create_app
        from runcache.server.serve import bind, server_config

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Fail before starting anything when a server (runcache serve) already has the data directory; the
        # app's own start-up would only show a traceback and uvicorn's exit status.
        self._check_free()
        sock = bind("127.0.0.1", 0)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        app = create_app(self.settings)
        config = server_config(app, self.settings, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        self._server = server
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name="runcache-embedded-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if errors or not self._thread.is_alive():
                self._check_free()  # another server took the data directory meanwhile
                reason = errors[0] if errors else None
                if isinstance(reason, SystemExit) or reason is None:
                    raise EmbeddedServerError("the embedded cache server did not start (see the messages above)")
                raise EmbeddedServerError(f"the embedded cache server did not start: {type(reason).__name__}: {reason}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError("the embedded cache server did not start within 30 s")
            time.sleep(0.01)
        return self

    def _check_free(self) -> None:
        from runcache.store.lock import DataDirInUse, DataDirLock

        probe = DataDirLock(self.settings.data_dir)
        try:
            probe.acquire()
        except DataDirInUse as exc:
            raise EmbeddedServerError(
                f"{exc} (with runcache run: --url <its URL> --token <token> runs against it)"
            ) from None
        except OSError as exc:
            raise EmbeddedServerError(f"cannot use the data directory {self.settings.data_dir}: {exc}") from None
        probe.release()

    def token(self, repository: str, ref: str, *, default_branch: str, base_ref: str | None = None) -> str:
        from runcache.auth.tokens import TokenIssuer
        from runcache.core.scopes import build_scopes

        scopes = build_scopes(ref, default_branch=default_branch, base_ref=base_ref)
        return TokenIssuer(self.settings.derived_key("tokens")).issue(
            repository=repository, scopes=scopes, ttl_seconds=24 * 3600
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
