// The analytics dashboard against the real launcher: a short real meeting between
// two people produces the data (meeting events and the SFU's quality samples through
// signaling's outbox and the bus); the page draws meetings per day and each
// person's bitrate, loss and round-trip time, one point per 10-second bucket.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dumpPage, eventually, expectVideoPlaying, launchBrowser, newPerson, screenshot, signUp, startPlatform, tileOf, uniqueEmail,
} from './harness.mjs';

// The mock platform (E2E_MOCK=1) has no analytics service.
const skip = process.env.E2E_MOCK === '1' ? 'the mock platform has no analytics service' : false;

/** GET an API path with the page's own session. */
function apiFrom(page, path) {
  return page.evaluate(async (p) => {
    const session = JSON.parse(localStorage.getItem('meetease.session'));
    const response = await fetch(p, { headers: { Authorization: `Bearer ${session.access_token}` } });
    return { status: response.status, body: await response.json() };
  }, path);
}

describe('dashboard', { skip }, () => {
  let platform;
  let browser;
  let ada;
  let bob;

  before(async () => {
    platform = await startPlatform();
    browser = await launchBrowser();
    ada = await newPerson(browser, platform.url);
    bob = await newPerson(browser, platform.url);
  });

  after(async () => {
    for (const person of [ada, bob]) {
      if (person) await dumpPage(person);
    }
    if (browser) await browser.close();
    if (platform) await platform.stop();
  });

  test('after a short meeting, the dashboard charts it: one meeting today, and each person\'s quality over time', async () => {
    await signUp(ada.page, { name: 'Ada Lovelace', email: uniqueEmail('dash-ada') });
    await signUp(bob.page, { name: 'Bob Kahn', email: uniqueEmail('dash-bob') });
    await ada.page.getByRole('button', { name: 'New meeting', exact: true }).click();
    await ada.page.waitForURL(/\/m\/[^/]+$/);
    const link = ada.page.url();
    await ada.page.getByRole('button', { name: 'Join', exact: true }).click();
    await tileOf(ada.page, 'Ada Lovelace (you)').waitFor();
    await bob.page.goto(link);
    await bob.page.getByRole('button', { name: 'Join', exact: true }).click();
    await tileOf(bob.page, 'Ada Lovelace').waitFor();
    await expectVideoPlaying(ada.page, 'Bob Kahn');
    await expectVideoPlaying(bob.page, 'Ada Lovelace');

    // Samples come every 2 s into 10-second buckets: wait for two buckets each.
    const id = await eventually(async () => {
      const { body } = await apiFrom(ada.page, '/api/v1/analytics/users/me/meetings');
      const meeting = body.meetings && body.meetings[0];
      if (!meeting) return false;
      const { body: summary } = await apiFrom(ada.page, `/api/v1/analytics/meetings/${meeting.meeting_id}`);
      const timelines = Object.values(summary.quality || {});
      return timelines.length === 2 && timelines.every((t) => t.length >= 2) ? meeting.meeting_id : false;
    }, { timeout: 60_000, message: 'two quality buckets for each person' });
    for (const person of [bob, ada]) {
      await person.page.getByRole('button', { name: 'Leave', exact: true }).click();
    }
    // The figures settle once the meeting has ended and no sample is in flight.
    const summary = await eventually(async () => {
      const first = (await apiFrom(ada.page, `/api/v1/analytics/meetings/${id}`)).body;
      await new Promise((r) => setTimeout(r, 1500));
      const second = (await apiFrom(ada.page, `/api/v1/analytics/meetings/${id}`)).body;
      return first.ended_at && JSON.stringify(first) === JSON.stringify(second) ? second : false;
    }, { timeout: 30_000, message: 'the meeting to end and its figures to settle' });

    await ada.page.goto('/');
    await ada.page.getByRole('link', { name: 'Dashboard', exact: true }).click();
    await ada.page.waitForURL('**/dashboard');
    await ada.page.getByRole('heading', { name: 'Dashboard', exact: true }).waitFor();
    // Meetings per day: 14 bars, today's (the last) is this one meeting.
    const daily = ada.page.getByRole('img', { name: /^Meetings started per day/ });
    await daily.waitFor();
    const bars = await daily.locator('rect.bar').evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
    assert.equal(bars.length, 14);
    assert.equal(bars[13], 1);
    assert.equal(bars.reduce((a, b) => a + b, 0), 1);

    // Quality: one chart per metric, one series per person, a point per bucket with a value.
    const names = new Map(summary.participants.map((p) => [p.participant_id, p.display_name]));
    assert.deepEqual([...names.values()].sort(), ['Ada Lovelace', 'Bob Kahn']);
    await ada.page.getByRole('img', { name: 'Round-trip time (ms)' }).waitFor();
    const legend = await ada.page.getByRole('list', { name: 'Participants' }).getByRole('listitem').allTextContents();
    assert.deepEqual(legend.sort(), ['Ada Lovelace', 'Bob Kahn']);
    const metrics = {
      'Bitrate to the participant (kbit/s)': (p) => p.egress_bps,
      'Packet loss from the participant (%)': (p) => p.ingress_loss,
      'Round-trip time (ms)': (p) => p.rtt_ms,
    };
    for (const [title, pick] of Object.entries(metrics)) {
      const chart = ada.page.getByRole('img', { name: title, exact: true });
      for (const [participant, points] of Object.entries(summary.quality)) {
        const name = names.get(participant);
        const expected = points.filter((p) => typeof pick(p) === 'number');
        const drawn = await chart.locator(`circle.point[data-series="${name}"]`).evaluateAll((els) => els.map((e) => ({ t: e.dataset.t, v: Number(e.dataset.value) })));
        assert.equal(drawn.length, expected.length, `${title}, ${name}`);
        assert.deepEqual(drawn.map((d) => d.t), expected.map((p) => new Date(p.at).toISOString()), `${title}, ${name}`);
      }
    }
    // Loss is drawn in percent.
    const lossPoints = await ada.page.getByRole('img', { name: 'Packet loss from the participant (%)', exact: true })
      .locator('circle.point').evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
    const lossValues = Object.values(summary.quality).flat().map((p) => p.ingress_loss * 100);
    assert.deepEqual(lossPoints.sort(), lossValues.sort());
    // The stats line under the bars, and the meeting's title from signaling.
    await ada.page.getByText('1 meeting, 2 joins, at most 2 people at once; 0 people in meetings now.').waitFor();
    assert.match(await ada.page.getByLabel('Meeting', { exact: true }).locator('option:checked').textContent(), /^Instant meeting — /);
    await screenshot(ada.page, 'dashboard', { fullPage: true });
    assert.deepEqual(ada.errors.filter((e) => !e.includes('Failed to load resource')), []);
  });
});
