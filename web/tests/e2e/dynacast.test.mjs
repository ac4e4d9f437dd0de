// Dynacast: a publisher sends only the simulcast layers someone watches. When
// the only viewer draws the publisher's tile small, the SFU asks (after its
// 3 s off-delay) for the low layer alone and the publisher's browser pauses
// the others (RTCRtpSender encodings `active`); a large tile turns them back on.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dumpPage, eventually, expectVideoPlaying, launchBrowser, newPerson, signUp, startPlatform, tileOf, uniqueEmail,
} from './harness.mjs';

/** The publisher's camera encodings: rid → active; null until the camera is published. */
async function cameraEncodings(page) {
  return page.evaluate(() => {
    const client = window.meetease.client;
    const tx = client && client.ownTransceivers.get('camera');
    if (!tx) return null;
    const out = {};
    for (const e of tx.sender.getParameters().encodings) out[e.rid] = e.active;
    return out;
  });
}

describe('dynacast', () => {
  let platform;
  let browser;
  const people = {};

  before(async () => {
    platform = await startPlatform();
    browser = await launchBrowser();
    people.Ada = await newPerson(browser, platform.url);
    // Bob's window is small, so Ada's tile in it is too.
    people.Bob = await newPerson(browser, platform.url, { viewport: { width: 480, height: 360 } });
  });

  after(async () => {
    for (const person of Object.values(people)) await dumpPage(person);
    if (browser) await browser.close();
    if (platform) await platform.stop();
  });

  test('a small tile pauses the publisher\'s upper layers and a large one resumes them', async (t) => {
    const { Ada: ada, Bob: bob } = people;
    await signUp(ada.page, { name: 'Ada', email: uniqueEmail('ada') });
    await ada.page.getByRole('button', { name: 'New meeting', exact: true }).click();
    await ada.page.waitForURL(/\/m\/[^/]+$/);
    const link = ada.page.url();
    await ada.page.getByRole('button', { name: 'Join', exact: true }).click();
    await tileOf(ada.page, 'Ada (you)').waitFor();
    // Her own tile can show before the camera's transceiver exists (the
    // connection was still "connecting" when a loaded CI run read it).
    const initial = await eventually(() => cameraEncodings(ada.page), { message: 'Ada\'s camera to be published' });
    assert.deepEqual(initial, { q: true, h: true, f: true }, 'a publisher starts with every layer');

    // Bob only watches (camera off keeps the two CPU cores for Ada's encoder).
    await signUp(bob.page, { name: 'Bob', email: uniqueEmail('bob') });
    await bob.page.goto(link);
    await bob.page.getByRole('button', { name: 'Camera', exact: true }).click();
    await bob.page.getByRole('button', { name: 'Join', exact: true }).click();
    await expectVideoPlaying(bob.page, 'Ada');
    const drawn = await tileOf(bob.page, 'Ada').evaluate((el) => Number(el.dataset.requestedHeight));
    t.diagnostic(`Bob asks for Ada's video at ${drawn} px`);
    assert.ok(drawn > 0 && drawn <= 240, `Ada's tile is small in Bob's window (${drawn} px)`);

    const paused = await eventually(async () => {
      const e = await cameraEncodings(ada.page);
      return e && e.q && !e.h && !e.f ? e : false;
    }, { timeout: 30_000, message: 'Ada to send her low layer only' });
    t.diagnostic(`small tile: ${JSON.stringify(paused)}`);
    await expectVideoPlaying(bob.page, 'Ada');

    // Bob's window grows and he pins Ada: her tile is large, her top layer comes back.
    await bob.page.setViewportSize({ width: 1280, height: 800 });
    await tileOf(bob.page, 'Ada').getByRole('button', { name: 'Pin Ada' }).click();
    const large = await eventually(async () => {
      const h = await tileOf(bob.page, 'Ada').evaluate((el) => Number(el.dataset.requestedHeight));
      return h > 480 ? h : false;
    }, { message: 'Bob to ask for Ada\'s video large' });
    t.diagnostic(`Bob asks for Ada's video at ${large} px`);
    const resumed = await eventually(async () => {
      const e = await cameraEncodings(ada.page);
      return e && e.q && e.h && e.f ? e : false;
    }, { timeout: 30_000, message: 'Ada to send every layer again' });
    t.diagnostic(`large tile: ${JSON.stringify(resumed)}`);
    await expectVideoPlaying(bob.page, 'Ada');
  });
});
