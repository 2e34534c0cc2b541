// A real SAML 2.0 identity provider (npm `samlify`) for keyledger's SSO tests. Loopback only.
//
//   node idp.js [--port N]
//
// Listens on 127.0.0.1 (port 0 = any free port) and prints one JSON line on stdout once ready:
//   {"entity_id","sso_url","metadata_url","certificate"}   (certificate: PEM of its signing key)
// It serves any service provider: the AuthnRequest (HTTP-Redirect binding, GET /sso) names the SP's
// entity id (Issuer, used as the Audience) and its ACS URL (AssertionConsumerServiceURL).
// GET /sso shows a login form (email, password = IDP_PASSWORD, default "idp-password"); its POST
// answers with an HTML form that posts the signed SAMLResponse (assertion signed, RSA-SHA256) and the
// RelayState to the ACS (a script submits it; without JavaScript, press the button).
// For attack tests the login POST takes `variant`:
//   normal | unsigned | resigned (signed by another key) | tampered (NameID changed after signing) |
//   expired | not_yet_valid | wrong_audience | wrong_recipient | wrapped (an unsigned evil assertion
//   inserted before the signed one) | wrong_issuer
// GET /idp-initiated?acs=...&audience=...&email=... answers an unsolicited response (no InResponseTo).
// The attacker's certificate is printed too (`attacker_certificate`), so tests can show it is refused.
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import * as samlify from 'samlify';

const args = process.argv.slice(2);
let port = 0;
for (let i = 0; i < args.length; i += 1) {
  if (args[i] === '--port') port = Number(args[++i]);
  else throw new Error(`unknown argument ${args[i]}`);
}
const password = process.env.IDP_PASSWORD || 'idp-password';

// The IdP's own schema checks are not under test: keyledger validates what it receives.
samlify.setSchemaValidator({ validate: async () => 'skipped' });

function keyPair(cn) {
  const dir = mkdtempSync(join(tmpdir(), 'kl-saml-idp-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', `/CN=${cn}`, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const own = keyPair('keyledger-test-idp');
const attacker = keyPair('attacker');

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    res.statusCode = 500;
    res.setHeader('content-type', 'text/plain');
    res.end(String(err && err.stack ? err.stack : err));
  });
});
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const entityId = `${base}/metadata`;
const ssoUrl = `${base}/sso`;

function idpEntity(pair) {
  return samlify.IdentityProvider({
    entityID: entityId,
    privateKey: pair.key,
    signingCert: pair.cert,
    requestSignatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    nameIDFormat: ['urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'],
    singleSignOnService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', Location: ssoUrl }],
  });
}
const idp = idpEntity(own);
const evilIdp = idpEntity(attacker);

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function names(email) {
  const local = email.split('@')[0] || 'user';
  const [first, last] = local.split(/[._-]/);
  const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : '');
  return { first: cap(first), last: cap(last) };
}

function parseAuthnRequest(encoded) {
  const xml = inflateRawSync(Buffer.from(encoded, 'base64')).toString('utf8');
  const attr = (name) => (xml.match(new RegExp(`\\s${name}="([^"]*)"`)) || [])[1];
  const issuer = (xml.match(/<(?:\w+:)?Issuer[^>]*>([^<]*)<\/(?:\w+:)?Issuer>/) || [])[1];
  return { id: attr('ID'), acs: attr('AssertionConsumerServiceURL'), issuer };
}

function responseXml({ acs, audience, inResponseTo, email, variant }) {
  const now = new Date();
  const shift = (minutes) => new Date(now.getTime() + minutes * 60000).toISOString();
  let notBefore = shift(-1);
  let notOnOrAfter = shift(5);
  if (variant === 'expired') { notBefore = shift(-30); notOnOrAfter = shift(-20); }
  if (variant === 'not_yet_valid') { notBefore = shift(20); notOnOrAfter = shift(30); }
  const recipient = variant === 'wrong_recipient' ? 'http://127.0.0.1:9/elsewhere' : acs;
  const aud = variant === 'wrong_audience' ? 'urn:example:another-sp' : audience;
  const issuer = variant === 'wrong_issuer' ? 'urn:example:another-idp' : entityId;
  const { first, last } = names(email);
  const irt = inResponseTo ? ` InResponseTo="${escape(inResponseTo)}"` : '';
  const id = `_${randomUUID()}`;
  const assertionId = `_${randomUUID()}`;
  const attribute = (name, value) =>
    `<saml:Attribute Name="${name}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">${escape(value)}</saml:AttributeValue></saml:Attribute>`;
  const context = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${now.toISOString()}" Destination="${escape(recipient)}"${irt}><saml:Issuer>${escape(issuer)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="${assertionId}" Version="2.0" IssueInstant="${now.toISOString()}"><saml:Issuer>${escape(issuer)}</saml:Issuer><saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${escape(email)}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${notOnOrAfter}" Recipient="${escape(recipient)}"${irt}/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="${notBefore}" NotOnOrAfter="${notOnOrAfter}"><saml:AudienceRestriction><saml:Audience>${escape(aud)}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="${now.toISOString()}" SessionIndex="${assertionId}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement>${attribute('email', email)}${attribute('firstName', first)}${attribute('lastName', last)}${attribute('id', email)}</saml:AttributeStatement></saml:Assertion></samlp:Response>`;
  return { id, context };
}

async function signedResponse(params) {
  const { acs, audience, variant } = params;
  const sp = samlify.ServiceProvider({
    entityID: audience,
    wantAssertionsSigned: true,
    assertionConsumerService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', Location: acs }],
  });
  const signer = variant === 'resigned' ? evilIdp : idp;
  const { context } = await signer.createLoginResponse(sp, {}, 'post', { email: params.email }, {
    customTagReplacement: () => responseXml(params),
  });
  let xml = Buffer.from(context, 'base64').toString('utf8');
  if (variant === 'unsigned') {
    xml = xml.replace(/<ds:Signature[\s\S]*<\/ds:Signature>/, '');
  } else if (variant === 'tampered') {
    xml = xml.replace(/(<saml:NameID[^>]*>)[^<]*/, '$1mallory@evil.example');
  } else if (variant === 'wrapped') {
    const signed = xml.match(/<saml:Assertion[\s\S]*<\/saml:Assertion>/)[0];
    const evil = signed
      .replace(/<ds:Signature[\s\S]*<\/ds:Signature>/, '')
      .replace(/ ID="[^"]*"/, ` ID="_${randomUUID()}"`)
      .replaceAll(escape(params.email), 'mallory@evil.example');
    xml = xml.replace(signed, evil + signed);
  }
  return Buffer.from(xml, 'utf8').toString('base64');
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 1e6) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function html(res, status, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test SAML IdP</title></head><body>${body}</body></html>`);
}

function postToAcs(res, acs, samlResponse, relayState) {
  const relay = relayState ? `<input type="hidden" name="RelayState" value="${escape(relayState)}">` : '';
  html(res, 200, `<form id="acs" method="post" action="${escape(acs)}">
<input type="hidden" name="SAMLResponse" value="${escape(samlResponse)}">${relay}
<button type="submit">Continue</button></form>
<script>document.getElementById('acs').submit()</script>`);
}

async function handle(req, res) {
  const url = new URL(req.url, base);
  if (req.method === 'GET' && url.pathname === '/metadata') {
    res.setHeader('content-type', 'application/xml');
    res.end(idp.getMetadata());
    return;
  }
  if (req.method === 'GET' && url.pathname === '/sso') {
    const request = parseAuthnRequest(url.searchParams.get('SAMLRequest') || '');
    if (!request.acs || !request.issuer) return html(res, 400, '<p role="alert">AuthnRequest without ACS URL or Issuer</p>');
    const hidden = (n, v) => `<input type="hidden" name="${n}" value="${escape(v)}">`;
    return html(res, 200, `<h1>Test SAML IdP</h1><form method="post" action="/sso/login">
${hidden('request_id', request.id)}${hidden('acs', request.acs)}${hidden('audience', request.issuer)}${hidden('relay_state', url.searchParams.get('RelayState') || '')}${hidden('variant', 'normal')}
<label for="email">Email</label><input id="email" name="email" type="email" required>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit">Sign in</button></form>`);
  }
  if (req.method === 'POST' && url.pathname === '/sso/login') {
    const form = await readForm(req);
    if (form.get('password') !== password) return html(res, 401, '<p role="alert">Wrong email or password</p>');
    const samlResponse = await signedResponse({
      acs: form.get('acs'), audience: form.get('audience'), inResponseTo: form.get('request_id'),
      email: (form.get('email') || '').trim(), variant: form.get('variant') || 'normal',
    });
    return postToAcs(res, form.get('acs'), samlResponse, form.get('relay_state'));
  }
  if (req.method === 'GET' && url.pathname === '/idp-initiated') {
    const samlResponse = await signedResponse({
      acs: url.searchParams.get('acs'), audience: url.searchParams.get('audience'), inResponseTo: null,
      email: url.searchParams.get('email') || 'jane.doe@example.com', variant: url.searchParams.get('variant') || 'normal',
    });
    return postToAcs(res, url.searchParams.get('acs'), samlResponse, url.searchParams.get('RelayState'));
  }
  html(res, 404, '<p>not found</p>');
}

process.stdout.write(`${JSON.stringify({ entity_id: entityId, sso_url: ssoUrl, metadata_url: `${base}/metadata`, certificate: own.cert, attacker_certificate: attacker.cert })}\n`);
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
