"""
C{exp}: the EXP command line, against the local server or any EXP host::

    exp listen CHANNEL [NAME] [--system] [--consumer]
    exp broadcast CHANNEL NAME [PAYLOAD] [--timeout S] [--consumer]
    exp get|find|create|save|delete RESOURCE ...
    exp data get|put|delete GROUP KEY [VALUE]
    exp pair CODE [--name N]
    exp server [twistd exp-server options]

Credentials come from the same options and C{EXP_*} environment variables as
C{twistd exp}.  Without C{--host} (or C{EXP_HOST}) the command line talks to
L{DEFAULT_HOST}, and says so; with neither a host nor credentials it signs in
there as the demo user.  Exit status: 0, 1 for an EXP error (with its one-line
message), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn
from urllib.parse import quote

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from exp._options import check_options
from exp.errors import ApiError, ExpError, NetworkError
from exp.server.testing import DEMO

#: Where the command line goes without C{--host}: C{make server}'s address.
DEFAULT_HOST = "http://127.0.0.1:9000"
#: The resources of C{get}, C{find}, C{create}, C{save} and C{delete}, by
#: their collection path (singular names are accepted too).
RESOURCES = {
    "devices": "/api/devices",
    "things": "/api/things",
    "experiences": "/api/experiences",
    "locations": "/api/locations",
    "feeds": "/api/connectors/feeds",
    "content": "/api/content",
}
READ_ONLY = {"content"}
#: Seconds a call (or the login before it) may take.
REQUEST_TIMEOUT = 15.0

EPILOG = """\
credentials (options, or the environment as for twistd exp):
  --username U --password P --organization O   a user (EXP_USERNAME, EXP_PASSWORD,
                                               EXP_ORGANIZATION)
  --uuid U --secret S                          a device (EXP_UUID, EXP_SECRET)
  --uuid U --api-key K                         a consumer app (EXP_UUID, EXP_API_KEY)
  --host URL                                   the EXP API (EXP_HOST); without it,
                                               http://127.0.0.1:9000, as the demo user
                                               when no credentials are given

exit status: 0 done, 1 an EXP error (its message on stderr), 2 a usage error
"""


SERVER_HELP = """\
exp server [options]: the local EXP server, the same as twistd -n exp-server [options]

examples:
  exp server                                   # the demo seed on 127.0.0.1:9000, exp.sqlite3 here
  exp server --listen tcp:9001:interface=127.0.0.1 --db /tmp/exp.sqlite3
  exp server --seed my-seed.json --content ./content
  exp server --db postgresql://exp@127.0.0.1/exp --redis redis://127.0.0.1:6379/0

The options of twistd exp-server follow.
"""


class UsageError(Exception):
    """A mistake on the command line: exit status 2."""


# -- output ------------------------------------------------------------------------


def _json_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


class Output:
    """Answers on stdout (JSON lines with C{--json}); notes and the spinner on stderr."""

    def __init__(self, as_json: bool, stdout: IO[str], stderr: IO[str], reactor: Any) -> None:
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr
        self.reactor = reactor
        self.interactive = stderr.isatty()
        self._spinner: task.LoopingCall | None = None

    def answer(self, value: Any, text: str | None = None) -> None:
        """Print C{value}: one JSON line with C{--json}, else C{text} (or pretty JSON)."""
        if self.as_json:
            print(_json_line(value), file=self.stdout, flush=True)
        else:
            print(_pretty(value) if text is None else text, file=self.stdout, flush=True)

    def line(self, value: Any) -> None:
        print(_json_line(value), file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        self.stop_spinner()
        print(f"exp: {text}", file=self.stderr, flush=True)

    async def waiting(self, what: str, d: Any) -> Any:
        """The result of C{d}, with a spinner on stderr meanwhile (only on a terminal)."""
        self.start_spinner(what)
        try:
            return await d
        finally:
            self.stop_spinner()

    def start_spinner(self, what: str) -> None:
        if not self.interactive or self._spinner is not None:
            return
        frames = itertools.cycle("|/-\\")

        def spin() -> None:
            self.stderr.write(f"\r{next(frames)} {what}")
            self.stderr.flush()

        self._spinner = task.LoopingCall(spin)
        self._spinner.clock = self.reactor
        self._spinner.start(0.1)

    def stop_spinner(self) -> None:
        if self._spinner is None:
            return
        self._spinner.stop()
        self._spinner = None
        self.stderr.write("\r\x1b[K")
        self.stderr.flush()


# -- parsing -----------------------------------------------------------------------


def _json_argument(what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text == "-":
            text = sys.stdin.read()
        try:
            return json.loads(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{what} is not valid JSON: {e}") from None

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("a timeout is from 0 to 3600 seconds")
    return value


def _resource(text: str) -> str:
    name = text.lower()
    if name not in RESOURCES and name + "s" in RESOURCES:
        name += "s"
    if name not in RESOURCES:
        raise argparse.ArgumentTypeError(
            f"unknown resource {text!r}: one of {', '.join(RESOURCES)}")
    return name


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _common() -> argparse.ArgumentParser:
    """The options every command takes: credentials and output."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and credentials")
    group.add_argument("--host", metavar="URL",
                       help=f"EXP API URL [$EXP_HOST, else {DEFAULT_HOST}]")
    group.add_argument("--username", metavar="U", help="user name [$EXP_USERNAME]")
    group.add_argument("--password", metavar="P", help="user password [$EXP_PASSWORD]")
    group.add_argument("--organization", metavar="O",
                       help="user organization [$EXP_ORGANIZATION]")
    group.add_argument("--uuid", metavar="U", help="device or consumer app uuid [$EXP_UUID]")
    group.add_argument("--secret", metavar="S", help="device secret [$EXP_SECRET]")
    group.add_argument("--api-key", metavar="K", help="consumer app api key [$EXP_API_KEY]")
    common.add_argument("--json", action="store_true",
                        help="print JSON (one line per answer) instead of text")
    return common


def _add(commands: Any, common: argparse.ArgumentParser, name: str, summary: str,
         examples: str, **kwargs: Any) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, parents=[common], help=summary, description=summary,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ")
        + "\n\n" + EPILOG,
        formatter_class=_formatter, **kwargs)


def parser() -> argparse.ArgumentParser:
    common = _common()
    main = argparse.ArgumentParser(
        prog="exp", formatter_class=_formatter,
        description="The EXP command line: listen, broadcast, read and write resources "
                    "and data, pair devices, run the local server.",
        epilog="examples:\n" + textwrap.indent(textwrap.dedent("""
            exp server                                  # the local server on 127.0.0.1:9000
            exp find devices                            # as the demo user, on 127.0.0.1:9000
            exp listen ops ping                         # print every ping on channel ops
            exp broadcast ops ping '{"n": 1}' --timeout 2
            exp data put cats fluffy '{"age": 4}'
            exp listen --help                           # every command's options and examples
            """).strip(), "  ") + "\n\n" + EPILOG)
    commands = main.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    listen = _add(commands, common, "listen", "print each broadcast on a channel as one JSON line, "
                  "until Ctrl-C", """
        exp listen ops                        # every broadcast on channel ops
        exp listen ops ping                   # only those named ping
        exp listen test-uuid --system         # a device's system channel (status, update, ...)
        exp listen kiosk hello --consumer --uuid test-uuid --api-key test-api-key
        """)
    listen.add_argument("channel", metavar="CHANNEL", help="channel name")
    listen.add_argument("name", metavar="NAME", nargs="?",
                        help="only broadcasts of this name (default: all)")
    listen.add_argument("--system", action="store_true", help="a system channel")
    listen.add_argument("--consumer", action="store_true", help="a consumer channel")

    broadcast = _add(commands, common, "broadcast", "send a broadcast and print the responses",
                     """
        exp broadcast ops ping                       # payload null, responses for 1 s
        exp broadcast ops ping '{"n": 1}' --timeout 5
        echo '[1, 2]' | exp broadcast ops numbers -  # the payload from stdin
        exp broadcast ops ping --json                # the responses as one JSON array
        """)
    broadcast.add_argument("channel", metavar="CHANNEL", help="channel name")
    broadcast.add_argument("name", metavar="NAME", help="event name")
    broadcast.add_argument("payload", metavar="PAYLOAD", nargs="?", default=None,
                           type=_json_argument("PAYLOAD"),
                           help="JSON payload, or - to read it from stdin (default: null)")
    broadcast.add_argument("--timeout", type=_seconds, default=1.0, metavar="S",
                           help="seconds to collect responses (default: 1)")
    broadcast.add_argument("--consumer", action="store_true", help="a consumer channel")

    resource_help = f"RESOURCE is one of {', '.join(RESOURCES)} (or the singular)"
    get = _add(commands, common, "get", "print one resource", """
        exp get devices test-uuid
        exp get location demo-location --json
        """)
    get.add_argument("resource", metavar="RESOURCE", type=_resource, help=resource_help)
    get.add_argument("target", metavar="UUID")

    find = _add(commands, common, "find", "list resources (or data) matching filters", """
        exp find devices
        exp find things subtype=scala:thing:rfid --limit 10
        exp find devices location.uuid=demo-location --sort -name
        exp find data group=cats
        """)
    find.add_argument("resource", metavar="RESOURCE", type=_data_or_resource,
                      help=resource_help + ", or data")
    find.add_argument("filters", metavar="FIELD=VALUE", nargs="*",
                      help="a filter on a (dotted) field")
    find.add_argument("--limit", type=int, metavar="N", help="at most N results")
    find.add_argument("--skip", type=int, metavar="N", help="skip the first N")
    find.add_argument("--sort", metavar="FIELD", help="sort by FIELD (-FIELD: descending)")

    create = _add(commands, common, "create", "create a resource from a JSON document", """
        exp create things '{"name": "badge reader", "subtype": "scala:thing:rfid"}'
        exp create experiences                       # from {}
        exp create devices - < device.json
        """)
    create.add_argument("resource", metavar="RESOURCE", type=_resource, help=resource_help)
    create.add_argument("document", metavar="DOCUMENT", nargs="?", default={},
                        type=_json_argument("DOCUMENT"),
                        help="JSON object, or - to read it from stdin (default: {})")

    save = _add(commands, common, "save", "merge a JSON document's top-level fields into a "
                "resource", """
        exp save devices test-uuid '{"name": "lobby screen"}'
        exp get things demo-thing --json | jq '.name = "renamed"' | exp save things demo-thing -
        """)
    save.add_argument("resource", metavar="RESOURCE", type=_resource, help=resource_help)
    save.add_argument("target", metavar="UUID")
    save.add_argument("document", metavar="DOCUMENT", type=_json_argument("DOCUMENT"),
                      help="JSON object, or - to read it from stdin")

    delete = _add(commands, common, "delete", "delete a resource", """
        exp delete things demo-thing
        """)
    delete.add_argument("resource", metavar="RESOURCE", type=_resource, help=resource_help)
    delete.add_argument("target", metavar="UUID")

    data = _add(commands, common, "data", "read, write or delete a data item", """
        exp data get cats fluffy
        exp data put cats fluffy '{"age": 4}'
        exp data put cats names '["tom", "felix"]'
        exp data delete cats fluffy
        exp find data group=cats                    # the items of a group
        """)
    data.add_argument("action", choices=["get", "put", "delete"], metavar="get|put|delete")
    data.add_argument("group", metavar="GROUP")
    data.add_argument("key", metavar="KEY")
    data.add_argument("value", metavar="VALUE", nargs="?", type=_json_argument("VALUE"),
                      help="JSON value for put, or - to read it from stdin")

    pair = _add(commands, common, "pair", "pair the device that shows a pairing code", """
        exp pair K3XQ9P --name "lobby screen"
        exp pair K3XQ9P --json                      # the new device, secret included
        """)
    pair.add_argument("code", metavar="CODE", help="the code the device shows")
    pair.add_argument("--name", metavar="N", help="the device's name")

    commands.add_parser("server", help="run the local EXP server: twistd -n exp-server "
                        "[options] (see exp server --help)", add_help=False)
    return main


def _data_or_resource(text: str) -> str:
    return "data" if text.lower() == "data" else _resource(text)


# -- credentials ---------------------------------------------------------------------

_CREDENTIALS = ("username", "password", "organization", "uuid", "secret", "api_key")


def credentials(args: argparse.Namespace, environ: dict[str, str],
                out: Output) -> tuple[str, dict[str, str]]:
    """
    The host and credentials, from the options, else C{EXP_*}; the demo user
    on L{DEFAULT_HOST} when neither names any.

    @raise UsageError: if they are incomplete or contradictory.
    """
    host = args.host or environ.get("EXP_HOST") or None
    given = {}
    for name in _CREDENTIALS:
        value = getattr(args, name) or environ.get("EXP_" + name.upper())
        if value:
            given[name] = value
    if host is None:
        if not given:
            given = {"username": DEMO["username"], "password": DEMO["password"],
                     "organization": DEMO["organization"]}
            out.note(f"no --host given: talking to {DEFAULT_HOST} as the demo user "
                     f"{DEMO['username']}")
        else:
            out.note(f"no --host given: talking to {DEFAULT_HOST}")
        host = DEFAULT_HOST
    try:
        check_options(host=host, **given)
    except ExpError as e:
        raise UsageError(str(e)) from None
    return host, given


# -- the commands ----------------------------------------------------------------------


async def _bounded(d: Deferred[Any], reactor: Any, what: str) -> Any:
    def timed_out(result: Any, timeout: float) -> Any:
        raise NetworkError(f"{what}: no answer within {timeout:g} s")

    d.addTimeout(REQUEST_TIMEOUT, reactor, onTimeoutCancel=timed_out)
    return await d


def _path(*segments: str) -> str:
    return "/".join(quote(s, safe="") for s in segments)


def _table(results: list[dict[str, Any]], columns: Sequence[str], total: int) -> str:
    def cell(document: dict[str, Any], column: str) -> str:
        value = document.get(column)
        return value if isinstance(value, str) else _json_line(value)

    rows = [list(columns)] + [[cell(d, c) for c in columns] for d in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.append(f"{len(results)} of {total}")
    return "\n".join(lines)


async def run_command(args: argparse.Namespace, service: Any, out: Output,
                      reactor: Any) -> None:
    """Do what C{args} says, as C{service}'s identity."""
    command = args.command

    async def call(method: str, path: str, *arguments: Any, what: str = "") -> Any:
        d = getattr(service, method)(path, *arguments)
        return await out.waiting(what or f"{method.upper()} {path}", _bounded(d, reactor, path))

    if command == "get":
        path = RESOURCES[args.resource]
        try:
            document = await call("get", f"{path}/{_path(args.target)}")
        except ApiError as e:
            if e.status_code == 404:
                what = args.resource.removesuffix("s")
                raise ExpError(f"{what} {args.target} not found") from None
            raise
        out.answer(document)
    elif command == "find":
        path = "/api/data" if args.resource == "data" else RESOURCES[args.resource]
        params: dict[str, Any] = {}
        for item in args.filters:
            field, sep, value = item.partition("=")
            if not sep or not field:
                raise UsageError(f"a filter is FIELD=VALUE, not {item!r}")
            params.setdefault(field, []).append(value)
        for name in ("limit", "skip", "sort"):
            if getattr(args, name) is not None:
                params[name] = str(getattr(args, name))
        answer = await call("get", path, params)
        columns = ("group", "key", "value") if args.resource == "data" else (
            "uuid", "name", "subtype")
        out.answer(answer, _table(answer["results"], columns, answer["total"]))
    elif command in ("create", "save"):
        if not isinstance(args.document, dict):
            raise UsageError("DOCUMENT must be a JSON object")
        if args.resource in READ_ONLY:
            raise UsageError(f"{args.resource} is read-only")
        path = RESOURCES[args.resource]
        if command == "create":
            document = await call("post", path, args.document)
        else:
            document = await call("patch", f"{path}/{_path(args.target)}", args.document)
        out.answer(document)
    elif command == "delete":
        if args.resource in READ_ONLY:
            raise UsageError(f"{args.resource} is read-only")
        await call("delete", f"{RESOURCES[args.resource]}/{_path(args.target)}")
        out.answer({"deleted": args.target}, f"deleted {args.resource} {args.target}")
    elif command == "data":
        path = f"/api/data/{_path(args.group, args.key)}"
        if args.action == "put":
            if args.value is None:
                raise UsageError("data put needs a VALUE (JSON)")
            item = await call("put", path, args.value)
            out.answer(item, f"{args.group}/{args.key} = {_pretty(item['value'])}")
        elif args.value is not None:
            raise UsageError(f"data {args.action} takes no VALUE")
        elif args.action == "get":
            try:
                item = await call("get", path)
            except ApiError as e:
                if e.status_code == 404:
                    raise ExpError(f"data item {args.group}/{args.key} not found") from None
                raise
            out.answer(item, _pretty(item["value"]))
        else:
            await call("delete", path)
            out.answer({"deleted": {"group": args.group, "key": args.key}},
                       f"deleted {args.group}/{args.key}")
    elif command == "broadcast":
        channel = service.get_channel(args.channel, consumer=args.consumer)
        responses = await out.waiting(
            f"collecting responses for {args.timeout:g} s",
            _bounded(channel.broadcast(args.name, args.payload, timeout=args.timeout),
                     reactor, "broadcast"))
        if out.as_json:
            out.line(responses)
        else:
            for response in responses:
                out.line(response)
            out.note(f"{len(responses)} response{'' if len(responses) == 1 else 's'}")
    elif command == "pair":
        body = {"pairingCode": args.code}
        if args.name:
            body["name"] = args.name
        device = await call("post", "/api/devices/pair", body, what="pairing")
        out.answer(device, f"paired {args.code.upper()} as device {device['uuid']}"
                   + (f" ({device['name']})" if device.get("name") else ""))
    elif command == "listen":
        from exp._listen import listen

        await listen(service, args.channel, args.name, args.system, args.consumer, out,
                     reactor, REQUEST_TIMEOUT)
    else:  # pragma: no cover - argparse allows no other
        raise UsageError(f"unknown command {command!r}")


async def _main(reactor: Any, args: argparse.Namespace, out: Output,
                environ: dict[str, str]) -> None:
    from exp.twisted import ExpService

    host, given = credentials(args, environ, out)
    options: dict[str, Any] = dict(given)
    service = ExpService(host, **options, enable_network=False, reactor=reactor,
                         request_timeout=REQUEST_TIMEOUT,
                         retry_policy=lambda attempt: min(0.5 * attempt, 2.0))
    service.startService()
    trigger = reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    try:
        await run_command(args, service, out, reactor)
    finally:
        out.stop_spinner()
        reactor.removeSystemEventTrigger(trigger)
        await service.stopService()


def _server(argv: Sequence[str]) -> NoReturn:
    """C{exp server ...} is C{twistd -n exp-server ...}."""
    from exp.server.testing import TWISTD

    if {"-h", "--help"} & set(argv):
        print(SERVER_HELP, flush=True)
    os.execv(TWISTD[0], [*TWISTD, "-n", "exp-server", *argv])


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The C{exp} console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "server":
        _server(argv[1:])
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help(sys.stderr)
        sys.exit(2)

    def run(reactor: Any) -> Deferred[None]:
        out = Output(args.json, sys.stdout, sys.stderr, reactor)
        return ensureDeferred(_guarded(reactor, args, out))

    task.react(run)


async def _guarded(reactor: Any, args: argparse.Namespace, out: Output) -> None:
    """Exit 1 with the one-line message of an EXP error, 2 for a usage error."""
    try:
        await _main(reactor, args, out, dict(os.environ))
    except UsageError as e:
        out.note(f"error: {e}")
        raise SystemExit(2) from None
    except ExpError as e:
        out.note(_one_line(e))
        raise SystemExit(1) from None


def _one_line(error: ExpError) -> str:
    if isinstance(error, ApiError):
        return f"{error.message or error} ({error.status_code} {error.code or 'error'})"
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":  # pragma: no cover
    main()
