// auth0's express-openid-connect as the RP under test of tests/interop.
// Usage: node rp.mjs PORT ISSUER [RESPONSE_TYPE]
// The library's defaults (response_type id_token with response_mode form_post, unless
// RESPONSE_TYPE is given: "code" runs the authorization-code flow with PKCE and
// client_secret_basic), with back-channel logout switched on. The settings that are not
// defaults: `backchannelLogout` (opt-in) with the store it requires (the library's docs
// suggest an express-session store; a Map is the same contract: get/set/destroy), and
// `/profile` as the protected URL (`authRequired: false`, `requiresAuth()` on that route).
// An http issuer on loopback needs nothing: the library enables openid-client's
// allowInsecureRequests for http issuers itself. Prints "READY <base URL>" once listening.
import express from 'express';
import eoc from 'express-openid-connect';

const { auth, requiresAuth } = eoc;
const port = Number(process.argv[2] || 0);
const issuer = process.argv[3];
const responseType = process.argv[4];
const baseURL = `http://127.0.0.1:${port}`;

// The logout-marker store backchannelLogout requires: express-session's Store contract.
class MapStore {
  constructor() { this.items = new Map(); }
  get(key, cb) { cb(null, this.items.get(key)); }
  set(key, value, cb) { this.items.set(key, value); cb(null); }
  destroy(key, cb) { this.items.delete(key); cb(null); }
}

const config = {
  issuerBaseURL: issuer,
  baseURL,
  clientID: 'express-rp',
  secret: 'interop-test-only-session-secret',
  authRequired: false,
  enableTelemetry: false,
  backchannelLogout: { store: new MapStore() },
};
if (responseType) {
  config.authorizationParams = { response_type: responseType, scope: 'openid' };
  config.clientSecret = 'express-rp-secret';
}

const app = express();
app.use(auth(config));
app.get('/profile', requiresAuth(), (req, res) => {
  res.json({ sub: req.oidc.user.sub, sid: req.oidc.idTokenClaims.sid });
});
app.use((err, req, res, next) => {
  console.error('error', req.method, req.path, err.message);
  res.status(err.status || 500).send(err.message);
});
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`READY ${baseURL}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
