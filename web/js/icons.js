// Inline SVG icons (no icon font, no emoji: both depend on fonts a machine may lack).
const NS = 'http://www.w3.org/2000/svg';

const PATHS = {
  micOff: 'M19 11a7 7 0 0 1-1.1 3.8l-1.5-1.5A5 5 0 0 0 17 11h2zM12 1a3 3 0 0 1 3 3v6.2l-6-6V4a3 3 0 0 1 3-3zM3.3 2.3 21.7 20.7l-1.4 1.4-4.2-4.2A7 7 0 0 1 13 19v3h-2v-3a7 7 0 0 1-6-7h2a5 5 0 0 0 7.6 4.3l-1.5-1.5A3 3 0 0 1 9 11.8V8.2L1.9 3.7z',
  pin: 'M16 3l5 5-2 1-3 3 1 5-2 2-4-4-5 5-1-1 5-5-4-4 2-2 5 1 3-3 1-2z',
};

/** An icon; decorative unless `label` is given (then role=img with that name). */
export function icon(name, { label = null, size = 16 } = {}) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', String(size));
  svg.setAttribute('height', String(size));
  svg.setAttribute('fill', 'currentColor');
  svg.setAttribute('focusable', 'false');
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else {
    svg.setAttribute('aria-hidden', 'true');
  }
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', PATHS[name]);
  svg.append(path);
  return svg;
}
