"""A webhook receiver for the compose demo: logs every POST modelwatch sends and checks its signature.

modelwatch's webhook channel signs each request with HMAC-SHA256 over "timestamp.body"
(headers X-Modelwatch-Timestamp and X-Modelwatch-Signature: sha256=<hex>). This sink verifies it
with WEBHOOK_SECRET, answers 204 (401 on a bad signature) and prints one line per request.
Standard library only.
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("WEBHOOK_SECRET", "").encode()
PORT = int(os.environ.get("PORT", "8080"))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        timestamp = self.headers.get("X-Modelwatch-Timestamp", "")
        signature = self.headers.get("X-Modelwatch-Signature", "")
        expected = "sha256=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        valid = bool(SECRET) and hmac.compare_digest(signature, expected)
        try:
            payload = json.loads(body)
            summary = {
                "status": payload.get("status"),
                "alerts": [a.get("labels", {}) for a in payload.get("alerts", [])],
            }
        except (ValueError, AttributeError):
            summary = {"raw": body[:200].decode(errors="replace")}
        print(json.dumps({"path": self.path, "signature_valid": valid, **summary}), flush=True)
        self.send_response(204 if valid else 401)
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    print(f"webhook sink listening on :{PORT}", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
