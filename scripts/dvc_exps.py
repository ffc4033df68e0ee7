"""`make exps`: DVC experiments side by side in a terminal: one column per experiment, one row per
parameter that differs between them and one per ablation (its outcome), from `dvc exp show --json`.

    python scripts/dvc_exps.py [dvc exp show options: -n 3, -A, --rev REV, ...]

`dvc exp show` itself gives every key of every ablation's headline.json a column of its own (60
columns headed `data/results/<id>/headline.json:<key>`), which no terminal holds: without its pager
DVC folds them into "…". Turned around, one row per ablation, it fits the terminal's width
($COLUMNS; experiments that do not fit go into a further block) and nothing is cut (long values
wrap). The numbers behind an outcome: `dvc exp diff A B` (one row per key).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

HEADLINE = re.compile(r"^data/results/([^/]+)/headline\.json$")
MAX_CELL = 24  # wider values wrap
GAP = "  "


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _text(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def experiments(shown: list[dict]) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(label, params, outcomes) per row of `dvc exp show --json`: the baselines (workspace,
    commits) and their experiments, in DVC's order."""
    out = []

    def add(rev: dict) -> None:
        data = rev.get("data") or {}
        if not data:
            return  # a failed or queued experiment: nothing to show
        sha = re.fullmatch(r"[0-9a-f]{40}", rev["rev"])
        label = rev.get("name") or (rev["rev"][:7] if sha else rev["rev"])  # or: workspace
        params: dict[str, str] = {}
        for path, p in (data.get("params") or {}).items():
            for k, v in _flatten(p.get("data") or {}).items():
                params[k if path == "params.yaml" else f"{path}:{k}"] = _text(v)
        outcomes = {}
        for path, m in (data.get("metrics") or {}).items():
            match = HEADLINE.match(path)
            if match:
                outcomes[match[1]] = _text((m.get("data") or {}).get("outcome", "-"))
        out.append((label, params, outcomes))

    for base in shown:
        add(base)
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev)
    return out


def rows(exps: list[tuple[str, dict[str, str], dict[str, str]]]) -> list[tuple[str, list[str]]]:
    """(row name, one value per experiment): the parameters that differ, then every ablation;
    an ablation whose outcome differs is marked with a *."""
    params = sorted({k for _, p, _ in exps for k in p})
    ablations = list(dict.fromkeys(a for _, _, o in exps for a in o))
    out = [("experiment", [label for label, _, _ in exps])]
    for k in params:
        vals = [p.get(k, "-") for _, p, _ in exps]
        if len(set(vals)) > 1:
            out.append((k, vals))
    for a in ablations:
        vals = [o.get(a, "-") for _, _, o in exps]
        out.append((f"{a} *" if len(set(vals)) > 1 else a, vals))
    return out


def _cell(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def render(table: list[tuple[str, list[str]]], width: int) -> list[str]:
    """Lines no wider than ``width``: the row names, then as many experiment columns as fit; the
    rest in further blocks below, each with the row names again."""
    key_w = min(max(len(k) for k, _ in table), MAX_CELL + 8)
    n = len(table[0][1])
    col_w = [min(max(len(vals[j]) for _, vals in table), MAX_CELL) for j in range(n)]
    col_w = [max(1, min(w, width - key_w - len(GAP))) for w in col_w]
    blocks, block, used = [], [], key_w
    for j, w in enumerate(col_w):
        if block and used + len(GAP) + w > width:
            blocks.append(block)
            block, used = [], key_w
        block.append(j)
        used += len(GAP) + w
    blocks.append(block)
    lines: list[str] = []
    for b, cols in enumerate(blocks):
        if b:
            lines.append("")
        for i, (key, vals) in enumerate(table):
            cells = [_cell(key, key_w)] + [_cell(vals[j], col_w[j]) for j in cols]
            for k in range(max(len(c) for c in cells)):
                parts = [(cells[0][k] if k < len(cells[0]) else "").ljust(key_w)]
                parts += [(c[k] if k < len(c) else "").ljust(col_w[j])
                          for c, j in zip(cells[1:], cols, strict=True)]
                lines.append(GAP.join(parts).rstrip())
            if i == 0:
                lines.append("-" * min(width, key_w + sum(len(GAP) + col_w[j] for j in cols)))
    return lines


def main(argv: list[str]) -> int:
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", *argv],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    exps = experiments(json.loads(proc.stdout))
    if not exps:
        print("no experiments to show (dvc exp run -S KEY=VALUE makes one)", file=sys.stderr)
        return 2
    width = shutil.get_terminal_size((120, 24)).columns
    print("\n".join(render(rows(exps), width)))
    print("* the outcome differs between experiments; the numbers: dvc exp diff A B"[:width])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
