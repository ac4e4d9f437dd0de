// A real OpenID provider (the `oidc-provider` package) for auth's sign-in tests.
//
//   REDIRECT_URIS='["http://127.0.0.1:1234/api/v1/auth/oauth/local/callback"]' node provider.mjs
//
// Listens on an ephemeral 127.0.0.1 port and prints one JSON line on stdout:
// {"issuer": "http://127.0.0.1:<port>"}. The test kills it by pid when done.
//
// One confidential client: `meetease` / `meetease-test-secret` (client_secret_basic),
// code flow only, PKCE (S256) required. Interactions have no pages: the test visits
// the interaction URL it is sent to, adding
//   ?account=<id>   to sign in as <id> (consent is then granted automatically), or
//   ?deny=1         to refuse (the client gets error=access_denied).
// Account ids say what the provider will assert about the person:
//   ada@example.com              email ada@example.com, email_verified true
//   unverified:bob@example.com   email bob@example.com, email_verified false
//   noemail:carol                no email at all
// Claims go out through the userinfo endpoint (oidc-provider's default keeps them
// out of the ID token in the code flow), so the client's userinfo path is exercised.
import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUris = JSON.parse(process.env.REDIRECT_URIS ?? '[]');
if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
  console.error('provider.mjs: set REDIRECT_URIS to a JSON array of redirect URIs');
  process.exit(2);
}

function claimsFor(accountId) {
  const [kind, rest] = accountId.includes(':') ? accountId.split(/:(.*)/s) : ['verified', accountId];
  const name = `Test ${rest.split('@')[0]}`;
  switch (kind) {
    case 'verified':
      return { sub: accountId, email: rest, email_verified: true, name };
    case 'unverified':
      return { sub: accountId, email: rest, email_verified: false, name };
    case 'noemail':
      return { sub: accountId, name };
    default:
      return { sub: accountId };
  }
}

const configuration = {
  clients: [
    {
      client_id: 'meetease',
      client_secret: 'meetease-test-secret',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return claimsFor(sub);
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  cookies: { keys: ['meetease-test-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 3600, IdToken: 3600 },
};

async function interaction(provider, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  if (url.searchParams.get('deny') === '1') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'the person said no',
    }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    const accountId = url.searchParams.get('account');
    if (!accountId) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      return res.end('add ?account=<id> to sign in');
    }
    return provider.interactionFinished(req, res, { login: { accountId } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (details.prompt.name === 'consent') {
    const { missingOIDCScope, missingOIDCClaims } = details.prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
  }
  res.writeHead(400, { 'content-type': 'text/plain' });
  res.end(`unexpected prompt ${details.prompt.name}`);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  const handle = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(url.pathname)) {
      interaction(provider, req, res, url).catch((err) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err));
      });
      return;
    }
    handle(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The test ends us with SIGTERM (or SIGKILL); leave quietly either way.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
