"""
C{twistd exp}: run a device app (or any EXP identity) as a service::

    twistd -n exp --host URL (--uuid U --secret S | --username U --password P
                  --organization O | --uuid U --api-key K | --allow-pairing)
                  --app package.module:callable

The C{--app} callable receives the started L{exp.twisted.ExpService} and
may return a Deferred or be a coroutine function.  Without C{--host} an
embedded local EXP server (demo seed) runs in the same process and the app
connects to it as the demo device.  Every option can also come from an
C{EXP_*} environment variable (C{EXP_SECRET}, ...), so secrets need not sit
on a command line.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python import usage

from exp._options import check_options
from exp._usage import Options as PlainOptions
from exp._usage import plain_text
from exp.errors import ExpError
from exp.server.testing import DEMO, RunningServer, start_server
from exp.twisted import ExpService

_CREDENTIALS = ("username", "password", "organization", "uuid", "secret", "api_key")


def load_app(spec: str) -> Callable[[ExpService], Any]:
    """
    The callable named by C{module:callable}, looked up in the current
    directory too.

    @raise usage.UsageError: naming what cannot be found.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--app must be module:callable, not {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        # the twistd console script does not put the working directory on
        # sys.path (python -m does): a module next to the user is found too
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise usage.UsageError(f"--app: cannot import {module_name}: {e}") from None
    app = getattr(module, attribute, None)
    if not callable(app):
        raise usage.UsageError(f"--app: {module_name} has no callable {attribute!r}")
    return app


class Options(PlainOptions):
    synopsis = "[options]"
    description = plain_text(__doc__)
    optParameters = [
        ["host", None, None, "EXP API URL; without it, an embedded local server runs."],
        ["username", None, None, "User name (with --password and --organization)."],
        ["password", None, None, "User password."],
        ["organization", None, None, "User organization."],
        ["uuid", None, None, "Device or consumer app uuid."],
        ["secret", None, None, "Device secret."],
        ["api-key", None, None, "Consumer app api key."],
        ["app", "a", None, "module:callable receiving the started ExpService."],
    ]
    optFlags = [
        ["allow-pairing", None, "Start unpaired when there are no valid credentials."],
        ["no-network", None, "Do not join the real-time network."],
    ]

    def postOptions(self) -> None:
        for name in ("host", "username", "password", "organization", "uuid", "secret",
                     "api-key", "app"):
            env = "EXP_" + name.upper().replace("-", "_")
            if self[name] is None and os.environ.get(env):
                self[name] = os.environ[env]
        for flag in ("allow-pairing", "no-network"):
            env = "EXP_" + flag.upper().replace("-", "_")
            if not self[flag] and os.environ.get(env, "").lower() in ("1", "true", "yes"):
                self[flag] = True
        credentials = {name: self[name.replace("_", "-")] for name in _CREDENTIALS}
        if self["host"] is None and not any(credentials.values()) and not self[
                "allow-pairing"]:
            credentials.update(uuid=DEMO["device_uuid"], secret=DEMO["device_secret"])
        self["credentials"] = {k: v for k, v in credentials.items() if v is not None}
        try:
            check_options(host=self["host"] or "http://127.0.0.1", **self["credentials"],
                          allow_pairing=self["allow-pairing"] or None,
                          enable_network=not self["no-network"])
        except ExpError as e:
            raise usage.UsageError(str(e)) from None
        self["app_callable"] = load_app(self["app"]) if self["app"] else None


class DeviceService(service.MultiService):
    """Starts the embedded server if needed, then the ExpService, then the app."""

    _log = Logger()

    def __init__(self, options: Options, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.options = options
        self.exp: ExpService | None = None
        self.server: RunningServer | None = None
        self.failed = False

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start())

    async def _start(self) -> None:
        options = self.options
        try:
            host = options["host"]
            if host is None:
                self.server = await start_server(reactor=self.reactor)
                host = self.server.url
                self._log.info("embedded local EXP server on {url} (demo seed)", url=host)
            self.exp = ExpService(
                host, allow_pairing=options["allow-pairing"] or None,
                enable_network=not options["no-network"], reactor=self.reactor,
                **options["credentials"],
            )
            self.exp.setServiceParent(self)
            auth = await self.exp.whenAuthenticated()
            self._log.info("authenticated as {type} {uuid} of {organization}",
                           **auth["identity"])
            app = options["app_callable"]
            if app is not None:
                result = app(self.exp)
                if inspect.isawaitable(result):
                    await result
        except ExpError as e:
            if self.running:  # not merely stopped (SIGTERM) while logging in
                self._fail(str(e))
        except Exception:
            self._log.failure("the EXP service failed to start")
            self._fail("the EXP service failed to start (see the log above)")

    def _fail(self, message: str) -> None:
        """End the process with one clear message and a non-zero status."""
        self.failed = True
        self._log.critical("exp: {message}", message=message)
        atexit.register(_exit_failed)
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Any:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        if self.server is not None:
            await self.server.stop()


def _exit_failed() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def makeService(options: Options) -> service.IService:
    return DeviceService(options)
