// Sign-in with an OpenID provider, in a real browser: a launcher of its own
// configured with the real provider of auth's tests (auth/tests/oidc, the npm
// package oidc-provider), so the other files' launchers keep offering none.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  freePort, launchBrowser, newPerson, screenshot, startOidcProvider, startPlatform, uniqueEmail,
} from './harness.mjs';

describe('sign-in with an OpenID provider', () => {
  let provider;
  let platform;
  let browser;
  let base;

  before(async () => {
    // The provider must know the callback URL, and auth the provider's issuer,
    // before either starts: the gateway's port is chosen first.
    const gatewayPort = await freePort();
    base = `http://127.0.0.1:${gatewayPort}`;
    provider = await startOidcProvider([`${base}/api/v1/auth/oauth/local/callback`]);
    platform = await startPlatform({
      gatewayPort,
      env: {
        AUTH_OIDC_PROVIDERS: JSON.stringify([{
          name: 'local', issuer: provider.issuer, client_id: 'meetease', client_secret: 'meetease-test-secret',
        }]),
        MEETEASE_PUBLIC_URL: base,
        AUTH_OAUTH_RETURN_URL: `${base}/`,
      },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (platform) await platform.stop();
    if (provider) await provider.stop();
  });

  /** At the provider's interaction page: sign in as `email`, or refuse. */
  async function atProvider(page, { email, deny = false }) {
    await page.waitForURL((url) => url.href.startsWith(provider.issuer) && url.pathname.startsWith('/interaction/'));
    const interaction = page.url().split('?')[0];
    await page.goto(deny ? `${interaction}?deny=1` : `${interaction}?account=${encodeURIComponent(email)}`);
  }

  test('someone continues with the provider and lands signed in, the code gone from the URL', async () => {
    const { page, context, errors } = await newPerson(browser, base);
    const email = uniqueEmail('grace');
    // Offered on the sign-up page too.
    await page.goto('/signup');
    await page.getByRole('link', { name: 'Continue with Local', exact: true }).waitFor();
    await page.goto('/signin');
    const button = page.getByRole('link', { name: 'Continue with Local', exact: true });
    await screenshot(page, 'signin-providers');
    await button.click();
    await atProvider(page, { email });
    // Back at MeetEase: the one-time code is exchanged, the session stored.
    await page.getByRole('button', { name: 'New meeting', exact: true }).waitFor();
    const name = `Test ${email.split('@')[0]}`;
    await page.getByRole('link', { name, exact: true }).waitFor();
    const url = new URL(page.url());
    assert.equal(url.origin, base);
    assert.equal(url.pathname, '/');
    assert.equal(url.hash, '', 'the one-time code is removed from the URL');
    const session = await page.evaluate(() => JSON.parse(localStorage.getItem('meetease.session')));
    assert.ok(session.access_token && session.refresh_token, 'tokens stored like a password sign-in');
    assert.equal(session.user.email, email);
    // The session works for the API, and survives a reload.
    await page.reload();
    await page.getByRole('button', { name: 'New meeting', exact: true }).waitFor();
    await page.getByRole('link', { name, exact: true }).click();
    await page.getByText(`Signed in as ${email}.`, { exact: false }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('a sign-in that started from a link returns to that page', async () => {
    const { page, context, errors } = await newPerson(browser, base);
    await page.goto('/signin?next=%2Fprofile');
    await page.getByRole('link', { name: 'Continue with Local', exact: true }).click();
    await atProvider(page, { email: uniqueEmail('linus') });
    await page.waitForURL(`${base}/profile`);
    await page.getByRole('heading', { name: 'About you' }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('a refusal at the provider comes back as a readable message on the sign-in page', async () => {
    const { page, context } = await newPerson(browser, base);
    await page.goto('/signin');
    await page.getByRole('link', { name: 'Continue with Local', exact: true }).click();
    await atProvider(page, { deny: true });
    await page.getByRole('alert').filter({ hasText: 'The sign-in provider did not sign you in' }).waitFor();
    const url = new URL(page.url());
    assert.equal(url.pathname, '/signin');
    assert.equal(url.hash, '');
    assert.equal(await page.evaluate(() => localStorage.getItem('meetease.session')), null);
    // The page still works: the provider is offered again.
    await page.getByRole('link', { name: 'Continue with Local', exact: true }).waitFor();
    await context.close();
  });

  test('a used or forged code is refused with a message, not a sign-in', async () => {
    const { page, context } = await newPerson(browser, base);
    await page.goto('/#oauth_code=not-a-real-code');
    await page.getByRole('alert').filter({ hasText: 'That sign-in expired before it finished' }).waitFor();
    assert.equal(new URL(page.url()).hash, '');
    assert.equal(await page.evaluate(() => localStorage.getItem('meetease.session')), null);
    await context.close();
  });
});
