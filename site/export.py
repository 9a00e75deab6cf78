"""Export the chapters as offline HTML pages (`make html`) and reveal.js slide decks (`make slides`).

Each chapter is executed in fast mode (MINILINEAGE_FAST=1) with its widget state stored, then
converted by nbconvert with every script, font and stylesheet a page needs copied into `static/`
beside it, so a page works from a USB stick in a room with no internet: the Jupyter widget
manager (`@jupyter-widgets/html-manager`, which also carries the Font Awesome icons of the Play
buttons), require.js, MathJax 2 and, for slides, reveal.js and jQuery. They come from npm,
pinned in `site/package.json` + `package-lock.json` and installed into `site/node_modules` by
`make site-assets` (`npm ci`). Nothing in the package `minilineage` depends on this folder.

    python site/export.py html                  # build/html/NN_name.html + index.html
    python site/export.py slides                # build/slides/NN_name.slides.html + index.html
    python site/export.py html --stored         # no execution: the outputs saved in the notebooks

Executed notebooks are cached in build/executed/ (keyed on the chapter's cells, the package
source and the checkpoint records), so `make slides` after `make html` does not run them again.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter, SlidesExporter

SITE = Path(__file__).resolve().parent
ROOT = SITE.parent
MODULES = SITE / "node_modules"
MATHJAX_CONFIG = "TeX-AMS_CHTML-full"  # nbconvert's own choice (with its Safe mode), served from static/

# (path in node_modules, path under static/) for every file or folder a page loads.
COMMON_ASSETS = [
    ("requirejs/require.js", "require.js"),
    ("mathjax/MathJax.js", "mathjax/MathJax.js"),
    (f"mathjax/config/{MATHJAX_CONFIG}.js", f"mathjax/config/{MATHJAX_CONFIG}.js"),
    ("mathjax/config/Safe.js", "mathjax/config/Safe.js"),
    ("mathjax/extensions", "mathjax/extensions"),
    ("mathjax/jax/input/TeX", "mathjax/jax/input/TeX"),
    ("mathjax/jax/output/CommonHTML", "mathjax/jax/output/CommonHTML"),
    ("mathjax/jax/element", "mathjax/jax/element"),
    ("mathjax/fonts/HTML-CSS/TeX/woff", "mathjax/fonts/HTML-CSS/TeX/woff"),
    ("mathjax/LICENSE", "mathjax/LICENSE"),
    ("@jupyter-widgets/html-manager/dist", "widgets"),  # embed-amd.js + the icon fonts it loads
]
NPM_PACKAGES = ["@jupyter-widgets/html-manager", "requirejs", "mathjax", "reveal.js", "jquery"]
SLIDE_ASSETS = [
    ("reveal.js/dist", "reveal.js/dist"),
    ("reveal.js/plugin/notes", "reveal.js/plugin/notes"),
    ("reveal.js/LICENSE", "reveal.js/LICENSE"),
    ("jquery/dist/jquery.min.js", "jquery.min.js"),
]
# Bundles and maps the pages never load (embed.js is the non-AMD twin of embed-amd.js), and what only
# pre-2015 browsers pick: font formats after woff2 in Font Awesome's list, MathJax's speech rules for IE.
SKIP = ["*.map", "embed.js", "embed.js.LICENSE.txt", "libembed-amd.js", "*.eot", "*.svg", "*.scss", "*.esm.js",
        "mathmaps_ie.js"]

PAGE_URLS = {
    "require_js_url": "static/require.js",
    "mathjax_url": f"static/mathjax/MathJax.js?config={MATHJAX_CONFIG},Safe",
    "widget_renderer_url": "static/widgets/embed-amd.js",
}


def copy_assets(out: Path, slides: bool) -> int:
    """Copy the pinned npm files the pages load into out/static; returns their size in bytes."""
    if not (MODULES / "@jupyter-widgets" / "html-manager").is_dir():
        raise SystemExit(f"{MODULES} is missing or incomplete: run `make site-assets` (npm ci in site/) first")
    static = out / "static"
    shutil.rmtree(static, ignore_errors=True)
    for source, target in COMMON_ASSETS + (SLIDE_ASSETS if slides else []):
        source, target = MODULES / source, static / target
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*SKIP))
        else:
            shutil.copy2(source, target)
    packages = [json.loads((MODULES / name / "package.json").read_text()) for name in NPM_PACKAGES]
    (static / "NOTICE.txt").write_text(
        "Copied from npm by site/export.py; licences as the packages declare them:\n"
        + "".join(f"{p['name']} {p['version']}: {p.get('license', 'see the package')}\n" for p in packages)
    )
    return sum(f.stat().st_size for f in static.rglob("*") if f.is_file())


def cache_key(source: Path) -> str:
    """A hash of what an execution depends on: the cells, the package source, the checkpoint records."""
    digest = hashlib.sha256()
    cells = nbformat.read(source, as_version=4).cells
    digest.update("\0".join(c.cell_type + c.source for c in cells).encode())
    for path in sorted((ROOT / "minilineage").rglob("*.py")) + sorted((ROOT / "assets").rglob("*.json")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    digest.update(os.environ.get("MINILINEAGE_FAST", "").encode())
    return digest.hexdigest()


def executed(source: Path, cache: Path, timeout: int = 1800) -> tuple[nbformat.NotebookNode, float]:
    """The chapter run top to bottom in a fresh kernel with widget state stored, and the seconds it took.

    Reuses cache/NAME.ipynb when its key matches (0 seconds).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    key, target = cache_key(source), cache / source.name
    if target.exists():
        nb = nbformat.read(target, as_version=4)
        if nb.metadata.get("minilineage_export", {}).get("key") == key:
            return nb, 0.0
    nb = nbformat.read(source, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(source.parent)}},
    )
    print(f"running {source.name} (fast mode: {os.environ.get('MINILINEAGE_FAST') == '1'}) ...", flush=True)
    try:
        client.execute()
    except CellExecutionError as error:
        raise SystemExit(f"{source.name}: a cell failed, nothing exported: {error.ename}: {error.evalue}") from None
    seconds = time.perf_counter() - start
    nb.metadata["minilineage_export"] = {"key": key}
    cache.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return nb, seconds


# Slides. A chapter carries no slide metadata; the deck is derived from its headings:
#   `#` or `##` heading -> new slide; `###` heading -> new sub-slide (below, reached with the down key);
#   any other cell continues the slide, unless the slide already fills a screen: then it starts a sub-slide.
# A cell whose metadata already has `slideshow.slide_type` keeps it.
SCREEN_LINES = 24  # what fits on the 1280 x 800 canvas at the deck's font sizes


def _lines(cell) -> int:
    """A rough height of a cell on a slide, in lines of text."""
    lines = sum(1 + len(line) // 90 for line in cell.source.splitlines())
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "application/vnd.jupyter.widget-view+json" in data or "image/png" in data:
            lines += 14
        else:
            lines += min(len(str(output.get("text", data.get("text/plain", ""))).splitlines()), 12)
    return lines


def slide_types(nb: nbformat.NotebookNode) -> list[str]:
    """One reveal.js slide_type per cell ("slide", "subslide", "-"), by the rule above."""
    types, filled = [], 0
    for cell in nb.cells:
        explicit = cell.metadata.get("slideshow", {}).get("slide_type")
        heading = re.match(r"(#+) ", cell.source) if cell.cell_type == "markdown" else None
        if explicit:
            kind = explicit
        elif heading and len(heading.group(1)) <= 2:
            kind = "slide"
        elif heading and len(heading.group(1)) == 3:
            kind = "subslide"
        elif types and filled + _lines(cell) > SCREEN_LINES and filled > 0:
            kind = "subslide"
        else:
            kind = "slide" if not types else "-"
        filled = _lines(cell) if kind in ("slide", "subslide") else filled + _lines(cell)
        types.append(kind)
    return types


def with_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook with `slideshow` metadata on every cell, from `slide_types`."""
    nb = nbformat.from_dict(nb)
    for cell, kind in zip(nb.cells, slide_types(nb)):
        cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
    return nb


def exporter(slides: bool):
    """nbconvert's lab page or reveal.js deck, with every URL pointing into static/."""
    templates = str(SITE / "templates")  # the templates, and the CSS files they include
    options = {**PAGE_URLS, "extra_template_basedirs": [templates], "extra_template_paths": [templates]}
    if not slides:
        return HTMLExporter(template_name="minilineage-lab", **options)
    return SlidesExporter(
        template_name="minilineage-reveal", reveal_url_prefix="static/reveal.js",
        jquery_url="static/jquery.min.js", reveal_theme="white", reveal_scroll=True, reveal_width="1280",
        reveal_height="800", reveal_transition="none", exclude_input_prompt=True,
        exclude_output_prompt=True, **options,
    )


def summary(nb: nbformat.NotebookNode, least: int = 100) -> tuple[str, str]:
    """(title, summary): the first `#` heading, and the opening sentences after it, `least` characters or more."""
    text = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "untitled")
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.lstrip().startswith("#")]
    sentences = re.split(r"(?<=[.!?])(?<!et al\.)\s+", " ".join(paragraphs[0].split())) if paragraphs else []
    kept = []
    while sentences and len(" ".join(kept)) < least:
        kept.append(sentences.pop(0))
    return title, " ".join(kept)


def thumbnail(nb: nbformat.NotebookNode, width: int = 320) -> bytes | None:
    """The chapter's first picture (a figure, else a widget frame) as a PNG at most `width` wide."""
    from PIL import Image

    pngs = [o["data"]["image/png"] for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for model in state.get("state", {}).values():  # an Image widget keeps its PNG in a base64 buffer
        if model.get("model_name") == "ImageModel":
            pngs += [b["data"] for b in model.get("buffers", []) if b.get("path") == ["value"]]
    if not pngs:
        return None
    picture = Image.open(io.BytesIO(base64.b64decode(pngs[0]))).convert("RGB")
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def write_index(out: Path, entries: list[dict], heading: str) -> Path:
    """index.html: the chapters in order, each with its thumbnail, title and one-line summary."""
    items = []
    for e in entries:
        image = f'<img src="{e["thumb"]}" alt="">' if e["thumb"] else ""
        items.append(
            f'<li><a href="{html.escape(e["href"])}">{image}<span class="title">{html.escape(e["title"])}</span></a>'
            f'<p>{html.escape(e["summary"])}</p></li>'
        )
    mathjax = PAGE_URLS["mathjax_url"]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>minilineage — {heading}</title>
<script type="text/x-mathjax-config">MathJax.Hub.Config({{tex2jax: {{inlineMath: [["$", "$"]]}}}});</script>
<script src="{mathjax}"></script>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }}
ol {{ list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 1.5em; }}
li {{ border: 1px solid #ddd; border-radius: 8px; padding: 1em; }}
li img {{ display: block; width: 100%; height: 150px; object-fit: contain; margin-bottom: .6em; }}
a {{ color: inherit; text-decoration: none; }} .title {{ font-weight: 600; font-size: 1.15em; }}
p {{ color: #555; margin: .4em 0 0; }}
</style></head><body>
<h1>minilineage — {heading}</h1>
<p>From the autoencoder to Sora, one small model at a time. Every page works offline; the players play without Python.</p>
<ol>
{chr(10).join(items)}
</ol></body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def export(chapters: list[Path], out: Path, slides: bool = False, stored: bool = False,
           cache: Path = ROOT / "build" / "executed") -> list[dict]:
    """Execute (unless `stored`) and convert each chapter into `out`; returns one record per chapter."""
    out.mkdir(parents=True, exist_ok=True)
    static_bytes = copy_assets(out, slides)
    (out / "thumbs").mkdir(exist_ok=True)
    convert, records = exporter(slides), []
    for source in chapters:
        if stored:
            nb, run_s = nbformat.read(source, as_version=4), 0.0
        else:
            nb, run_s = executed(source, cache)
        start = time.perf_counter()
        body, _ = convert.from_notebook_node(with_slides(nb) if slides else nb, resources={"metadata": {"name": source.stem}})
        page = out / (source.stem + (".slides.html" if slides else ".html"))
        page.write_text(body, encoding="utf-8")
        thumb = thumbnail(nb)
        if thumb:
            (out / "thumbs" / f"{source.stem}.png").write_bytes(thumb)
        title, sentence = summary(nb)
        records.append({
            "name": source.stem, "href": page.name, "title": title, "summary": sentence,
            "thumb": f"thumbs/{source.stem}.png" if thumb else "", "run_s": run_s,
            "export_s": time.perf_counter() - start, "bytes": page.stat().st_size,
            "widgets": sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                           for c in nb.cells for o in c.get("outputs", [])),
        })
    write_index(out, records, "slides" if slides else "chapters")
    for r in records:
        print(f"{r['href']:32} {r['bytes'] / 1e6:6.2f} MB  {r['widgets']:3d} widgets  "
              f"run {r['run_s']:6.1f} s  export {r['export_s']:5.1f} s")
    print(f"{'static/ (shared by all pages)':32} {static_bytes / 1e6:6.2f} MB  -> {out}/index.html")
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["html", "slides"], help="pages (build/html) or reveal.js decks (build/slides)")
    parser.add_argument("--chapters", type=Path, default=ROOT / "chapters", help="folder of NN_name.ipynb notebooks")
    parser.add_argument("--out", type=Path, help="output folder (default build/html or build/slides)")
    parser.add_argument("--stored", action="store_true", help="do not execute: export the outputs saved in the notebooks")
    parser.add_argument("--full", action="store_true", help="execute without MINILINEAGE_FAST=1 (full training cells)")
    args = parser.parse_args(argv)
    if not args.full:
        os.environ["MINILINEAGE_FAST"] = "1"
    chapters = sorted(p for p in args.chapters.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        sys.exit(f"no NN_name.ipynb chapters in {args.chapters}")
    out = args.out or ROOT / "build" / args.kind
    export(chapters, out, slides=args.kind == "slides", stored=args.stored)


if __name__ == "__main__":
    main()
