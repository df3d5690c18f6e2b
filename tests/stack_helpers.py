"""A running stack + app inside a fresh network namespace, for end-to-end
tests against the Linux kernel (the kernel side of the TUN is the client)."""
from __future__ import annotations

import contextlib
import threading
import time

from netns_helpers import make_device_netns, make_tun_netns, require_netns

from misdtcp.api import Stack
from misdtcp.apps import discard, echo, iperf3

STACK_ADDR = "10.77.0.2"
APPS = {"discard": (discard.serve, 9), "echo": (echo.serve, 7), "iperf3": (iperf3.serve, 5201)}


@contextlib.contextmanager
def serving(app="discard", *, workers=1, offload=True, strategy="misd", reports=None, device="tun",
            **stack_options):
    """Yields (ns, stack). `reports` (a list) collects the app's JSON lines.
    `device`: "tun" or "packet-ring" (the stack's device is `stack.device`)."""
    require_netns()
    ns, dev = make_device_netns(device, offload=offload)
    stop = threading.Event()
    stack = None
    try:
        stack = Stack(dev, address=STACK_ADDR, workers=workers, offload=offload, strategy=strategy,
                      **stack_options).start()
        serve, port = APPS[app]
        kwargs = {"stop": stop}
        if app == "iperf3":
            kwargs["log"] = (reports.append if reports is not None else (lambda text: None))
        else:
            kwargs["report"] = reports.append if reports is not None else None
        threading.Thread(target=serve, args=(stack, port), kwargs=kwargs, daemon=True).start()
        if not wait_for(lambda: stack.listening(port) or stack.failure, timeout=10) or stack.failure:
            raise RuntimeError(f"the {app} app did not start listening: {stack.failure}")
        yield ns, stack
    finally:
        stop.set()
        if stack is not None:
            stack.stop()
        dev.close()
        ns.delete()


def wait_for(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def receive_transfer(stack, ns, total, *, during=None, timeout=20.0, port=9):
    """A kernel client in `ns` sends `total` random bytes to `port` of the
    stack; this process receives them without copying and hashes them.
    `during(received)` runs after every view (to kill or stop a process at
    a chosen moment).  Returns (bytes received, their SHA-256, the sender's
    own count and SHA-256)."""
    import hashlib
    import subprocess

    from netns_helpers import finish
    from test_e2e_transfer import SENDER

    listener = stack.listen(port)
    client = ns.python(["-c", SENDER.format(addr=STACK_ADDR, port=port), str(total)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn, _ = listener.accept(timeout=timeout)
        digest = hashlib.sha256()
        got = 0
        while True:
            view = conn.recv_view(timeout=timeout)
            if not len(view):
                break
            digest.update(view)
            got += len(view)
            conn.release(view)
            if during is not None:
                during(got)
        conn.close()
    except BaseException:
        client.kill()
        finish(client, timeout=5)
        raise
    rc, out, err = finish(client, timeout=timeout + 10)
    assert rc == 0, f"the sender failed: {err.strip()}"
    sent, sent_digest = out.split()
    return got, digest.hexdigest(), int(sent), sent_digest


@contextlib.contextmanager
def bare_stack(**stack_options):
    """Yields (ns, stack): a started stack on a TUN in a fresh namespace, no
    app (the test listens itself); everything removed afterwards."""
    require_netns()
    ns, tun = make_tun_netns()
    stack = Stack(tun, address=STACK_ADDR, **stack_options)
    try:
        stack.start()
        yield ns, stack
    finally:
        stack.stop()
        tun.close()
        ns.delete()
