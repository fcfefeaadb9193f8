"""Runs fhirclient (SMART on FHIR's Python client, pinned in requirements.txt) against the
gateway for the end-to-end tests (tests/tests/e2e/clients.rs): `prepare()` reads the
CapabilityStatement without a token into fhirclient's strict R4 models and takes the SMART
endpoints from its security section (this is what failed with 401 when metadata needed a
token); then, with the token, a read.

Usage: python fhirclient_client.py BASE_URL TOKEN PATIENT_ID
Prints one JSON line: what the library got, or {"error": ...} and exits 1.
"""

import json
import sys

from fhirclient import client
from fhirclient.models.patient import Patient


def main(base, token, patient_id):
    smart = client.FHIRClient(
        settings={"app_id": "assent-e2e", "api_base": base, "redirect_uri": "http://127.0.0.1/cb"}
    )
    ready = smart.prepare()
    auth = smart.server.auth
    out = {
        "ready_without_token": ready,
        "fhirVersion": smart.server.capabilityStatement.fhirVersion,
        "auth_type": getattr(auth, "auth_type", None),
        "token_uri": getattr(auth, "_token_uri", None),
        "authorize_uri": getattr(auth, "_authorize_uri", None),
    }
    auth.access_token = token
    out["patient"] = Patient.read(patient_id, smart.server).id
    return out


if __name__ == "__main__":
    try:
        print(json.dumps(main(*sys.argv[1:4])))
    except Exception as error:  # noqa: BLE001 - any failure is the test's answer
        print(json.dumps({"error": repr(error)}))
        sys.exit(1)
