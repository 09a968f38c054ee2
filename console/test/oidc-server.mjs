// Loopback OpenID Provider for end-to-end tests (oidc-provider 8.x, Node >= 18).
//
// Usage:
//   node oidc-server.mjs [--port N] [--redirect-uri URI ...] [--audience S] [--tenant S] [--alg RS256|ES256]
// Env fallbacks: OIDC_PORT / PORT, OIDC_REDIRECT_URIS (comma/space separated),
//   OIDC_AUDIENCE, OIDC_TENANT, OIDC_ALG.  --port 0 picks a free port.
// Prints exactly one line "issuer http://127.0.0.1:PORT" on stdout once listening.
//
// Client:  client_id=fogshell, public (token_endpoint_auth_method=none), PKCE S256 required.
// User:    login form (devInteractions): any login + any non-empty password; sub = the login,
//          so typing "alice" yields sub "alice".
//          Consent is auto-granted (loadExistingGrant), so only the login page is shown.
// Tokens:  access token = JWT (typ at+jwt), aud=<audience>, scope=<granted fogshell scopes>,
//          tenant=<tenant>, signed with a per-run asymmetric key published at /jwks.

import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its "NOTICE:" lines with console.info (stdout); keep stdout for the issuer line.
console.info = (...a) => console.error(...a);

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    audience: { type: 'string' },
    tenant: { type: 'string' },
    alg: { type: 'string' },
  },
  allowPositionals: true,
});

const env = process.env;
const PORT = Number(args.port ?? env.OIDC_PORT ?? env.PORT ?? 0);
const REDIRECT_URIS = args['redirect-uri']
  ?? (env.OIDC_REDIRECT_URIS ?? 'http://127.0.0.1:8080/console/').split(/[\s,]+/).filter(Boolean);
const AUDIENCE = args.audience ?? env.OIDC_AUDIENCE ?? 'urn:fogshell';
const TENANT = args.tenant ?? env.OIDC_TENANT ?? 'org-test';
const ALG = (args.alg ?? env.OIDC_ALG ?? 'ES256').toUpperCase();
const SCOPES = 'fogshell.sessions fogshell.admin fogshell.audit';
// Origins allowed to call /token, /userinfo, /token/revocation etc. from browser JS.
const CORS_ORIGINS = new Set(REDIRECT_URIS.map((u) => new URL(u).origin));

function signingJwk(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `fogshell-test-${alg.toLowerCase()}` };
}

// Listen first so that --port 0 works; the issuer needs the real port.
const server = http.createServer();
await new Promise((resolve) => server.listen(PORT, '127.0.0.1', resolve));
const ISSUER = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: 'fogshell',
    token_endpoint_auth_method: 'none',
    application_type: 'web',
    redirect_uris: REDIRECT_URIS,
    post_logout_redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: ALG, // only matters if "openid" is requested
  }],
  jwks: { keys: [signingJwk(ALG)] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  pkce: { required: () => true, methods: ['S256'] },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, RefreshToken: 86400,
    Interaction: 3600, Session: 86400, Grant: 86400,
  },

  // devInteractions puts whatever was typed in the "login" field into the session as accountId.
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },

  // Auto-consent: always hand back a grant covering everything the client may ask for.
  async loadExistingGrant(ctx) {
    const { client, session, provider: p } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    const grant = (grantId && await p.Grant.find(grantId))
      || new p.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid offline_access');
    grant.addResourceScope(AUDIENCE, SCOPES);
    await grant.save();
    return grant;
  },

  // Always issue a refresh token (no need for offline_access + prompt=consent).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),

  clientBasedCORS: (ctx, origin, client) => CORS_ORIGINS.has(origin),

  extraTokenClaims: async (ctx, token) => ({ tenant: TENANT }),

  features: {
    devInteractions: { enabled: true }, // built-in login/consent HTML pages
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : AUDIENCE),
      useGrantedResource: async () => true, // no `resource` needed at /token, even with openid
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== AUDIENCE) throw new errors.InvalidTarget();
        return {
          scope: SCOPES,
          audience: AUDIENCE,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: ALG } },
        };
      },
    },
  },
});

provider.on('server_error', (ctx, err) => console.error('oidc server_error:', err));
server.on('request', provider.callback());
console.log(`issuer ${ISSUER}`);

const stop = () => process.exit(0);
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
