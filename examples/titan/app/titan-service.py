#!/usr/bin/env python3
"""A stand-in Titan service for the example: answers health checks on loopback.

usage: titan-service.py NAME PORT [DEPENDENCY_URL ...]
/health answers 200 only while every dependency's /health answers 200.
"""
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

name, port, deps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def dependencies_up():
    for url in deps:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
    return True


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        routes = {
            "/health": {"name": name, "status": "ok"},
            "/health/websockets": {"name": name, "websockets": "connected"},
            "/health/trading": {"name": name, "trading": True},
        }
        body = routes.get(self.path)
        code = 200 if body is not None and dependencies_up() else 503
        data = json.dumps(body or {"error": "not found"}).encode()
        self.send_response(code if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


# Loopback on a plain server; every address in a pod (the image sets TITAN_SERVICE_BIND).
bind = os.environ.get("TITAN_SERVICE_BIND", "127.0.0.1")
ThreadingHTTPServer((bind, port), Health).serve_forever()
