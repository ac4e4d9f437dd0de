// Simulcast: each tile asks the SFU for the layer that fits its drawn size, so a
// small tile receives a lower layer than a large one (inbound-rtp frameHeight).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dumpPage, eventually, expectVideoPlaying, launchBrowser, newPerson, signUp, startPlatform, tileOf, uniqueEmail,
} from './harness.mjs';

/** The frame height the viewer decodes, per remote participant name. */
async function heightsByName(page) {
  return page.evaluate(async () => {
    const stats = await window.meetease.client.inboundVideoStats();
    const out = {};
    for (const tile of document.querySelectorAll('figure.tile[data-source="camera"]')) {
      const s = stats.find((x) => x.participant_id === tile.dataset.participantId && x.source === 'camera');
      if (s) out[tile.getAttribute('aria-label')] = { frameHeight: s.frameHeight, drawn: Math.round(tile.getBoundingClientRect().height) };
    }
    return out;
  });
}

describe('simulcast', () => {
  let platform;
  let browser;
  const people = {};

  before(async () => {
    platform = await startPlatform();
    browser = await launchBrowser();
    for (const name of ['Ada', 'Bob', 'Cleo']) people[name] = await newPerson(browser, platform.url);
  });

  after(async () => {
    for (const [name, person] of Object.entries(people)) {
      await dumpPage(person);
    }
    if (browser) await browser.close();
    if (platform) await platform.stop();
  });

  test('a small tile receives a lower layer than a large one, and the layers follow the sizes', async (t) => {
    const { Ada: ada, Bob: bob, Cleo: cleo } = people;
    await signUp(ada.page, { name: 'Ada', email: uniqueEmail('ada') });
    await ada.page.getByRole('button', { name: 'New meeting', exact: true }).click();
    await ada.page.waitForURL(/\/m\/[^/]+$/);
    const link = ada.page.url();
    await ada.page.getByRole('button', { name: 'Join', exact: true }).click();
    await signUp(bob.page, { name: 'Bob', email: uniqueEmail('bob') });
    await bob.page.goto(link);
    await bob.page.getByRole('button', { name: 'Join', exact: true }).click();
    // Cleo only watches (camera off keeps the two CPU cores for the publishers).
    await signUp(cleo.page, { name: 'Cleo', email: uniqueEmail('cleo') });
    await cleo.page.goto(link);
    await cleo.page.getByRole('button', { name: 'Camera', exact: true }).click();
    await cleo.page.getByRole('button', { name: 'Join', exact: true }).click();
    await expectVideoPlaying(cleo.page, 'Ada');
    await expectVideoPlaying(cleo.page, 'Bob');

    // Ada pinned: her tile fills the stage, Bob's is a thumbnail.
    await tileOf(cleo.page, 'Ada').getByRole('button', { name: 'Pin Ada' }).click();
    const pinnedAda = await eventually(async () => {
      const h = await heightsByName(cleo.page);
      return h.Ada && h.Bob && h.Bob.frameHeight > 0 && h.Bob.frameHeight <= 240 && h.Ada.frameHeight > h.Bob.frameHeight ? h : false;
    }, { timeout: 45_000, message: 'Ada (large) to arrive in a higher layer than Bob (small)' });
    t.diagnostic(`Ada pinned: ${JSON.stringify(pinnedAda)}`);
    assert.ok(pinnedAda.Ada.drawn > pinnedAda.Bob.drawn * 2, JSON.stringify(pinnedAda));

    // Pin Bob instead: the tiles swap sizes and the layers follow.
    await tileOf(cleo.page, 'Bob').getByRole('button', { name: 'Pin Bob' }).click();
    const pinnedBob = await eventually(async () => {
      const h = await heightsByName(cleo.page);
      return h.Ada && h.Bob && h.Ada.frameHeight > 0 && h.Ada.frameHeight <= 240 && h.Bob.frameHeight > h.Ada.frameHeight ? h : false;
    }, { timeout: 45_000, message: 'Bob (now large) to arrive in a higher layer than Ada (now small)' });
    t.diagnostic(`Bob pinned: ${JSON.stringify(pinnedBob)}`);
  });
});
