// Navigation without importing the router (avoids an import cycle with app.js).
export function go(path, { replace = false } = {}) {
  window.dispatchEvent(new CustomEvent('meetease:navigate', { detail: { path, replace } }));
}
