// node-oidc-provider (panva, OpenID Certified) as the anchor OP of bench/against_node.py.
// Usage: NODE_ENV=production node op.mjs PORT CLIENTS.json
//
// Configured like the demo OP of oidc-logout for the comparison:
// * the same registered clients (read from CLIENTS.json, the metadata the driver also loads
//   into oidc-logout): RPs with a backchannel_logout_uri, a client_credentials client (revocation)
//   and a resource server that introspects;
// * back-channel logout, RP-initiated logout, client_credentials, revocation, introspection on;
// * login through the library's devInteractions form (any login/password is accepted);
// * provisioned clients are first-party: no consent page (the library's documented
//   loadExistingGrant recipe), as oidc-logout skips consent for clients its operator provisioned;
// * the logout confirmation page submits itself with logout=yes (it stands for the End-User's
//   click on "Yes, sign me out": oidc-provider always asks, oidc-logout does not ask when the
//   id_token_hint is valid);
// * `fetch` without the library's SSRF guard, which refuses special-use addresses such as
//   127.0.0.1: the benchmark's RP receivers are loopback only (the 2.5 s timeout the library
//   sets on every outgoing request is kept).
// Storage: the library's default in-memory adapter (the fastest it has; state lives in this one
// process, so one process: a cluster of node processes would need a shared adapter such as Redis).
// Prints "READY <issuer>" once listening.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const clients = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const issuer = `http://127.0.0.1:${port}`;
const firstParty = new Set(clients.map((c) => c.client_id));

const provider = new Provider(issuer, {
  clients,
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><title>Logout</title></head><body>${form}
<script>var f=document.getElementById('op.logoutForm');var i=document.createElement('input');
i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();</script></body></html>`;
      },
    },
  },
  scopes: ['openid', 'offline_access', 'read'],
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    if (firstParty.has(ctx.oidc.client.clientId)) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid');
      await grant.save();
      return grant;
    }
    return undefined;
  },
  cookies: { keys: ['bench-only-cookie-key-' + 'k'.repeat(20)] },
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options; // loopback receivers: see above
    return globalThis.fetch(url, rest);
  },
});
let backchannelErrors = 0;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', () => { backchannelErrors += 1; });
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => {
  console.log(`backchannel errors: ${backchannelErrors}`);
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
});
