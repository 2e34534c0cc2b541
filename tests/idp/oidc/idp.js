// A real OpenID Connect provider (npm `oidc-provider`) for keyledger's SSO tests. Loopback only.
//
//   node idp.js [--port N] [--client JSON]...
//
// Listens on 127.0.0.1 (port 0 = any free port) and prints one JSON line on stdout once ready:
//   {"issuer":"http://127.0.0.1:PORT"}
// Each --client is a JSON client registration (client_id, client_secret, redirect_uris, ...).
// Its login page (GET /interaction/:uid) is a plain HTML form: `email` and `password`; the password
// must equal IDP_PASSWORD (default "idp-password"). The account id is the email; claims: sub, email,
// email_verified (true unless the email starts with "unverified"), given_name, family_name, name.
// Consent is granted with the login. SIGTERM stops it.
import http from 'node:http';
import { URLSearchParams } from 'node:url';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const args = process.argv.slice(2);
let port = 0;
const clients = [];
for (let i = 0; i < args.length; i += 1) {
  if (args[i] === '--port') port = Number(args[++i]);
  else if (args[i] === '--client') clients.push(JSON.parse(args[++i]));
  else throw new Error(`unknown argument ${args[i]}`);
}
const password = process.env.IDP_PASSWORD || 'idp-password';

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'test-idp-1' };

function names(email) {
  const local = email.split('@')[0] || 'user';
  const [first, last] = local.split(/[._-]/);
  const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : undefined);
  return { given_name: cap(first), family_name: cap(last) };
}

let provider;
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
    return;
  }
  provider.callback()(req, res);
});

await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

provider = new Provider(issuer, {
  clients,
  // ID tokens carry the email/profile claims (the RP may still call userinfo).
  conformIdTokenClaims: false,
  jwks: { keys: [jwk] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  scopes: ['openid', 'email', 'profile'],
  claims: { email: ['email', 'email_verified'], profile: ['given_name', 'family_name', 'name'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const n = names(id);
        return {
          sub: id,
          email: id,
          email_verified: !id.startsWith('unverified'),
          ...n,
          name: [n.given_name, n.family_name].filter(Boolean).join(' '),
        };
      },
    };
  },
  cookies: { keys: ['keyledger-test-idp-cookie-key'] },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
});
provider.proxy = false;

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, params } = details;
  if (req.method === 'GET') {
    const hint = params.login_hint ? escape(params.login_hint) : '';
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(`<!doctype html><html lang="en"><head><title>Test IdP sign-in</title></head><body>
<h1>Test IdP</h1>
<form method="post" action="/interaction/${uid}/login">
<label for="email">Email</label><input id="email" name="email" type="email" value="${hint}" required>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form></body></html>`);
    return;
  }
  const form = await readForm(req);
  const email = (form.get('email') || '').trim();
  if (!email || form.get('password') !== password) {
    res.statusCode = 401;
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end('<!doctype html><html lang="en"><body><p role="alert">Wrong email or password</p></body></html>');
    return;
  }
  const grant = new provider.Grant({ accountId: email, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope || 'openid'));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: email }, consent: { grantId } }, { mergeWithLastSubmission: false });
}

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
