"""A picture of one page of the static site, taken in headless Chromium.

The browser is the one the site's browser test uses (Debian's ``chromium`` through
Playwright, ``--headless --no-sandbox --disable-gpu --no-first-run``, an empty user-data
folder; :mod:`benchmark.reporting.site.browser`). The picture is the viewport only (what a
reader sees on opening the page), saved as PNG; with Pillow installed its colours are reduced
to a palette of ``--colors`` so that a page of text stays small. A page that logs a console
error or warning, fails a request or asks for anything but a local file is not pictured: the
script says what happened and exits 1.

    python -m benchmark.aggregate --site /tmp/site
    python scripts/site_screenshot.py /tmp/site --out docs/img/site_leaderboard.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.reporting.site.browser import headless_chromium, watch  # noqa: E402


def shrink(png: bytes, colors: int) -> bytes:
    """``png`` with its colours reduced to a palette of ``colors`` (0: unchanged; also
    unchanged without Pillow or when the palette would not be smaller)."""
    if not colors:
        return png
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def screenshot(site: Path, page_name: str, width: int, height: int) -> tuple[bytes, list[str]]:
    """(PNG of the viewport, problems while the page loaded) of ``site/page_name``."""
    with headless_chromium(width, height) as browser:
        page = browser.new_page()
        page.set_default_timeout(180_000)
        problems = watch(page)
        page.goto((site / page_name).resolve().as_uri())
        page.wait_for_load_state("load")
        return page.screenshot(full_page=False), problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("site", type=Path, help="a folder written by `aggregate --site`")
    ap.add_argument("--page", default="index.html", help="the page, relative to the site")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "site_leaderboard.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--colors", type=int, default=256,
                    help="palette size of the saved PNG (0: full colour)")  # fmt: skip
    args = ap.parse_args(argv)
    if not (args.site / args.page).is_file():
        print(f"error: no {args.page} in {args.site} (build the site first: python -m "
              "benchmark.aggregate --site DIR)", file=sys.stderr)  # fmt: skip
        return 2
    if not (0 <= args.colors <= 256) or args.width < 1 or args.height < 1:
        print("error: --colors must be 0..256 and --width/--height positive", file=sys.stderr)
        return 2
    try:
        png, problems = screenshot(args.site, args.page, args.width, args.height)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"error: {args.page} did not load cleanly: {'; '.join(problems)}", file=sys.stderr)
        return 1
    png = shrink(png, args.colors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png) / 1024:.0f} KB, {args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
