"""What the eye needs from a page as Chromium drew it: every image visible and whole, nothing
wider than the screen, nothing drawn over anything else, the QR codes a phone's camera would
read from a screenshot, and what axe-core finds.

The checks return what is wrong (an empty list when all is well) so that a test asserts on them
with the page's name in its message.
"""

from __future__ import annotations

import io
from typing import Any

import PIL.Image
import zxingcpp
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Page

# Every image a page shows: inline SVG drawings (not the parts of one), pictures, canvases and
# anything else announced as an image.
_IMAGE_PROBLEMS = """() => {
  const problems = [];
  const pageWidth = document.documentElement.clientWidth;
  const images = [...document.querySelectorAll('svg, img, canvas, [role="img"]')]
    .filter(e => !(e instanceof SVGElement && e.ownerSVGElement));
  for (const image of images) {
    const name = image.getAttribute('aria-label') || image.getAttribute('alt')
      || image.querySelector('title')?.textContent || image.outerHTML.slice(0, 60);
    const box = image.getBoundingClientRect();
    const style = getComputedStyle(image);
    if (box.width < 1 || box.height < 1 || style.visibility !== 'visible'
        || Number(style.opacity) === 0) {
      problems.push(`${name}: not visible (${box.width} x ${box.height} px)`);
      continue;
    }
    if (box.left < -0.5 || box.right > pageWidth + 0.5) {
      problems.push(`${name}: beyond the page's width (${box.left}..${box.right} of ${pageWidth})`);
    }
    // Cut by a box around it that clips what overflows.
    for (let outer = image.parentElement; outer; outer = outer.parentElement) {
      const s = getComputedStyle(outer);
      if (s.overflowX === 'visible' && s.overflowY === 'visible') continue;
      const o = outer.getBoundingClientRect();
      if (box.left < o.left - 0.5 || box.top < o.top - 0.5 || box.right > o.right + 0.5
          || box.bottom > o.bottom + 0.5) {
        problems.push(`${name}: cut by <${outer.tagName.toLowerCase()}> that clips`);
      }
    }
    if (image instanceof HTMLImageElement && !(image.complete && image.naturalWidth > 0)) {
      problems.push(`${name}: not loaded`);
    }
    if (image instanceof SVGSVGElement) {
      // The drawing must lie inside what the box shows: the viewBox (scaled to fit, never
      // sliced) or, without one, the box itself at one unit a pixel.
      const drawn = image.getBBox();
      const view = image.viewBox.baseVal;
      const area = view && view.width > 0
        ? {x: view.x, y: view.y, width: view.width, height: view.height}
        : {x: 0, y: 0, width: image.clientWidth, height: image.clientHeight};
      if (drawn.x < area.x - 0.01 || drawn.y < area.y - 0.01
          || drawn.x + drawn.width > area.x + area.width + 0.01
          || drawn.y + drawn.height > area.y + area.height + 0.01) {
        problems.push(`${name}: drawing cut (${drawn.x},${drawn.y} ${drawn.width} x `
          + `${drawn.height} in a view of ${area.x},${area.y} ${area.width} x ${area.height})`);
      }
      if (view && view.width > 0 && image.preserveAspectRatio.baseVal.meetOrSlice === 2) {
        problems.push(`${name}: sliced to fill its box`);
      }
    }
  }
  return problems;
}"""


def image_problems(page: Page) -> list[str]:
    """Each image of the page that is hidden, empty, beyond the page's width, clipped by a box
    around it, not loaded, or whose drawing does not fit what its SVG box shows."""
    problems: list[str] = page.evaluate(_IMAGE_PROBLEMS)
    return problems


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    overflow: int = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


def qr_codes_on_screen(page: Page) -> list[str]:
    """The texts of the QR codes in a screenshot of the whole page, as drawn: dark modules on a
    light ground only (an inverted code is not counted: many phone apps do not read one)."""
    screenshot = PIL.Image.open(io.BytesIO(page.screenshot(full_page=True)))
    found = zxingcpp.read_barcodes(
        screenshot, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode), try_invert=False
    )
    return [code.text for code in found]


# What a person reads or touches, where Chromium drew it: each line of text (a text node's line
# boxes), each control and each image. Two of them drawn over each other, when neither holds the
# other, is an overlap (a label under its box, a badge over an address, a button over a word).
_OVERLAPS = """() => {
  const hidden = (element) => {
    // Not drawn: display none, visibility hidden, no opacity, or the closed part of a
    // <details> (content-visibility), on the element or above it.
    if (!element.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return true;
    for (let e = element; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      const box = e.getBoundingClientRect();
      if ((s.clip !== 'auto' && s.position === 'absolute') || box.width <= 1 || box.height <= 1) {
        return true;  // visually hidden: for screen readers only
      }
    }
    return false;
  };
  const drawn = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const owner = node.parentElement;
    if (!node.textContent.trim() || !owner || owner.closest('svg, option, script, style')
        || hidden(owner)) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const rect of range.getClientRects()) {
      if (rect.width > 1 && rect.height > 1) {
        const name = JSON.stringify(node.textContent.trim().slice(0, 40));
        drawn.push({element: owner, rect, name});
      }
    }
  }
  const controls = document.body.querySelectorAll(
    'input:not([type=hidden]), select, textarea, img, canvas, svg');
  for (const control of controls) {
    if ((control instanceof SVGElement && control.ownerSVGElement) || hidden(control)) continue;
    const rect = control.getBoundingClientRect();
    if (rect.width > 1 && rect.height > 1) {
      drawn.push({element: control, rect, name: '<' + control.tagName.toLowerCase()
        + (control.id ? '#' + control.id : '') + '>'});
    }
  }
  const problems = [];
  for (let i = 0; i < drawn.length; i++) {
    for (let j = i + 1; j < drawn.length; j++) {
      const a = drawn[i], b = drawn[j];
      if (a.element.contains(b.element) || b.element.contains(a.element)) continue;
      const width = Math.min(a.rect.right, b.rect.right) - Math.max(a.rect.left, b.rect.left);
      const height = Math.min(a.rect.bottom, b.rect.bottom) - Math.max(a.rect.top, b.rect.top);
      if (width > 1 && height > 1) {
        const size = `${width.toFixed(1)} x ${height.toFixed(1)} px`;
        problems.push(`${a.name} and ${b.name} overlap (${size})`);
      }
    }
  }
  return problems;
}"""


def overlaps(page: Page) -> list[str]:
    """Each pair of things drawn over each other (lines of text, controls, images) where neither
    holds the other: what a mirrored or squeezed layout gets wrong."""
    problems: list[str] = page.evaluate(_OVERLAPS)
    return problems


AXE = Axe()


def violations(page: Page) -> list[str]:
    """axe-core's violations of every impact, one line each (rule, impact, offending nodes)."""
    results: dict[str, Any] = AXE.run(page).response
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(node["html"][:120] for node in v["nodes"])
        for v in results["violations"]
    ]
