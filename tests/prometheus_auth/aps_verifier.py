"""A stand-in for Amazon Managed Service for Prometheus' query endpoint that checks every
request's AWS SigV4 signature with botocore's own signer, then answers like Prometheus'
`/api/v1/query`.

The signature is recomputed with botocore.auth.SigV4Auth (botocore/auth.py:
`canonical_request`, `string_to_sign`, `signature` — the steps of its `add_auth`) over an
AWSRequest rebuilt from what arrived: method, URL, body and the headers the client lists in
`SignedHeaders`, with the timestamp taken from `X-Amz-Date`. A changed body, path, header,
region, service, key or token gives another signature and a 403, as AWS answers
(`{"message": ...}`, the body of AWS' JSON REST errors).

Usage: aps_verifier.py REGION VALUE. The credentials it accepts come from the environment
(VERIFY_AWS_ACCESS_KEY_ID, VERIFY_AWS_SECRET_ACCESS_KEY, optional VERIFY_AWS_SESSION_TOKEN),
never from arguments. It prints `port N` once listening, then one line per request:
`ok` or `denied: REASON`.
"""

import datetime
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "aps"
REGION = sys.argv[1]
VALUE = sys.argv[2]
CREDENTIALS = Credentials(
    os.environ["VERIFY_AWS_ACCESS_KEY_ID"],
    os.environ["VERIFY_AWS_SECRET_ACCESS_KEY"],
    os.environ.get("VERIFY_AWS_SESSION_TOKEN"),
)
# AWS refuses requests signed more than 5 minutes away from its clock.
MAX_SKEW = datetime.timedelta(minutes=5)


def parse_authorization(value):
    """`AWS4-HMAC-SHA256 Credential=K/D/R/S/aws4_request, SignedHeaders=a;b, Signature=hex`."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    fields = {}
    for part in rest.split(","):
        key, _, val = part.strip().partition("=")
        fields[key] = val
    return fields["Credential"].split("/"), fields["SignedHeaders"].split(";"), fields["Signature"]


def verify(method, path, headers, body):
    """None if the request is signed with CREDENTIALS for REGION and SERVICE, else why not."""
    auth = headers.get("Authorization")
    if auth is None:
        return "Missing Authentication Token"
    try:
        scope, signed_headers, signature = parse_authorization(auth)
    except (ValueError, KeyError) as e:
        return f"Authorization header is malformed: {e}"
    key, date, region, service, terminator = scope
    if key != CREDENTIALS.access_key:
        return "The security token included in the request is invalid."
    if region != REGION:
        return f"Credential should be scoped to a valid region, not '{region}'."
    if service != SERVICE or terminator != "aws4_request":
        return f"Credential should be scoped to correct service: '{SERVICE}'."
    stamp = headers.get("X-Amz-Date", "")
    try:
        signed_at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        return "X-Amz-Date is missing or malformed"
    if abs(datetime.datetime.now(datetime.timezone.utc) - signed_at) > MAX_SKEW:
        return "Signature expired"
    if stamp[0:8] != date:
        return "Credential date does not match X-Amz-Date"
    if CREDENTIALS.token is not None and headers.get("X-Amz-Security-Token") != CREDENTIALS.token:
        return "The security token included in the request is invalid."
    if "host" not in signed_headers:
        return "'Host' must be a signed header"
    request = AWSRequest(
        method=method,
        url=f"http://{headers['Host']}{path}",
        data=body,
        headers={name: headers[name] for name in signed_headers if name in headers},
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(CREDENTIALS, SERVICE, REGION)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        return (
            "The request signature we calculated does not match the signature you provided."
        )
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        problem = verify("POST", self.path, self.headers, body)
        if problem is not None:
            print(f"denied: {problem}", flush=True)
            self.answer(403, {"message": problem})
        elif not self.path.endswith("/api/v1/query"):
            print(f"denied: no route {self.path}", flush=True)
            self.answer(404, {"message": "Not Found"})
        else:
            print("ok", flush=True)
            # Prometheus' instant-query answer for a one-sample vector (its HTTP API docs).
            self.answer(
                200,
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [signed_now(), VALUE]}],
                    },
                },
            )

    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def signed_now():
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()
