// Test fixture for assent-auth's end-to-end tests: the certified `oidc-provider` package,
// configured as a SMART backend-services token server on loopback. Not shipped, not a demo.
//
// Usage: node provider.mjs [port]   (port 0 or absent: the OS picks one)
// Prints one line on stdout, the issuer URL, once it is listening on 127.0.0.1.
// Exits when its stdin closes, so the test that spawned it cannot leave it behind.
//
// Clients (client_secret_basic, grant client_credentials only):
//   assent-rs256 / secret-rs256 : access tokens signed RS256, claims of a practitioner
//   assent-es256 / secret-es256 : access tokens signed ES256, claims of a practitioner in a
//                                 patient context
//   assent-backend / secret-backend : RS256, no user claims (a backend service)
// The resource indicator (`resource` parameter) is the audience; every resource under
// http://assent.test/ is accepted.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const requestedPort = Number.parseInt(process.argv[2] ?? '0', 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`bad port ${process.argv[2]}\n`);
  process.exit(2);
}

const RESOURCE_PREFIX = 'http://assent.test/';
const SMART_SCOPES = [
  'system/*.rs',
  'system/Patient.rs',
  'system/Observation.rs',
  'user/*.rs',
  'user/Observation.rs',
  'patient/*.rs',
  'patient/Observation.rs',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
].join(' ');

// Claims added to each client's access tokens (SMART `fhirUser`, launch-context `patient`,
// and an HL7 v3 PurposeOfUse code).
const CLIENTS = {
  'assent-rs256': {
    secret: 'secret-rs256',
    alg: 'RS256',
    claims: { fhirUser: 'Practitioner/dr-alice', organization: 'Organization/st-mary', purpose_of_use: 'TREAT' },
  },
  'assent-es256': {
    secret: 'secret-es256',
    alg: 'ES256',
    claims: {
      fhirUser: 'Practitioner/dr-bob',
      organization: 'Organization/st-mary',
      patient: 'pat-123',
      purpose_of_use: 'ETREAT',
    },
  },
  'assent-backend': {
    secret: 'secret-backend',
    alg: 'RS256',
    claims: { purpose_of_use: 'HOPERAT' },
  },
};

function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: 'rsa-1', alg: 'RS256', use: 'sig' },
    { ...ec, kid: 'ec-1', alg: 'ES256', use: 'sig' },
  ];
}

const server = http.createServer();
server.listen(requestedPort, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: Object.entries(CLIENTS).map(([clientId, c]) => ({
      client_id: clientId,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: signingKeys() },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator, client) => {
          if (!resourceIndicator.startsWith(RESOURCE_PREFIX)) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: SMART_SCOPES,
            audience: resourceIndicator,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: CLIENTS[client.clientId]?.alg ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => CLIENTS[token.clientId]?.claims,
  });
  provider.on('server_error', (_ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));
  server.on('request', provider.callback());

  process.stdout.write(`${issuer}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
