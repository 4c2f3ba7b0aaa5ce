"""
A walk through the EXP SDK documentation with the blocking ``exp`` module:
start, channels, listening and waiting, broadcasts with responses,
responding, devices, data, content, and stop.  It prints each step.

It logs in as the demo user (test@goexp.io of organization scala) of the
local server's demo seed.  Run it against a running server::

    twistd -n exp-server --listen tcp:9000:interface=127.0.0.1 &
    python examples/walkthrough.py http://127.0.0.1:9000

or with no argument: it then starts a local EXP server (demo seed, temporary
database) as a child process for the length of the walk, and prints the
address of its web console and the demo user's credentials::

    python examples/walkthrough.py

With ``DEMO_KEEP=1`` in the environment (``make demo DEMO_KEEP=1``) that server
stays up after the walk, until Ctrl-C.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import exp
from exp.server.testing import DEMO, ServerProcess


def walk(host: str) -> None:
    print(f"exp.start(host={host!r}, username={DEMO['username']!r}, ...)")
    exp.start(host=host, username=DEMO["username"], password=DEMO["password"],
              organization=DEMO["organization"])
    try:
        network()
        resources()
        data()
        content()
    finally:
        print("exp.stop()")
        exp.stop()


def network() -> None:
    channel = exp.get_channel("my_channel")
    print("channel:", channel)

    # A responder in callback style: called (in a worker thread) per broadcast.
    def greet(broadcast: exp.api.Broadcast) -> None:
        broadcast.respond("Nice to meet you!")

    channel.listen("my_event", greet)

    # A responder in the documented wait-and-respond style, in a thread of its own.
    listener = channel.listen("my_event")
    print("listening for my_event; listener.wait(0) ->", listener.wait(0))

    def answer() -> None:
        broadcast = listener.wait(5)
        if broadcast is not None and broadcast.payload == "hello":
            print(f"received {broadcast.name} {broadcast.payload!r}; responding")
            broadcast.respond("hello back")

    responder = threading.Thread(target=answer)
    responder.start()
    responses = channel.broadcast(name="my_event", timeout=2, payload="hello")
    responder.join()
    print("broadcast my_event 'hello' got responses:", sorted(responses))
    listener.cancel()
    print("listener cancelled; listener.wait(1) ->", listener.wait(1))


def resources() -> None:
    devices = exp.api.find_devices(name="lobby")
    print(f"find_devices(name='lobby'): {[d.name for d in devices]} (total {devices.total})")
    lobby = exp.api.get_device(devices[0].uuid)
    print(f"get_device({lobby.uuid!r}): {lobby.name!r} {lobby.document['subtype']}")

    device = exp.api.create_device({"name": "walkthrough device"})
    print(f"create_device: {device.uuid} {device.name!r}")
    device.document["field"] = 123
    device.save()
    print("saved; field is", exp.api.get_device(device.uuid).document["field"])
    device.delete()
    print("deleted; get_device ->", exp.api.get_device(device.uuid))


def data() -> None:
    fluffy = exp.api.get_data("fluffy", "cats")
    print("get_data('fluffy', 'cats').value:", fluffy.value)

    item = exp.api.create_data(key="4", group="cats", value={"name": "whiskers"})
    print(f"create_data: {item.group}/{item.key} = {item.value}")
    item.value = {"name": "whiskers", "age": 2}
    item.save()
    print("saved; value is", exp.api.get_data("4", "cats").value)
    item.delete()
    print("deleted; get_data('4', 'cats') ->", exp.api.get_data("4", "cats"))


def content() -> None:
    root = exp.api.get_content("root")
    children = root.get_children()
    print("content:", ", ".join(f"{c.name} ({c.subtype})" for c in children))
    for child in children:
        if child.subtype == "scala:content:url":
            print(f"{child.name} url:", child.get_url())
        if child.name == "images":
            logo = child.get_children(name="logo.png")[0]
            print("logo.png url:", logo.get_url())
            print("logo.png small url:", logo.get_variant_url("small"))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        walk(argv[1])
    else:
        with ServerProcess() as server:
            print("started a local EXP server on", server.url)
            print(f"web console: {server.url}/console/ (sign in as {DEMO['username']},"
                  f" password {DEMO['password']}, organization {DEMO['organization']})")
            walk(server.url)
            if os.environ.get("DEMO_KEEP", "").lower() in ("1", "true", "yes"):
                keep(server.url)
    print("done")
    return 0


def keep(url: str) -> None:
    """Leave the server up (DEMO_KEEP=1) until Ctrl-C, for the console and the exp command."""
    print(f"the server stays up (DEMO_KEEP): open {url}/console/ or try"
          f" `.venv/bin/exp find devices --host {url}`; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
