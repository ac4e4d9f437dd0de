// The pages around a meeting: they load, their controls carry the accessible
// names issue 5 lists, and the forms talk to the real services.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PASSWORD, launchBrowser, newPerson, screenshot, signUp, startPlatform, uniqueEmail } from './harness.mjs';

describe('pages', () => {
  let platform;
  let browser;

  before(async () => {
    platform = await startPlatform();
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (platform) await platform.stop();
  });

  test('the home page invites a visitor to sign up, sign in or open a link', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await page.goto('/');
    await page.getByRole('heading', { name: 'Meetings that work in any browser' }).waitFor();
    await page.getByRole('link', { name: 'Sign up', exact: true }).waitFor();
    const providers = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/oauth/providers'));
    await page.getByRole('link', { name: 'Sign in', exact: true }).click();
    await page.waitForURL('**/signin');
    await page.getByLabel('Email', { exact: true }).waitFor();
    await page.getByLabel('Password', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    // This launcher has no OpenID provider: no "Continue with …" (e2e/oauth.test.mjs has one).
    assert.deepEqual(await (await providers).json(), { providers: [] });
    assert.equal(await page.getByRole('link', { name: /^Continue with/ }).count(), 0);
    assert.equal(await page.getByRole('group', { name: 'Other ways to sign in' }).isVisible(), false);
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('a meeting link opens the lobby with a camera preview, device pickers and Join', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await page.goto('/m/abc-defg-hij');
    await page.getByLabel('Your name', { exact: true }).fill('Guest Person');
    await page.getByLabel('Choose camera').waitFor();
    await page.getByLabel('Choose microphone').waitFor();
    const preview = page.getByLabel('Your camera preview');
    // The fake camera plays in the preview.
    await page.waitForFunction(() => {
      const v = document.querySelector('video.preview-video');
      return v && v.videoWidth > 0 && v.currentTime > 0;
    });
    assert.ok(await preview.isVisible());
    // Camera off shows initials instead; on again brings the video back.
    await page.getByRole('button', { name: 'Camera', exact: true }).click();
    assert.equal(await preview.isVisible(), false);
    await page.getByRole('button', { name: 'Camera', exact: true }).click();
    await page.waitForFunction(() => document.querySelector('video.preview-video').videoWidth > 0);
    // Mute toggles to Unmute and back, by keyboard.
    await page.getByRole('button', { name: 'Mute', exact: true }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Unmute', exact: true }).waitFor();
    await page.keyboard.press('Space');
    await page.getByRole('button', { name: 'Mute', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Join', exact: true }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('someone signs up, lands on their meetings, signs out and signs back in', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    const email = uniqueEmail('ada');
    await signUp(page, { name: 'Ada Lovelace', email });
    await page.getByRole('button', { name: 'Schedule', exact: true }).waitFor();
    await page.getByText('Ada Lovelace').first().waitFor();
    await screenshot(page, 'home');
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Password', { exact: true }).fill('not the password');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong email or password' }).waitFor();
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('button', { name: 'New meeting', exact: true }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('a forgotten password can be reset by email from the sign-in page', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await page.goto('/signin');
    await page.getByRole('link', { name: 'Forgot your password?' }).click();
    await page.getByLabel('Email', { exact: true }).fill(uniqueEmail('forgetful'));
    await page.getByRole('button', { name: 'Send reset link', exact: true }).click();
    await page.getByRole('status').filter({ hasText: 'reset link is on its way' }).waitFor();
    // A stale link says what to do.
    await page.goto('/reset?token=not-a-real-token');
    await page.getByLabel('New password', { exact: true }).fill('a brand new passphrase');
    await page.getByRole('button', { name: 'Set password', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'expired or was already used' }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('signing up twice with one email says so', async () => {
    const { page, context } = await newPerson(browser, platform.url);
    const email = uniqueEmail('twice');
    await signUp(page, { name: 'First', email });
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.goto('/signup');
    await page.getByLabel('Name', { exact: true }).fill('Second');
    await page.getByLabel('Email', { exact: true }).fill(email);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign up', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'already exists' }).waitFor();
    await context.close();
  });

  test('a meeting can be scheduled with invitees and its link copied', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await context.grantPermissions(['clipboard-read', 'clipboard-write']);
    await signUp(page, { name: 'Grace Hopper', email: uniqueEmail('grace') });
    await page.getByRole('button', { name: 'Schedule', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Schedule a meeting' });
    await dialog.getByLabel('Title').fill('Design review');
    await dialog.getByLabel('Invitees').fill('ada@example.test, alan@example.test');
    await dialog.getByRole('button', { name: 'Schedule meeting', exact: true }).click();
    await dialog.waitFor({ state: 'hidden' });
    const item = page.getByRole('listitem').filter({ hasText: 'Design review' });
    await item.waitFor();
    await item.getByRole('button', { name: 'Copy link to Design review' }).click();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert.match(copied, /\/m\/[^/]+$/);
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });
});
