// node oidc-provider (panva, OpenID Certified) as the OP under test of tests/interop.
// Usage: node op.mjs PORT
// The library's defaults for every feature the conformance runner exercises, with its
// development interactions (login page, then consent page) and dynamic registration on.
// One change that is not a default: `fetch` drops the library's SSRF guard, which refuses
// special-use addresses such as 127.0.0.1 - the runner's back-channel receivers are loopback
// only, and so is everything in these tests. Prints "READY <issuer>" once listening.
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Core §11: refresh tokens for offline_access, issued after consent (the default
  // issueRefreshToken).
  scopes: ['openid', 'offline_access'],
  cookies: { keys: ['interop-test-only-cookie-key'] },
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options; // loopback receivers: see above
    return globalThis.fetch(url, rest);
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err, client) => console.error('backchannel.error', client.clientId, err.message));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
