"""A stand-in for VirtualHome's Unity simulator: its HTTP API, backed by e2wm's symbolic simulator.

Every call is a POST of ``{"id", "action", "intParams"?, "stringParams"?}`` answered with
``{"id", "success", "message"}``, as ``UnityCommunication`` speaks it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from support.loopback_server import LoopbackServer

CHARACTER = "<char0> "


class UnityStandIn(LoopbackServer):
    """Serves the API on 127.0.0.1 at a free ``port`` from a daemon thread; ``requests`` records each request.

    >>> with UnityStandIn() as server:
    ...     UnitySimulator(port=server.port)
    """

    def __init__(self) -> None:
        self.sim = VirtualHomeSimulator()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__(_handler(self))

    def actions(self) -> list[str]:
        """The ``action`` of each request received, in order."""
        return [r["action"] for r in self.requests]

    def answer(self, request: dict[str, Any]) -> tuple[bool, str]:
        """``(success, message)`` for one request, acting on the symbolic simulator."""
        with self._lock:
            self.requests.append(request)
            action, params = request["action"], request.get("stringParams", [])
            if action in ("idle", "clear", "add_character"):  # the scene graphs already hold the character
                return True, ""
            if action == "environment":
                self.sim.reset()
                return True, ""
            if action == "expand_scene":  # stringParams: [config, graph, prefabs_map?]
                self.sim.reset(json.loads(params[1]))
                return True, "{}"
            if action == "environment_graph":
                return True, json.dumps(self.sim.graph())
            if action == "render_script":  # stringParams: [params, script lines...]
                return self._render(params[1:])
            return False, f"unknown action {action!r}"

    def _render(self, lines: list[str]) -> tuple[bool, str]:
        for line in lines:
            try:
                if not line.startswith(CHARACTER):
                    raise E2WMError(f"Can not parse character for the line containing {line}")
                result = self.sim.step(Action.parse(line.removeprefix(CHARACTER)))
                failure = result.failure
            except E2WMError as exc:
                failure = str(exc)
            if failure is not None:  # Unity's shape: one message per character
                return False, json.dumps({"0": {"message": failure}})
        return True, json.dumps({"0": {"message": "Success"}})


def _handler(stand_in: UnityStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            success, message = stand_in.answer(request)
            body = json.dumps({"id": request.get("id"), "success": success, "message": message}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
