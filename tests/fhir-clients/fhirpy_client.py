"""Runs fhirpy (a real FHIR client library, pinned in requirements.txt) against the gateway
for the end-to-end tests (tests/tests/e2e/clients.rs): the CapabilityStatement without a token,
then with the token a read and a search whose pages fhirpy follows itself. fhirpy's HTTP layer
(aiohttp and yarl) re-encodes the query of every link it follows.

Usage: python fhirpy_client.py BASE_URL TOKEN PATIENT_ID CODE
Prints one JSON line: what the library got, or {"error": ...} and exits 1.
"""

import asyncio
import json
import sys

from fhirpy import AsyncFHIRClient


async def main(base, token, patient_id, code):
    anonymous = AsyncFHIRClient(base)
    statement = await anonymous.execute("metadata", method="get")
    client = AsyncFHIRClient(base, authorization=f"Bearer {token}")
    patient = await client.reference("Patient", patient_id).to_resource()
    ids = [o.id async for o in client.resources("Observation").search(code=code).limit(2)]
    return {"fhirVersion": statement["fhirVersion"], "patient": patient.id, "ids": ids}


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main(*sys.argv[1:5]))))
    except Exception as error:  # noqa: BLE001 - any failure is the test's answer
        print(json.dumps({"error": repr(error)}))
        sys.exit(1)
