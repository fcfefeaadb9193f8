// Runs fhir-kit-client (a real FHIR client library, pinned in package.json) against the
// gateway for the end-to-end tests (tests/tests/e2e/clients.rs): SMART discovery from the
// CapabilityStatement without a token, then with the token a read and a search followed page
// by page with the library's own `nextPage`.
//
// Usage: node client.mjs BASE_URL TOKEN PATIENT_ID SEARCH_JSON
// Prints one JSON line: what the library got, or {"error": ...} and exits 1.
import { Client } from 'fhir-kit-client';

const [baseUrl, token, patientId, searchJson] = process.argv.slice(2);

try {
  const anonymous = new Client({ baseUrl });
  const auth = await anonymous.smartAuthMetadata();
  const statement = await anonymous.capabilityStatement();

  const client = new Client({ baseUrl, bearerToken: token });
  const patient = await client.read({ resourceType: 'Patient', id: patientId });
  const pages = [];
  let bundle = await client.search({ resourceType: 'Observation', searchParams: JSON.parse(searchJson) });
  while (bundle) {
    pages.push((bundle.entry ?? []).map((e) => e.resource.id));
    bundle = await client.nextPage({ bundle });
  }
  console.log(JSON.stringify({
    tokenUrl: auth.tokenUrl?.toString() ?? null,
    authorizeUrl: auth.authorizeUrl?.toString() ?? null,
    fhirVersion: statement.fhirVersion,
    patient: patient.id,
    pages,
  }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error), status: error?.response?.status ?? null, body: error?.response?.data ?? null }));
  process.exit(1);
}
