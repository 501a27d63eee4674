"""Validates FHIR transaction bundles of Communications (cordon's export of clinical
advice) with the `fhir.resources` models, plus what the models leave to a terminology
server or to the reader: code sets, references inside the bundle, NHS numbers.

Run by scripts/fhir-validate, which provides the venv. Exit 0: all valid; 1: a file is
not (each problem printed); 2: usage.
"""

import json
import sys

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
# http://hl7.org/fhir/R4/valueset-event-status.html
EVENT_STATUS = {
    "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
    "entered-in-error", "unknown",
}
# http://hl7.org/fhir/R4/valueset-http-verb.html
HTTP_VERBS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
BUNDLE_TYPES = {
    "document", "message", "transaction", "transaction-response", "batch",
    "batch-response", "history", "searchset", "collection",
}


def nhs_number_ok(value):
    """The NHS number's modulus 11 check, written again here from the NHS data
    dictionary, independently of cordon's."""
    if len(value) != 10 or not value.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])


def problems(raw):
    out = []
    try:
        Bundle.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            out.append(f"{loc}: {err['msg']}")
        return out
    if raw.get("type") not in BUNDLE_TYPES:
        out.append(f"Bundle.type {raw.get('type')!r} is not a bundle type")
    entries = raw.get("entry", [])
    urls = [e.get("fullUrl") for e in entries]
    if len(set(urls)) != len(urls):
        out.append("two entries share a fullUrl")
    for i, e in enumerate(entries):
        where = f"entry[{i}]"
        r = e.get("resource", {})
        if raw.get("type") == "transaction":
            req = e.get("request")
            if not req:
                out.append(f"{where}: a transaction entry needs a request")
            elif req.get("method") not in HTTP_VERBS:
                out.append(f"{where}.request.method {req.get('method')!r} is not an HTTP verb")
            elif req.get("method") == "POST" and req.get("url") != r.get("resourceType"):
                out.append(f"{where}.request.url {req.get('url')!r} is not the resource's type")
        if r.get("resourceType") != "Communication":
            continue
        if r.get("status") not in EVENT_STATUS:
            out.append(f"{where}.resource.status {r.get('status')!r} is not an event status")
        for ref in r.get("inResponseTo", []):
            if ref.get("reference") not in urls:
                out.append(f"{where}: inResponseTo {ref.get('reference')!r} is not in the bundle")
        ident = (r.get("subject") or {}).get("identifier") or {}
        if ident.get("system") == NHS_SYSTEM and not nhs_number_ok(ident.get("value", "")):
            out.append(f"{where}: the subject's NHS number fails its check digit")
        for p in r.get("payload", []):
            if not (p.get("contentString") or p.get("contentAttachment") or p.get("contentReference")):
                out.append(f"{where}: a payload without content")
    return out


def main(paths):
    if not paths:
        print("usage: fhir-validate FILE...", file=sys.stderr)
        return 2
    bad = False
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        found = problems(raw)
        if found:
            bad = True
            for p in found:
                print(f"{path}: {p}", file=sys.stderr)
        else:
            n = sum(1 for e in raw.get("entry", [])
                    if e.get("resource", {}).get("resourceType") == "Communication")
            print(f"{path}: valid FHIR R4 Bundle ({raw.get('type')}), {n} Communication(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
