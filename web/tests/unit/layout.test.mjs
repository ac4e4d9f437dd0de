// Pure client modules, tested under node (no browser).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bestGrid, layerForHeight, wantedHeight } from '../../js/layout.js';
import { humanMessage, removedMessage, ApiError } from '../../js/errors.js';

test('one tile fills the width or the height, whichever binds first', () => {
  const g = bestGrid(1, 1600, 900, { gap: 0 });
  assert.deepEqual(g, { cols: 1, rows: 1, tileWidth: 1600, tileHeight: 900 });
  const tall = bestGrid(1, 800, 2000, { gap: 0 });
  assert.equal(tall.tileWidth, 800);
  assert.equal(tall.tileHeight, 450);
});

test('two tiles sit side by side on a wide screen and stacked on a tall one', () => {
  assert.equal(bestGrid(2, 1600, 900).cols, 2);
  assert.equal(bestGrid(2, 500, 1000).cols, 1);
});

test('grids grow to fit every tile and never overflow the box', () => {
  for (let n = 1; n <= 30; n++) {
    const g = bestGrid(n, 1280, 720, { gap: 8 });
    assert.ok(g.cols * g.rows >= n, `n=${n}`);
    assert.ok(g.cols * g.tileWidth + (g.cols - 1) * 8 <= 1280, `n=${n} width`);
    assert.ok(g.rows * g.tileHeight + (g.rows - 1) * 8 <= 720, `n=${n} height`);
  }
  assert.deepEqual(bestGrid(0, 100, 100), { cols: 0, rows: 0, tileWidth: 0, tileHeight: 0 });
});

test('the wanted height is in device pixels, rounded up to a step', () => {
  assert.equal(wantedHeight(100, 1), 120);
  assert.equal(wantedHeight(100, 2), 210);
  assert.equal(wantedHeight(0, 1), 0);
  assert.equal(layerForHeight(wantedHeight(120)), 'low');
  assert.equal(layerForHeight(wantedHeight(360)), 'medium');
  assert.equal(layerForHeight(wantedHeight(700)), 'high');
});

test('error codes become sentences a person can act on', () => {
  assert.match(humanMessage(new ApiError('meeting_locked', 'x')), /locked by its host/);
  assert.match(humanMessage(new ApiError('invalid_credentials', 'x')), /Wrong email or password/);
  // Codes whose server message names the problem keep it.
  assert.equal(humanMessage(new ApiError('weak_password', 'password: at least 8 characters')), 'password: at least 8 characters');
  assert.equal(humanMessage(new ApiError('something_new', 'Something new happened')), 'Something new happened');
  assert.match(removedMessage('removed'), /removed from the meeting by the host/);
  assert.match(removedMessage('meeting_ended'), /ended the meeting/);
  assert.match(removedMessage('denied'), /did not let you in/);
});
