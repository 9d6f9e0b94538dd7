#!/usr/bin/env python3
"""How many idle WebSocket connections does one notifd hold, at what cost.

A measurement, not a test: started by scripts/ws-capacity, which builds the release
binary, makes PostgreSQL and Redis available and exports the NOTIFD_* settings
(a fresh NOTIFD_JWT_SECRET, a unique NOTIFD_REDIS_PREFIX, ...). This script then:

1. starts `notifd serve` on 127.0.0.1 port 0 (stderr to a log file), finds the
   bound addresses and waits for /readyz;
2. reads notifd's RSS, threads and fds before any connection;
3. opens N WebSocket connections (one distinct user each, HS256 tokens minted here
   with the same secret), doing the HTTP upgrade by hand, C at a time;
4. waits, then reads RSS, threads and fds again, and notifd's CPU time over an
   idle hold (server pings are answered with pongs, as a browser would);
5. publishes one notification for user0 and checks that connection 0 gets it;
6. stops notifd with SIGTERM and times its exit with every connection open.

Standard library only (asyncio streams, hmac, urllib). Loopback only. Every wait is
bounded by count and time. Exit status 0 when every connection was admitted, the
notification arrived and notifd exited 0 in time; 1 otherwise (the report is
written either way); 2 for a setup error.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WORKSPACE = "w"
CHECK_KIND = "capacity_check"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Bounds on every wait (seconds).
START_LIMIT = 60.0  # notifd binds its listeners and /readyz answers 200
HANDSHAKE_LIMIT = 30.0  # one connection: TCP connect + HTTP upgrade
DELIVERY_LIMIT = 5.0  # the check notification reaches connection 0
SHUTDOWN_LIMIT = 15.0  # SIGTERM to exit
CLOSE_REPLY_LIMIT = 5.0  # after our close reply, wait this long for the server's EOF
HTTP_TIMEOUT = 10.0  # one REST request


def log(msg):
    print(f"ws-capacity: {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def parse_args():
    p = argparse.ArgumentParser(
        prog="scripts/ws-capacity",
        description="Open N idle WebSocket connections to one notifd and measure "
        "connect rate, RSS per connection, threads, fds, idle CPU and shutdown time.",
    )
    p.add_argument("-n", "--connections", type=int,
                   default=env_int("WS_CAPACITY_CONNECTIONS", 10000),
                   help="connections to open (env WS_CAPACITY_CONNECTIONS; default 10000)")
    p.add_argument("-c", "--concurrency", type=int,
                   default=env_int("WS_CAPACITY_CONCURRENCY", 200),
                   help="handshakes in flight at once (env WS_CAPACITY_CONCURRENCY; default 200)")
    p.add_argument("--hold", type=float, default=float(env_int("WS_CAPACITY_HOLD", 30)),
                   help="idle seconds over which CPU is measured (env WS_CAPACITY_HOLD; default 30)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds to wait after the last open before reading memory (default 5)")
    p.add_argument("--open-limit", type=float, default=None,
                   help="give up opening after this many seconds (default 60 + N/50)")
    p.add_argument("--no-pong", action="store_true",
                   help="do not answer server pings (they are still read and dropped)")
    # Set by scripts/ws-capacity.
    p.add_argument("--binary", default="target/release/notifd", help=argparse.SUPPRESS)
    p.add_argument("--report", default="target/ws-capacity.json", help=argparse.SUPPRESS)
    p.add_argument("--log", default="target/ws-capacity.notifd.log", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.connections < 1 or args.concurrency < 1 or args.hold <= 0 or args.settle < 0:
        p.error("--connections, --concurrency and --hold must be positive")
    if args.open_limit is None:
        args.open_limit = 60.0 + args.connections / 50.0
    return args


# ------------------------------------------------------------------ tokens


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mint(secret, claims):
    """An HS256 JWT, as `notifd token` makes it."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = header + b"." + body
    sig = b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + sig).decode()


# ------------------------------------------------------------------ /proc


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "VmSize"):
                out[key + "_kib"] = int(value.split()[0])
            elif key == "Threads":
                out["threads"] = int(value)
    return out


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name may hold spaces: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def snapshot(pid):
    snap = proc_status(pid)
    snap["fds"] = proc_fds(pid)
    return snap


def machine_cpu():
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("KernelStack", "Slab", "PageTables", "MemAvailable"):
                out[key] = int(value.split()[0])
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def listening_addrs(pid):
    """127.0.0.1:PORT strings of the TCP sockets `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    addrs = []
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            ip_hex, port_hex = fields[1].split(":")
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip_hex)))
            if ip == "0.0.0.0":
                ip = "127.0.0.1"
            addrs.append(f"{ip}:{int(port_hex, 16)}")
    return addrs


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return f.readlines()[-lines:]
    except OSError:
        return []


# ------------------------------------------------------------------ HTTP

# Loopback only: never through an http_proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(method, url, body=None, token=None):
    """(status, body text); status 0 with the error text when nothing answered."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with HTTP.open(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


# ------------------------------------------------------------------ notifd


class Notifd:
    def __init__(self, binary, log_path):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        # Its own session: a Ctrl-C reaches only us, and we stop it in order.
        self.proc = subprocess.Popen(
            [binary, "serve"], stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=self.log_file, start_new_session=True,
        )
        self.pid = self.proc.pid
        self.http_addr = None
        self.ws_addr = None

    def alive(self):
        return self.proc.poll() is None

    def fail(self, what):
        lines = "".join(tail(self.log_path, 40))
        raise SetupError(f"{what}; last lines of {self.log_path}:\n{lines}")

    def find_addrs(self):
        """From the `notifd started` line when the log level shows it (info), else from
        the process's listening sockets (at NOTIFD_LOG=warn the line is not printed):
        the one that answers /healthz is the REST side."""
        pattern = re.compile(r"notifd started.*\bhttp_addr=(\S+).*\bws_addr=(\S+)")
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail(f"notifd exited with status {self.proc.returncode} while starting")
            with open(self.log_path, errors="replace") as f:
                match = pattern.search(f.read())
            if match:
                self.http_addr, self.ws_addr = match.group(1), match.group(2)
                return
            addrs = listening_addrs(self.pid)
            if len(addrs) == 2:
                # Started fully (workers up) once /healthz answers on one of them.
                for i, addr in enumerate(addrs):
                    status, body = http_request("GET", f"http://{addr}/healthz")
                    if status == 200 and '"ok"' in body:
                        self.http_addr, self.ws_addr = addr, addrs[1 - i]
                        return
            time.sleep(0.2)
        self.fail(f"notifd did not bind its listeners within {START_LIMIT:.0f}s")

    def wait_ready(self):
        deadline = time.monotonic() + START_LIMIT
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail(f"notifd exited with status {self.proc.returncode} while starting")
            last = http_request("GET", f"http://{self.http_addr}/readyz")
            if last[0] == 200:
                return
            time.sleep(0.5)
        self.fail(f"/readyz did not answer 200 within {START_LIMIT:.0f}s (last: {last})")

    def kill(self):
        if self.alive():
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.log_file.close()


class SetupError(Exception):
    pass


# ------------------------------------------------------------------ WebSocket client


def client_frame(opcode, payload=b""):
    """A masked client frame (payloads here are under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class Conn:
    __slots__ = ("index", "reader", "writer", "open", "close_code", "close_reason",
                 "closed_at", "pings", "texts", "task")

    def __init__(self, index, reader, writer):
        self.index = index
        self.reader = reader
        self.writer = writer
        self.open = True
        self.close_code = None  # the server's close code; 1006 for EOF without one
        self.close_reason = ""
        self.closed_at = None
        self.pings = 0
        self.texts = 0
        self.task = None


class Client:
    def __init__(self, host, port, tokens, concurrency, answer_pings):
        self.host, self.port = host, port
        self.tokens = tokens
        self.concurrency = concurrency
        self.answer_pings = answer_pings
        self.conns = {}
        self.failures = {}  # reason -> count
        self.failed_examples = {}
        self.attempted = 0
        self.delivered = None  # set by connection 0's reader
        self.check_text = None
        self.stray_checks = 0  # check notifications seen on other connections

    def fail(self, reason, index):
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.failed_examples.setdefault(reason, index)

    async def open_one(self, index):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /?token={self.tokens[index]}&workspaceSlug={WORKSPACE} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.close()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            writer.close()
            return f"HTTP {' '.join(status[1:]) or lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            writer.close()
            return "bad Sec-WebSocket-Accept"
        conn = Conn(index, reader, writer)
        self.conns[index] = conn
        conn.task = asyncio.create_task(self.read_loop(conn))
        return None

    async def open_guarded(self, index, sem):
        async with sem:
            self.attempted += 1
            try:
                why = await asyncio.wait_for(self.open_one(index), HANDSHAKE_LIMIT)
            except asyncio.TimeoutError:
                why = f"no 101 within {HANDSHAKE_LIMIT:.0f}s"
            except asyncio.IncompleteReadError:
                why = "closed before 101"
            except OSError as e:
                why = f"{type(e).__name__}: {e.strerror or e}"
            except asyncio.LimitOverrunError:
                why = "response head too large"
            if why:
                self.fail(why, index)

    async def open_all(self, n, limit):
        """Opens n connections; returns (seconds, finished in time)."""
        sem = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        tasks = [asyncio.create_task(self.open_guarded(i, sem)) for i in range(n)]
        pending = set(tasks)
        deadline = started + limit
        next_report = started + 2
        while pending and time.monotonic() < deadline:
            _, pending = await asyncio.wait(pending, timeout=min(1.0, deadline - time.monotonic()))
            if time.monotonic() >= next_report:
                next_report += 2
                log(f"  {n - len(pending)}/{n} done, {len(self.conns)} upgraded, "
                    f"{sum(self.failures.values())} failed")
        elapsed = time.monotonic() - started
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            self.failures[f"not done within the {limit:.0f}s open limit"] = len(pending)
        return elapsed, not pending

    async def read_loop(self, conn):
        """Reads and mostly drops what the server sends; answers pings and closes."""
        r, w = conn.reader, conn.writer
        try:
            while True:
                b0, b1 = await r.readexactly(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    length = int.from_bytes(await r.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await r.readexactly(8), "big")
                if b1 & 0x80:  # servers never mask, but stay in step if one does
                    await r.readexactly(4)
                payload = await r.readexactly(length) if length else b""
                if opcode == 0x9:
                    conn.pings += 1
                    if self.answer_pings:
                        w.write(client_frame(0xA, payload))
                elif opcode == 0x1:
                    conn.texts += 1
                    if CHECK_KIND.encode() in payload:
                        if conn.index == 0 and self.delivered is not None:
                            self.check_text = payload.decode(errors="replace")
                            self.delivered.set()
                        elif conn.index != 0:
                            self.stray_checks += 1
                elif opcode == 0x8:
                    conn.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    conn.close_reason = payload[2:].decode(errors="replace")
                    conn.closed_at = time.monotonic()
                    conn.open = False
                    w.write(client_frame(0x8, payload[:2]))
                    # The server drops the socket once it reads our reply.
                    try:
                        await asyncio.wait_for(r.read(), CLOSE_REPLY_LIMIT)
                    except asyncio.TimeoutError:
                        pass
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if conn.open:
                conn.open = False
                conn.close_code = 1006
                conn.closed_at = time.monotonic()
        except asyncio.CancelledError:
            pass
        finally:
            w.close()

    def open_count(self):
        return sum(1 for c in self.conns.values() if c.open)

    def close_codes(self):
        codes = {}
        for c in self.conns.values():
            if not c.open:
                label = f"{c.close_code}" + (f" {c.close_reason}" if c.close_reason else "")
                codes[label] = codes.get(label, 0) + 1
        return codes

    def pings(self):
        return sum(c.pings for c in self.conns.values())

    async def abort_all(self):
        tasks = [c.task for c in self.conns.values() if c.task and not c.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)


# ------------------------------------------------------------------ the run


async def measure(args, notifd, secret):
    report = {"notes": []}
    pid = notifd.pid
    n = args.connections
    now = int(time.time())

    t0 = time.monotonic()
    tokens = [mint(secret, {"sub": f"user{i}", "exp": now + 7200, "workspaces": [WORKSPACE]})
              for i in range(n)]
    service_token = mint(secret, {"sub": "ws-capacity", "exp": now + 7200,
                                  "scope": "notifications:publish"})
    log(f"minted {n} tokens in {time.monotonic() - t0:.2f}s")

    notifd.find_addrs()
    notifd.wait_ready()
    log(f"notifd pid {pid} ready: http {notifd.http_addr}, ws {notifd.ws_addr}")
    report["http_addr"], report["ws_addr"] = notifd.http_addr, notifd.ws_addr
    time.sleep(1)
    before = snapshot(pid)
    mem_before = meminfo()
    report["before"] = before
    log(f"before: RSS {before['VmRSS_kib']} KiB, {before['threads']} threads, {before['fds']} fds")

    host, port = notifd.ws_addr.rsplit(":", 1)
    client = Client(host, int(port), tokens, args.concurrency, not args.no_pong)
    client.delivered = asyncio.Event()
    log(f"opening {n} connections, {args.concurrency} in flight …")
    open_seconds, in_time = await client.open_all(n, args.open_limit)
    upgraded = len(client.conns)
    report["open"] = {
        "attempted": n,
        "upgraded": upgraded,
        "seconds": round(open_seconds, 3),
        "rate_per_s": round(upgraded / open_seconds, 1) if open_seconds > 0 else None,
        "failures": dict(client.failures),
        "failure_example_index": dict(client.failed_examples),
        "finished_in_time": in_time,
    }
    log(f"upgraded {upgraded}/{n} in {open_seconds:.1f}s; failures: {client.failures or 'none'}")

    await asyncio.sleep(args.settle)
    if not notifd.alive():
        notifd.fail(f"notifd exited with status {notifd.proc.returncode} under load")
    after = snapshot(pid)
    mem_after = meminfo()
    connected = client.open_count()
    report["after"] = after
    report["connected"] = connected
    # Upgraded but then closed by the server (a refusal comes as a close after the 101).
    report["closed_after_upgrade"] = client.close_codes()
    rss_delta = after["VmRSS_kib"] - before["VmRSS_kib"]
    report["rss_per_connection_kib"] = round(rss_delta / connected, 2) if connected else None
    report["rss_anon_per_connection_kib"] = (
        round((after["RssAnon_kib"] - before["RssAnon_kib"]) / connected, 2) if connected else None)
    # Machine-wide, both ends of every loopback socket and anything else running: rough.
    report["kernel_per_connection_kib_rough"] = {
        k: round((mem_after[k] - mem_before[k]) / connected, 2) if connected else None
        for k in ("KernelStack", "Slab", "PageTables")
    }
    log(f"after: RSS {after['VmRSS_kib']} KiB, {after['threads']} threads, {after['fds']} fds, "
        f"{connected} open")

    # Idle CPU over the hold: notifd's utime+stime, and the whole machine for context.
    pings_before = client.pings()
    cpu0, m0, w0 = proc_cpu_ticks(pid), machine_cpu(), time.monotonic()
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    log(f"holding {args.hold:.0f}s idle …")
    await asyncio.sleep(args.hold)
    cpu1, m1, w1 = proc_cpu_ticks(pid), machine_cpu(), time.monotonic()
    rusage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = w1 - w0
    client_cpu = (rusage1.ru_utime + rusage1.ru_stime) - (rusage0.ru_utime + rusage0.ru_stime)
    report["hold"] = {
        "seconds": round(wall, 2),
        "notifd_cpu_percent_of_one_core": round((cpu1 - cpu0) / CLK_TCK / wall * 100, 2),
        "notifd_cpu_seconds": round((cpu1 - cpu0) / CLK_TCK, 2),
        "machine_busy_percent_all_cores": round(
            (m1[0] - m0[0]) / (m1[1] - m0[1]) * 100, 1) if m1[1] > m0[1] else None,
        "client_cpu_percent_of_one_core": round(client_cpu / wall * 100, 2),
        "pings_received": client.pings() - pings_before,
        "pongs_sent": (client.pings() - pings_before) if not args.no_pong else 0,
        "open_at_end": client.open_count(),
        "loadavg": loadavg(),
    }
    report["threads_after_hold"] = proc_status(pid)["threads"]

    # One notification for user0 must reach connection 0, and only it.
    check = {"delivered": False}
    if 0 in client.conns and client.conns[0].open:
        body = {"user_id": "user0", "workspace": WORKSPACE, "kind": CHECK_KIND, "payload": {}}
        sent = time.monotonic()
        status, text = await asyncio.to_thread(
            http_request, "POST", f"http://{notifd.http_addr}/v1/internal/notifications",
            body, service_token)
        check["post_status"] = status
        if status != 201:
            check["post_body"] = text[:500]
        else:
            try:
                await asyncio.wait_for(client.delivered.wait(), DELIVERY_LIMIT)
                check["delivered"] = True
                check["seconds_after_post"] = round(time.monotonic() - sent, 4)
                check["frame"] = client.check_text[:300]
            except asyncio.TimeoutError:
                check["error"] = f"no text frame with {CHECK_KIND!r} within {DELIVERY_LIMIT:.0f}s"
        await asyncio.sleep(0.2)
        check["stray_copies_on_other_connections"] = client.stray_checks
    else:
        check["error"] = "connection 0 is not open"
    report["delivery_check"] = check

    # SIGTERM with every connection open; the client answers the 1001 closes.
    open_at_stop = client.open_count()
    report["rss_at_stop_kib"] = proc_status(pid)["VmRSS_kib"]
    stop_started = time.monotonic()
    notifd.proc.send_signal(signal.SIGTERM)
    rc = None
    threads_timeline = []  # (seconds after SIGTERM, notifd threads), every 0.1 s
    next_sample = stop_started
    while time.monotonic() - stop_started < SHUTDOWN_LIMIT:
        rc = notifd.proc.poll()
        if rc is not None:
            break
        if time.monotonic() >= next_sample:
            next_sample += 0.1
            try:
                threads = proc_status(pid)["threads"]
                threads_timeline.append((round(time.monotonic() - stop_started, 2), threads))
            except (OSError, KeyError):
                pass
        await asyncio.sleep(0.02)
    shutdown_seconds = time.monotonic() - stop_started
    if rc is None:
        report["notes"].append(f"notifd did not exit within {SHUTDOWN_LIMIT:.0f}s of SIGTERM: killed")
        notifd.proc.kill()
    await asyncio.sleep(0.5)  # let readers see the last closes and EOFs
    closes = {}
    close_times = []
    for c in client.conns.values():
        if c.closed_at is not None and c.closed_at >= stop_started:
            closes[c.close_code] = closes.get(c.close_code, 0) + 1
            close_times.append(c.closed_at - stop_started)
    close_times.sort()
    report["shutdown"] = {
        "open_at_sigterm": open_at_stop,
        "exit_status": rc,
        "seconds": round(shutdown_seconds, 3) if rc is not None else None,
        "close_codes_seen": {str(k): v for k, v in sorted(closes.items())},
        "last_close_after_s": round(close_times[-1], 3) if close_times else None,
        "median_close_after_s": round(close_times[len(close_times) // 2], 3) if close_times else None,
        "still_open_after_exit": client.open_count(),
        "threads_timeline": threads_timeline,
    }
    await client.abort_all()
    return report


def print_table(r):
    o, h, s, d = r["open"], r["hold"], r["shutdown"], r["delivery_check"]
    failures = sum(o["failures"].values()) + sum(r["closed_after_upgrade"].values())
    rows = [
        ("connections asked", f"{o['attempted']}"),
        ("connected (open after settle)", f"{r['connected']}"),
        ("failures", f"{failures}" + (f"  {o['failures']} {r['closed_after_upgrade']}"
                                      if failures else "")),
        ("connect rate", f"{o['rate_per_s']} conn/s ({o['seconds']} s, {r['concurrency']} in flight)"),
        ("RSS before / after", f"{r['before']['VmRSS_kib']} / {r['after']['VmRSS_kib']} KiB"),
        ("RSS per connection", f"{r['rss_per_connection_kib']} KiB"
                               f" (anon {r['rss_anon_per_connection_kib']} KiB)"),
        ("threads before / after", f"{r['before']['threads']} / {r['after']['threads']}"),
        ("fds before / after", f"{r['before']['fds']} / {r['after']['fds']}"),
        ("idle CPU (notifd)", f"{h['notifd_cpu_percent_of_one_core']}% of one core over "
                              f"{h['seconds']} s, {h['pings_received']} pings"
                              f"{' answered' if r['answer_pings'] else ' (not answered)'}"),
        ("machine busy during hold", f"{h['machine_busy_percent_all_cores']}% of all "
                                     f"{r['machine']['cpus']} cores (load {h['loadavg'][0]})"),
        ("delivery to connection 0", (f"ok in {d['seconds_after_post'] * 1000:.1f} ms"
                                      if d["delivered"] else f"FAILED: {d.get('error') or d}")),
        ("shutdown (SIGTERM -> exit)", (f"{s['seconds']} s, status {s['exit_status']}, "
                                        f"{s['open_at_sigterm']} open; closes {s['close_codes_seen']}")
                                       if s["exit_status"] is not None else "did not exit: killed"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    kern = r["kernel_per_connection_kib_rough"]
    print(f"  {'(kernel, machine-wide, rough)':<{width}}  KernelStack {kern['KernelStack']}, "
          f"Slab {kern['Slab']}, PageTables {kern['PageTables']} KiB per connection")
    print()


def on_term(_signum, _frame):
    raise KeyboardInterrupt


def main():
    args = parse_args()
    secret = os.environ.get("NOTIFD_JWT_SECRET", "")
    if len(secret) < 16:
        log("NOTIFD_JWT_SECRET is not set (run scripts/ws-capacity, which makes one)")
        return 2
    # One fd per connection here too, plus a few.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 64
    if soft < need:
        want = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need:
        log(f"warning: this client may open only {soft} fds (hard limit {hard}); "
            f"expect about {need - soft} EMFILE failures")

    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    notifd = Notifd(args.binary, args.log)
    # A TERM to us stops notifd below, like a Ctrl-C.
    signal.signal(signal.SIGTERM, on_term)
    report = None
    status = 1
    try:
        report = asyncio.run(measure(args, notifd, secret.encode()))
    except SetupError as e:
        log(str(e))
        status = 2
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        notifd.kill()

    if report is None:
        return status
    report.update({
        "connections_asked": args.connections,
        "concurrency": args.concurrency,
        "answer_pings": not args.no_pong,
        "settle_seconds": args.settle,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "shared": "other engineers' builds and tests may run on this machine: CPU "
                      "figures and the connect rate are noisy (see machine_busy_percent)",
        },
        "settings": {k: os.environ.get(k) for k in (
            "NOTIFD_PING_INTERVAL", "NOTIFD_IDLE_TIMEOUT", "NOTIFD_MAX_CONNECTIONS",
            "NOTIFD_REDIS_PREFIX", "NOTIFD_LOG")},
        "notifd_log": args.log,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    warnings = [line.rstrip("\n") for line in tail(args.log, 100000)
                if re.search(r"\b(WARN|ERROR)\b", line)]
    report["notifd_warnings"] = {"count": len(warnings), "last": warnings[-10:]}
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print_table(report)
    if warnings:
        print(f"notifd logged {len(warnings)} warning/error line(s); last ones:")
        for line in warnings[-10:]:
            print(f"  {line}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {args.report}   notifd log: {args.log}")

    ok = (report["connected"] == args.connections
          and report["delivery_check"]["delivered"]
          and report["shutdown"]["exit_status"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
