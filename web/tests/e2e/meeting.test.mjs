// Issue 5's "done when": two people sign up, one creates a meeting, the other
// opens its link and joins; each sees the other's video playing, mute shows on
// the other side, chat arrives, and leaving removes the tile.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dumpPage, expectVideoPlaying, launchBrowser, newPerson, screenshot, signUp, startPlatform, tileOf, uniqueEmail,
} from './harness.mjs';

describe('a two-person meeting', () => {
  let platform;
  let browser;
  let ada;
  let bob;
  let link;

  before(async () => {
    platform = await startPlatform();
    browser = await launchBrowser();
    ada = await newPerson(browser, platform.url);
    bob = await newPerson(browser, platform.url);
  });

  after(async (t) => {
    for (const person of [ada, bob]) {
      if (person) await dumpPage(person);
    }
    if (browser) await browser.close();
    if (platform) await platform.stop();
  });

  test('two people sign up and one starts a meeting from its home', async () => {
    await signUp(ada.page, { name: 'Ada Lovelace', email: uniqueEmail('ada') });
    await signUp(bob.page, { name: 'Bob Kahn', email: uniqueEmail('bob') });
    await ada.page.getByRole('button', { name: 'New meeting', exact: true }).click();
    await ada.page.waitForURL(/\/m\/[^/]+$/);
    link = ada.page.url();
    // The lobby: the preview plays, then a screenshot for the README.
    await ada.page.waitForFunction(() => {
      const v = document.querySelector('video.preview-video');
      return v && v.videoWidth > 0 && v.currentTime > 0.5;
    });
    await screenshot(ada.page, 'lobby');
    await ada.page.getByRole('button', { name: 'Join', exact: true }).click();
    await tileOf(ada.page, 'Ada Lovelace (you)').waitFor();
    await ada.page.getByRole('button', { name: 'Leave', exact: true }).waitFor();
  });

  test('the other opens the link, joins, and each sees the other\'s video playing', async () => {
    await bob.page.goto(link);
    await bob.page.getByLabel('Your name', { exact: true }).waitFor();
    assert.equal(await bob.page.getByLabel('Your name', { exact: true }).inputValue(), 'Bob Kahn');
    await bob.page.getByRole('button', { name: 'Join', exact: true }).click();
    await tileOf(bob.page, 'Bob Kahn (you)').waitFor();
    await tileOf(bob.page, 'Ada Lovelace').waitFor();
    await tileOf(ada.page, 'Bob Kahn').waitFor();
    const onAda = await expectVideoPlaying(ada.page, 'Bob Kahn');
    const onBob = await expectVideoPlaying(bob.page, 'Ada Lovelace');
    assert.ok(onAda.w > 0 && onBob.w > 0);
    await screenshot(ada.page, 'meeting');
  });

  test('muting shows on the other side, and unmuting clears it', async () => {
    const mutedIcon = tileOf(bob.page, 'Ada Lovelace').getByRole('img', { name: 'Microphone muted' });
    assert.equal(await mutedIcon.isVisible(), false);
    await ada.page.getByRole('button', { name: 'Mute', exact: true }).click();
    await ada.page.getByRole('button', { name: 'Unmute', exact: true }).waitFor();
    await mutedIcon.waitFor({ state: 'visible' });
    await ada.page.getByRole('button', { name: 'Unmute', exact: true }).click();
    await mutedIcon.waitFor({ state: 'hidden' });
  });

  test('a chat message arrives on the other side', async () => {
    await ada.page.getByRole('button', { name: 'Chat', exact: true }).click();
    await ada.page.getByLabel('Message', { exact: true }).fill('Hello Bob, can you hear me?');
    await ada.page.keyboard.press('Enter');
    await bob.page.getByRole('button', { name: 'Chat', exact: true }).click();
    const panel = bob.page.getByRole('complementary', { name: 'Chat messages' });
    await panel.getByText('Hello Bob, can you hear me?').waitFor();
    await panel.getByText('Ada Lovelace').waitFor();
    // Bob answers with the keyboard only.
    await bob.page.getByLabel('Message', { exact: true }).fill('Loud and clear.');
    await bob.page.keyboard.press('Enter');
    await ada.page.getByRole('complementary', { name: 'Chat messages' }).getByText('Loud and clear.').waitFor();
  });

  test('turning the camera off shows initials on the other side', async () => {
    await ada.page.getByRole('button', { name: 'Camera', exact: true }).click();
    const tile = tileOf(bob.page, 'Ada Lovelace');
    await bob.page.waitForFunction(
      () => document.querySelector('figure[aria-label="Ada Lovelace"]')?.dataset.video === 'off',
    );
    await tile.getByText('AL', { exact: true }).waitFor({ state: 'visible' });
    await ada.page.getByRole('button', { name: 'Camera', exact: true }).click();
    await expectVideoPlaying(bob.page, 'Ada Lovelace');
  });

  test('after a network blip the page says Reconnecting… and gets back in by itself', async () => {
    const before = await ada.page.evaluate(() => window.meetease.client.participantId);
    // Ada's network goes away for two seconds.
    await ada.context.setOffline(true);
    await ada.page.getByRole('alert').filter({ hasText: 'Reconnecting…' }).waitFor();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await ada.context.setOffline(false);
    await ada.page.getByRole('alert').filter({ hasText: 'Reconnecting…' }).waitFor({ state: 'hidden', timeout: 30_000 });
    const after = await ada.page.evaluate(() => window.meetease.client.participantId);
    assert.equal(after, before, 'the resume token kept the same participant');
    await expectVideoPlaying(ada.page, 'Bob Kahn');
    await expectVideoPlaying(bob.page, 'Ada Lovelace');
    assert.equal(await tileOf(bob.page, 'Ada Lovelace').count(), 1, 'Bob sees Ada once');
  });

  test('leaving removes the tile from the other page', async () => {
    await bob.page.getByRole('button', { name: 'Leave', exact: true }).click();
    await bob.page.getByRole('heading', { name: 'You left the meeting' }).waitFor();
    await tileOf(ada.page, 'Bob Kahn').waitFor({ state: 'detached' });
    await tileOf(ada.page, 'Ada Lovelace (you)').waitFor();
  });
});
