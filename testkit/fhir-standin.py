"""A stand-in for a FHIR server, for cordon's delivery tests: Python's standard
library only, independent of cordon's code.

    python3 fhir-standin.py DIR

Listens on 127.0.0.1 on a free port and writes it to DIR/port. GET /fhir/metadata
answers an R4 CapabilityStatement that takes transactions. Each POST's path,
Authorization header and body go to DIR/request-<n>.json. While DIR/fail exists, a
POST gets 503 with an OperationOutcome; otherwise a transaction Bundle gets 200 and a
transaction-response with 201 for each entry. Stops when DIR/stop appears.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = sys.argv[1]
COUNT = [0]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/metadata"):
            self.answer(200, {
                "resourceType": "CapabilityStatement", "status": "active",
                "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
                "rest": [{"mode": "server",
                          "interaction": [{"code": "transaction"}, {"code": "batch"}],
                          "resource": [{"type": "Communication",
                                        "conditionalCreate": True}]}],
            })
        else:
            self.answer(404, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found"}]})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with open(os.path.join(DIR, f"request-{n}.json"), "w") as f:
            json.dump({
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            }, f)
        if os.path.exists(os.path.join(DIR, "fail")):
            self.answer(503, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "transient",
                 "diagnostics": "patient 9434765919 could not be stored"}]})
            return
        if not body or body.get("resourceType") != "Bundle" or body.get("type") != "transaction":
            self.answer(400, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid"}]})
            return
        entries = [{"response": {"status": "201 Created",
                                 "location": f"Communication/{n}-{i}/_history/1"}}
                   for i, _ in enumerate(body.get("entry", []))]
        self.answer(200, {"resourceType": "Bundle", "type": "transaction-response",
                          "entry": entries})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(os.path.join(DIR, "port.tmp"), "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = os.path.join(DIR, "stop")
    while not os.path.exists(stop):
        threading.Event().wait(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
