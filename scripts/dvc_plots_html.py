"""Write `.dvc/plots-html/`: the HTML template `dvc plots show` uses (`plots.html_template` in
.dvc/config), with vega, vega-lite and vega-embed inlined, so the page needs no network.

    python scripts/dvc_plots_html.py             # the versions below (needs npm and the registry)
    python scripts/dvc_plots_html.py --check     # the committed template holds what vendor.json says

The versions are the ones DVC's own page loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS),
so the plots render the same. Each package's minified build (its package.json "jsdelivr" file,
the file the CDN serves) is inlined as is; its LICENSE (BSD-3-Clause) is kept beside the template,
and vendor.json records version, file, licence and sha256 of each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".dvc" / "plots-html"
TEMPLATE = OUT / "index.html"
MANIFEST = OUT / "vendor.json"
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
SCRIPT = re.compile(r'<script data-package="([a-z-]+)@([0-9.]+)">\n(.*?)\n</script>', re.S)

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- vega, vega-lite and vega-embed inlined (BSD-3-Clause: LICENSE-* in .dvc/plots-html/),
         written by scripts/dvc_plots_html.py: the page loads nothing from the network -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fetch(tmp: Path) -> dict[str, dict]:
    """npm pack each package; its minified build and LICENSE."""
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    out = {}
    for name, version in PACKAGES.items():
        with tarfile.open(tmp / f"{name}-{version}.tgz") as tar:
            meta = json.load(tar.extractfile("package/package.json"))
            build = meta["jsdelivr"]
            js = tar.extractfile(f"package/{build}").read().decode()
            licence = tar.extractfile("package/LICENSE").read().decode()
        if meta["license"] != "BSD-3-Clause" or "</script" in js:
            raise SystemExit(f"{name}@{version}: licence {meta['license']!r} or a </script> "
                             "in the build: check before inlining")
        out[name] = {"version": version, "file": build, "license": meta["license"],
                     "js": js, "license_text": licence}
    return out


def write(packages: dict[str, dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scripts = "\n".join(f'<script data-package="{n}@{p["version"]}">\n{p["js"]}\n</script>'
                        for n, p in packages.items())
    TEMPLATE.write_text(PAGE.format(scripts=scripts), encoding="utf8")
    for n, p in packages.items():
        (OUT / f"LICENSE-{n}").write_text(p["license_text"], encoding="utf8")
    MANIFEST.write_text(json.dumps(
        {n: {"version": p["version"], "file": p["file"], "license": p["license"],
             "license_file": f"LICENSE-{n}", "sha256": _sha256(p["js"])}
         for n, p in packages.items()}, indent=2) + "\n", encoding="utf8")


def inlined() -> dict[str, tuple[str, str]]:
    """{package: (version, sha256 of its inlined build)} as the committed template holds them."""
    return {m[1]: (m[2], _sha256(m[3]))
            for m in SCRIPT.finditer(TEMPLATE.read_text(encoding="utf8"))}


def check() -> list[str]:
    manifest = json.loads(MANIFEST.read_text())
    got = inlined()
    problems = [f"{n}: inlined {got.get(n)}, vendor.json {(m['version'], m['sha256'])}"
                for n, m in manifest.items() if got.get(n) != (m["version"], m["sha256"])]
    problems += [f"{n}: no {m['license_file']}" for n, m in manifest.items()
                 if not (OUT / m["license_file"]).is_file()]
    return problems


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the committed template")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 2 if problems else 0
    with tempfile.TemporaryDirectory() as tmp:
        write(fetch(Path(tmp)))
    print(f"wrote {TEMPLATE.relative_to(ROOT)} ({TEMPLATE.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
