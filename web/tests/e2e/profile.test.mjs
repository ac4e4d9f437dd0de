// The profile page against the real users service: details and preferences are
// saved and read back, a photo is uploaded and removed, a file that is not a
// picture is refused with a sentence a person can act on.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, newPerson, signUp, startPlatform, uniqueEmail } from './harness.mjs';

/** A PNG drawn by the page itself (no fixture files). */
async function pngFromPage(page, width, height) {
  const dataUrl = await page.evaluate(([w, h]) => {
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#e91e63';
    ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = '#ffeb3b';
    ctx.fillRect(w / 4, h / 4, w / 2, h / 2);
    return canvas.toDataURL('image/png');
  }, [width, height]);
  return Buffer.from(dataUrl.split(',')[1], 'base64');
}

// The mock platform (E2E_MOCK=1) has no users service.
const skip = process.env.E2E_MOCK === '1' ? 'the mock platform has no users service' : false;

describe('profile', { skip }, () => {
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

  test('someone edits their profile and preferences, and they are kept', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await signUp(page, { name: 'Ada Lovelace', email: uniqueEmail('profile') });
    await page.getByRole('link', { name: 'Ada Lovelace' }).click();
    await page.waitForURL('**/profile');
    await page.getByRole('heading', { name: 'Profile', exact: true }).waitFor();
    await page.getByLabel('Display name').fill('Countess Ada');
    await page.getByLabel('Time zone').selectOption('Europe/Paris');
    await page.getByLabel('Language').fill('fr');
    await page.getByLabel('Bio').fill("Analyst'); DROP TABLE profiles; --");
    await page.getByLabel('Join with my camera off').check();
    await page.getByLabel('Push notifications').uncheck();
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByText('Profile saved.').waitFor();
    // The top bar follows the new name.
    await page.getByRole('link', { name: 'Countess Ada' }).waitFor();

    await page.reload();
    await page.getByLabel('Display name').waitFor();
    assert.equal(await page.getByLabel('Display name').inputValue(), 'Countess Ada');
    assert.equal(await page.getByLabel('Time zone').inputValue(), 'Europe/Paris');
    assert.equal(await page.getByLabel('Language').inputValue(), 'fr');
    assert.equal(await page.getByLabel('Bio').inputValue(), "Analyst'); DROP TABLE profiles; --");
    assert.equal(await page.getByLabel('Join with my camera off').isChecked(), true);
    assert.equal(await page.getByLabel('Join with my microphone off').isChecked(), false);
    assert.equal(await page.getByLabel('Push notifications').isChecked(), false);
    assert.equal(await page.getByLabel('Email', { exact: true }).isChecked(), true);

    // A language tag the service refuses is shown next to the form.
    await page.getByLabel('Language').fill('not a language');
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByRole('alert').filter({ hasText: 'locale' }).waitFor();
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });

  test('the lobby starts muted and without camera when the profile says so', async () => {
    const { page, context } = await newPerson(browser, platform.url);
    await signUp(page, { name: 'Quiet Person', email: uniqueEmail('quiet') });
    await page.goto('/profile');
    await page.getByLabel('Join with my microphone off').check();
    await page.getByLabel('Join with my camera off').check();
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByText('Profile saved.').waitFor();
    await page.goto('/');
    await page.getByRole('button', { name: 'New meeting' }).click();
    await page.waitForURL('**/m/**');
    // Nothing was toggled on this device, so the account's choices apply.
    await page.getByRole('button', { name: 'Unmute' }).waitFor();
    const camera = page.getByRole('button', { name: 'Camera' });
    await page.waitForFunction(() => document.querySelector('[aria-pressed]') !== null);
    assert.equal(await camera.getAttribute('aria-pressed'), 'false');
    await context.close();
  });

  test('someone uploads a photo, sees it, and removes it; a file that is not a picture is refused', async () => {
    const { page, context, errors } = await newPerson(browser, platform.url);
    await signUp(page, { name: 'Grace Hopper', email: uniqueEmail('photo') });
    await page.goto('/profile');
    const photo = page.getByRole('img', { name: 'Your profile photo' });
    await photo.waitFor();
    // The generated initials first (an SVG, drawn at 256 px).
    await page.waitForFunction(() => {
      const img = document.querySelector('img.avatar-img');
      return img && img.complete && img.naturalWidth === 256;
    });
    const before = await photo.getAttribute('src');

    await page.getByLabel('Upload a photo').setInputFiles({
      name: 'me.png', mimeType: 'image/png', buffer: await pngFromPage(page, 640, 480),
    });
    await page.getByText('Photo updated.').waitFor();
    await page.getByRole('button', { name: 'Remove photo' }).waitFor();
    await page.waitForFunction((old) => {
      const img = document.querySelector('img.avatar-img');
      return img && img.src !== old && img.complete && img.naturalWidth === 256 && img.naturalHeight === 256;
    }, before);

    await page.getByLabel('Upload a photo').setInputFiles({
      name: 'holiday.png', mimeType: 'image/png', buffer: Buffer.from('this is not a picture at all'),
    });
    await page.getByRole('alert').filter({ hasText: 'not a PNG, JPEG or WebP' }).waitFor();

    await page.getByRole('button', { name: 'Remove photo' }).click();
    await page.getByText('Photo removed.').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Remove photo' }).isVisible(), false);
    assert.deepEqual(errors.filter((e) => !e.includes('Failed to load resource')), []);
    await context.close();
  });
});
