// Pure layout arithmetic for the tile grid (no DOM; unit-tested under node).

/**
 * The grid that makes `count` tiles of aspect `aspect` (width / height) as large
 * as possible inside a `width` × `height` box with `gap` pixels between tiles.
 * Returns {cols, rows, tileWidth, tileHeight}.
 */
export function bestGrid(count, width, height, { aspect = 16 / 9, gap = 8 } = {}) {
  if (count <= 0 || width <= 0 || height <= 0) {
    return { cols: 0, rows: 0, tileWidth: 0, tileHeight: 0 };
  }
  let best = { cols: 1, rows: count, tileWidth: 0, tileHeight: 0 };
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const cellW = (width - gap * (cols - 1)) / cols;
    const cellH = (height - gap * (rows - 1)) / rows;
    if (cellW <= 0 || cellH <= 0) continue;
    // Fit a tile of the wanted aspect inside the cell.
    let tileW = cellW;
    let tileH = tileW / aspect;
    if (tileH > cellH) {
      tileH = cellH;
      tileW = tileH * aspect;
    }
    if (tileW * tileH > best.tileWidth * best.tileHeight) {
      best = { cols, rows, tileWidth: Math.floor(tileW), tileHeight: Math.floor(tileH) };
    }
  }
  return best;
}

/**
 * The height in device pixels worth asking the SFU for, for a video drawn
 * `cssHeight` CSS pixels tall. Rounded up to a step so small resizes do not
 * send a new `subscribe` each frame.
 */
export function wantedHeight(cssHeight, devicePixelRatio = 1, step = 30) {
  if (!(cssHeight > 0)) return 0;
  const px = Math.ceil(cssHeight * (devicePixelRatio || 1));
  return Math.ceil(px / step) * step;
}

/** The simulcast layer name the SFU would pick for a height (mirrors proto `Layer::for_height`). */
export function layerForHeight(height) {
  if (height <= 240) return 'low';
  if (height <= 480) return 'medium';
  return 'high';
}
