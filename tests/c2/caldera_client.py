"""An independent Caldera-protocol agent, written from the protocol's description, sharing no code with
``assay.agent`` (stdlib only). It behaves as Sandcat does:

- every beacon POSTs base64 of the JSON profile to ``/beacon``; the reply is base64 of JSON whose
  ``instructions`` is a JSON string holding a list of JSON-encoded instructions (command in base64);
- each instruction runs as ``sh -c <command>`` after its payloads are fetched from ``/file/download``
  (headers ``file``, ``platform``, ``paw``; the reply's ``FILENAME`` header names the file);
- each result goes back at once, in a separate beacon with a trimmed profile: output and stderr in base64,
  ``exit_code``, ``status`` and ``pid`` as decimal strings, ``agent_reported_time`` in Caldera's format;
- it sleeps the reply's ``sleep`` between beacons and stops when ``watchdog`` seconds pass without a
  successful check-in; stored deadman instructions run then.

Run: ``python3 caldera_client.py --server URL --group G``. It prints one JSON line per event on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(
        url, body, {"User-Agent": "caldera-client", **(headers or {})}, method="POST"
    )
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), dict(exc.headers)


class Client:
    def __init__(self, server: str, group: str, paw: str) -> None:
        self.server = server.rstrip("/")
        self.paw = paw
        self.group = group
        self.deadman: list[dict[str, Any]] = []
        self.executors = ["sh"]
        self.last_checkin = time.time()
        self.watchdog = 0

    def profile(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "group": self.group,
            "host": socket.gethostname(),
            "username": "tester",
            "architecture": "amd64",
            "platform": "linux",
            "location": os.path.abspath(__file__),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "executors": list(self.executors),
            "privilege": "User",
            "exe_name": "caldera_client.py",
            "paw": self.paw,
            "proxy_receivers": {},
            "origin_link_id": "",
            "deadman_enabled": True,
            "available_contacts": ["HTTP"],
            "host_ip_addrs": ["127.0.0.1"],
            "upstream_dest": self.server,
            "contact": "HTTP",
        }

    def beacon(self, profile: dict[str, Any]) -> dict[str, Any] | None:
        body = base64.b64encode(json.dumps(profile).encode())
        try:
            status, raw, _ = post(self.server + "/beacon", body)
        except OSError as exc:
            say("beacon_failed", error=str(exc))
            return None
        if status != 200:
            say("beacon_refused", status=status, body=raw.decode("utf-8", "replace")[:300])
            return None
        self.last_checkin = time.time()
        return json.loads(base64.b64decode(raw))

    def fetch(self, name: str) -> bool:
        status, data, headers = post(
            self.server + "/file/download", b"", {"file": name, "platform": "linux", "paw": self.paw}
        )
        if status != 200 or "Filename" not in {k.title(): v for k, v in headers.items()}:
            say("payload_missing", name=name, status=status)
            return False
        with open(name, "wb") as fh:
            fh.write(data)
        os.chmod(name, 0o700)
        return True

    def run(self, instruction: dict[str, Any]) -> dict[str, Any]:
        command = base64.b64decode(instruction["command"]).decode()
        missing = [p for p in instruction.get("payloads", []) if not self.fetch(p)]
        reported = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if missing:
            return {"id": instruction["id"], "output": "", "exit_code": "-1", "status": "1", "pid": "1",
                    "stderr": base64.b64encode(f"Payload(s) not available: {missing}".encode()).decode(),
                    "agent_reported_time": reported}  # fmt: skip
        proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=int(instruction.get("timeout", 60)))
            status = "0" if proc.returncode == 0 else "1"
            code = str(proc.returncode)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            out = b"Timeout reached, process killed\n" + out
            status, code = "124", "-1"
        say("ran", id=instruction["id"], pid=proc.pid, command=command, status=status)
        return {
            "id": instruction["id"],
            "output": base64.b64encode(out).decode(),
            "stderr": base64.b64encode(err).decode(),
            "exit_code": code,
            "status": status,
            "pid": str(proc.pid),
            "agent_reported_time": reported,
        }

    def send_result(self, result: dict[str, Any]) -> None:
        trimmed = {
            k: self.profile()[k] for k in ("paw", "server", "platform", "host", "contact", "upstream_dest")
        }
        reply = self.beacon({**trimmed, "results": [result]})
        say("result_sent", id=result["id"], instructions=None if reply is None else reply["instructions"])

    def loop(self, duration: float) -> int:
        started = time.time()
        while time.time() - started < duration:
            if self.watchdog > 0 and time.time() - self.last_checkin > self.watchdog:
                say("watchdog", seconds=self.watchdog)
                break
            reply = self.beacon(self.profile())
            if reply is None:
                time.sleep(1)
                continue
            self.paw, self.watchdog = reply["paw"], reply["watchdog"]
            if "new_contact" in reply or "executor_change" in reply:  # Sandcat: switch channel / executor
                change = reply.get("executor_change")
                if isinstance(change, dict) and change.get("action") == "remove":
                    self.executors = [e for e in self.executors if e != change.get("executor")]
                say("directive", new_contact=reply.get("new_contact"), executor_change=change)
            instructions = [json.loads(item) for item in json.loads(reply["instructions"])]
            say(
                "beacon",
                paw=self.paw,
                sleep=reply["sleep"],
                watchdog=reply["watchdog"],
                count=len(instructions),
            )
            for instruction in instructions:
                if instruction.get("deadman"):
                    self.deadman.append(instruction)
                    continue
                self.send_result(self.run(instruction))
                time.sleep(instruction.get("sleep", 0))
            time.sleep(reply["sleep"])
        for instruction in self.deadman:  # results of deadman instructions are not sent (Caldera)
            self.run(instruction)
        say("exit")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--group", default="red")
    parser.add_argument("--paw", default="")
    parser.add_argument("--duration", type=float, default=120.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return Client(args.server, args.group, args.paw).loop(args.duration)


if __name__ == "__main__":
    sys.exit(main())
