"""Writes docs/results.md from the result files under benchmarks/results/ (one source per figure).

    python benchmarks/results_page.py            # writes docs/results.md
    python benchmarks/results_page.py --check    # exits 1 if docs/results.md is not what this script writes

Every figure on the page is read from a file under benchmarks/results/; the page itself is never edited
by hand. A record is a JSON object with a ``kind`` key, in any ``*.json`` file below benchmarks/results/
(files without ``kind``, such as a run's ``train_config.json``, are sources that records point into).

Fields every record may carry: ``order`` (int, sort key within its section, then the path), ``title``,
``hardware`` (what ran it, e.g. "2 x86_64 CPU cores (AVX-512), no GPU"), ``notes`` (list of
short strings printed under the table).

kind "robustness": accuracy of trained models, one row per model; rendered in the per-dataset tables.
    dataset      "digits" | "mnist" | "fashion_mnist"
    data         {"epsilon": float (L-inf, pixels in [0, 1]), "train": str (training images, epochs)}
    evaluation   defaults for the rows' figures: {"clean_images", "pgd", "pgd_images", "autoattack",
                 "autoattack_images"}; ``pgd`` names the attack ("PGD-40 x 3": 40 steps of 2.5 eps / 40,
                 worst of 3 random starts), ``autoattack`` the version (a key of AUTOATTACK below)
    rows         [{"id": str (for references from claims), "defense", "model", "train" (str),
                   "command": str or [str], "clean", "pgd", "autoattack": FIGURE, "hardware": str,
                   "train_seconds": number or SOURCE, "eval_seconds": the whole evaluation,
                   "wall_seconds": training and evaluation together,
                   number or SOURCE, "wall": str (a wall time recorded otherwise)}]
    FIGURE       a number (accuracy in percent, as measured), or {"value": percent, "spread": half the
                 range over seeds, "images": int, "attack": str, "version": str, "text": str (a figure
                 that is not one number)}, or a SOURCE; ``autoattack`` may be a list of figures.
    SOURCE       {"file": path relative to benchmarks/results/, "match": {dotted key: value},
                 "key": dotted key (default "accuracy"), "images_key" (default "n"), "seconds_key",
                 "sum": [correct key, images key]}: reads a fraction in [0, 1] from a JSON/JSONL result
                 file written by a benchmark (a JSON file's candidates are its ``rows`` and the rows of
                 its ``parts``; without ``match`` the key is read from the file's top level).
kind "claims": {"rows": [{"paper", "year", "venue", "claim", "dataset", "verdict" ("reproduced" |
    "not reproduced" | "not testable here"), "figure" (text; "{id.field}" is replaced by the figure
    ``field`` of the robustness row ``id``), "command"}], "images": [{"path" (relative to docs/), "alt",
    "caption"}]}.
kind "table": any other measured figure. {"section" (a key of SECTIONS), "title", "command": str or
    [str], "data": str, "hardware", "columns": [str], "rows": [[cell, ...]]}; cells are printed as
    written (numbers with thousands separators).

Result files written by other tools without a ``kind`` (``import_time*.json``, ``serving_load*.json``
at the top of benchmarks/results/) are rendered as they are: their scalars as a key / value table and
each list of objects as a table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"

DATASETS = {"digits": "Digits (scikit-learn's 8x8 digits: 1,347 training, 449 test images)",
            "mnist": "MNIST",
            "fashion_mnist": "Fashion-MNIST"}
VERDICTS = ("reproduced", "not reproduced", "not testable here")
AUTOATTACK = {
    "standard": "AutoAttack, standard version as far as ART has it (`autoattack-standard`: APGD-CE and "
                "APGD-DLR, 100 iterations and 1 start each, untargeted and then targeted at each of the 9 other "
                "classes, then Square with 5,000 queries; no FAB-T)",
    "package": "the package's `autoattack` (ART's AutoAttack: APGD-CE and APGD-DLR with 5 random starts "
               "each, then Square with 1,000 queries, each on the images still robust)",
}
SECTIONS = {  # section key -> heading, in page order
    "training": "Training throughput",
    "serving": "Serving throughput and limits",
    "detection": "Adversarial-input detection",
    "mi": "Mutual-information estimators and the TensorBoard logger",
    "evaluation": "Evaluation speed",
    "analysis": "Analysis suite",
    "parity": "Parity with reference code",
    "defaults": "Measurements behind defaults",
    "import_time": "Import time",
}
GENERIC = ("import_time*.json", "serving_load*.json", "serving_gc*.json")  # rendered as they are when they carry no "kind"
GENERIC_SECTION = {"import_time": "import_time", "serving_load": "serving", "serving_gc": "serving"}


# ----------------------------------------------------------------------------------------------- reading

def _load(path: Path):
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(dotted)
        obj = obj[part]
    return obj


def _candidates(data) -> list:
    if isinstance(data, list):
        return data
    rows = list(data.get("rows", []))
    for part in data.get("parts", {}).values():
        rows.extend(part.get("rows", []))
    return rows


def read_source(spec: dict, results: Path) -> dict:
    """Reads the figure a SOURCE points at: {"fraction", "images", "seconds"} (images/seconds may be None)."""
    path = results / spec["file"]
    if not path.is_file():
        raise ValueError(f"source file {spec['file']!r} does not exist under {results}")
    data = _load(path)
    if "sum" in spec:
        correct, images = spec["sum"]
        rows = _candidates(data)
        n = sum(_get(r, images) for r in rows)
        return {"fraction": sum(_get(r, correct) for r in rows) / n, "images": n,
                "seconds": sum(_get(r, spec["seconds_key"]) for r in rows) if "seconds_key" in spec else None}
    if "match" in spec:
        hits = [r for r in _candidates(data)
                if all(_has(r, k) and _get(r, k) == v for k, v in spec["match"].items())]
        if len(hits) != 1:
            raise ValueError(f"{spec['file']}: {len(hits)} rows match {spec['match']}, expected exactly 1")
        obj = hits[0]
    else:
        obj = data
    value = _get(obj, spec.get("key", "accuracy"))
    images_key = spec.get("images_key", "n")
    images = _get(obj, images_key) if _has(obj, images_key) else None
    seconds = _get(obj, spec["seconds_key"]) if "seconds_key" in spec else None
    return {"fraction": value, "images": images, "seconds": seconds}


def _has(obj, dotted: str) -> bool:
    try:
        _get(obj, dotted)
        return True
    except KeyError:
        return False


def load_records(results: Path) -> tuple[list, list]:
    """(records with a ``kind``, (path, data) of the generic result files), both in a fixed order."""
    records, generic = [], []
    for path in sorted(results.rglob("*.json")):
        data = _load(path)
        if isinstance(data, dict) and "kind" in data:
            data = dict(data, _path=path.relative_to(results).as_posix())
            records.append(data)
        elif path.parent == results and any(path.match(g) for g in GENERIC):
            generic.append((path, data))
    for path in sorted(results.glob("*.jsonl")):
        if any(path.match(g.replace(".json", ".jsonl")) for g in GENERIC):
            generic.append((path, _load(path)))
    records.sort(key=lambda r: (r.get("order", 0), r["_path"]))
    return records, generic


# --------------------------------------------------------------------------------------------- formatting

def num(x) -> str:
    """A number as measured: thousands separators, the digits it was recorded with."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:,}"


def cell(text) -> str:
    return num(text).replace("|", "\\|").replace("\n", "<br>")


def code(command) -> str:
    commands = [command] if isinstance(command, str) else list(command or [])
    return "<br>".join(f"`{c}`".replace("|", "\\|") for c in commands)


def display_command(command: str) -> str:
    # The data path and PYTHONPATH are the reader's; the page states once that MNIST commands need them.
    return re.sub(r"^(?:(?:KERAS_ADVMI_DATA|PYTHONPATH)=\S+\s+)+", "", command)


class Figure:
    """One accuracy figure of a robustness row, resolved from a number, a dict or a SOURCE."""

    def __init__(self, spec, default_images=None, default_attack=None, results=None):
        self.text = self.percent = self.spread = self.seconds = None
        self.images, self.attack = default_images, default_attack
        if spec is None:
            return
        if isinstance(spec, (int, float)):
            spec = {"value": spec}
        if "file" in spec:
            got = read_source(spec, results)
            self.percent = f"{100 * got['fraction']:.2f}"
            self.images = got["images"] if got["images"] is not None else self.images
            self.seconds = got["seconds"]
        elif "text" in spec:
            self.text = spec["text"]
        else:
            self.percent = num(spec["value"])
        if "spread" in spec:
            self.spread = num(spec["spread"])
        self.images = spec.get("images", self.images)
        self.attack = spec.get("attack", spec.get("version", self.attack))

    def render(self, details=True) -> str:
        if self.text is None and self.percent is None:
            return "not measured"
        value = self.text if self.text is not None else (
            f"{self.percent} ± {self.spread}%" if self.spread else f"{self.percent}%")
        parts = [d for d in (self.attack, f"{num(self.images)} images" if self.images else None) if d]
        return f"{value} ({', '.join(parts)})" if parts and details else value


def robustness_rows(record: dict, results: Path):
    ev = record.get("evaluation", {})
    for row in record["rows"]:
        clean = Figure(row.get("clean"), ev.get("clean_images"), None, results)
        pgd = Figure(row.get("pgd"), ev.get("pgd_images"), ev.get("pgd"), results)
        aa_specs = row.get("autoattack")
        aa_specs = aa_specs if isinstance(aa_specs, list) else [aa_specs]
        aas = [Figure(s, ev.get("autoattack_images"), ev.get("autoattack"), results) for s in aa_specs]
        seconds = {}
        for field, key in (("train_seconds", "train_seconds"), ("eval_seconds", "eval_seconds"),
                           ("wall_seconds", "seconds")):
            value = row.get(field)
            if isinstance(value, dict):
                value = read_source(dict(value, key=value.get("key", key)), results)["fraction"]
            seconds[field] = value
        yield row, clean, pgd, aas, seconds


def aa_label(fig: Figure) -> Figure:
    if fig.attack in AUTOATTACK:
        fig.attack = {"standard": "standard", "package": "package's"}[fig.attack]
    return fig


DEFAULT_HARDWARE = "2 x86_64 CPU cores (AVX-512), no GPU"


def _hardware(text: str) -> str:
    return "2 CPU cores" if text == DEFAULT_HARDWARE else text


def _model(name: str) -> str:
    return f"`{name}`" if re.fullmatch(r"[A-Za-z0-9_]+", name) else name


def wall(row, seconds, figures) -> str:
    parts = []
    if seconds["train_seconds"] is not None:
        parts.append(f"train {num(round(seconds['train_seconds']))} s")
    if seconds["eval_seconds"] is not None:
        parts.append(f"evaluation {num(round(seconds['eval_seconds']))} s")
    if seconds["wall_seconds"] is not None:
        parts.append(f"train and evaluation {num(round(seconds['wall_seconds']))} s")
    if row.get("wall"):
        parts.append(row["wall"])
    for name, fig in figures:
        if fig.seconds is not None:
            parts.append(f"{name} {num(round(fig.seconds))} s")
    return "; ".join(parts) or "not recorded"


# ------------------------------------------------------------------------------------------------ sections

def render_robustness(records, results) -> tuple[list[str], dict]:
    """The per-dataset tables, and the rendered figures by row id (for the claims' references)."""
    refs, out = {}, []
    by_dataset = {d: [r for r in records if r["kind"] == "robustness" and r["dataset"] == d] for d in DATASETS}
    unknown = {r["dataset"] for r in records if r["kind"] == "robustness"} - set(DATASETS)
    if unknown:
        raise ValueError(f"robustness records name unknown datasets {sorted(unknown)}; expected {list(DATASETS)}")
    out += ["## Robust accuracy, per dataset", "",
            "One row per trained model. Accuracy in % on the first N test images (N in brackets); PGD is the "
            "attack named in the cell (L-inf, random start, the worst of its restarts); AutoAttack is "
            "\"standard\" or \"package's\":", ""]
    out += [f"- **{k}**: {v}." for k, v in (("standard", AUTOATTACK["standard"]),
                                             ("package's", AUTOATTACK["package"]))]
    out += ["", "A ± is half the range over the seeds of that row. The studies under each table give the data, "
            "the epsilon and how the models were trained.", ""]
    for dataset, title in DATASETS.items():
        recs = by_dataset[dataset]
        if not recs:
            continue
        out += [f"### {title}", "",
                "| study | defense | model, training | command | clean | PGD | AutoAttack | hardware | wall time |",
                "|---|---|---|---|---|---|---|---|---|"]
        studies = []
        for k, rec in enumerate(recs, 1):
            studies.append(rec)
            for row, clean, pgd, aas, seconds in robustness_rows(rec, results):
                aas = [aa_label(a) for a in aas]
                seed = f", seed {row['seed']}" if "seed" in row else ""
                figs = [("clean", clean), (pgd.attack or "PGD", pgd)] + [(f"AutoAttack ({a.attack})", a) for a in aas]
                out.append("| " + " | ".join([
                    str(k), cell(row["defense"]), cell(f"{_model(row['model'])}, {row.get('train', '')}{seed}".rstrip(", ")),
                    code([display_command(c) for c in ([row["command"]] if isinstance(row["command"], str)
                                                       else row["command"])]),
                    clean.render(), pgd.render(), "<br>".join(a.render() for a in aas),
                    cell(_hardware(row.get("hardware", rec.get("hardware", "")))), cell(wall(row, seconds, figs))]) + " |")
                if "id" in row:
                    if row["id"] in refs:
                        raise ValueError(f"row id {row['id']!r} appears twice")
                    refs[row["id"]] = {"clean": clean.render(False), "pgd": pgd.render(False),
                                       "autoattack": aas[0].render(False) if aas else "not measured"}
        out += ["", "Studies:", ""]
        for k, rec in enumerate(studies, 1):
            data = rec.get("data", {})
            line = f"{k}. **{rec['title']}**"
            if data:
                line += (f" Epsilon {num(data['epsilon'])}" if "epsilon" in data else "") + (
                    f"; training: {data['train']}" if "train" in data else "") + "."
            notes = " ".join(rec.get("notes", []))
            out.append(line + (f" {notes}" if notes else "") + f" (`benchmarks/results/{rec['_path']}`)")
        out.append("")
    return out, refs


def render_claims(records, refs) -> list[str]:
    rows = [row for r in records if r["kind"] == "claims" for row in r["rows"]]
    if not rows:
        return []
    out = ["## Claims of the papers the package implements", "",
           "Each claim as the paper states it, tested at this project's scale (small CNNs, MNIST-size data, CPU "
           "budgets): *reproduced*, *not reproduced*, or *not testable here*.", "",
           "| paper | claim | data | verdict | figure | command |", "|---|---|---|---|---|---|"]

    def resolve(text):
        def one(m):
            rid, field = m.group(1), m.group(2)
            if rid not in refs or field not in refs[rid]:
                raise ValueError(f"claim refers to {{{rid}.{field}}}, which no robustness row defines")
            return refs[rid][field]
        return re.sub(r"\{([A-Za-z0-9_]+)\.(clean|pgd|autoattack)\}", one, text)

    for row in rows:
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"verdict {row['verdict']!r}: expected one of {VERDICTS}")
        paper = f"\"{row['paper']}\" ({row.get('venue', '') + ' ' if row.get('venue') else ''}{row['year']})"
        out.append("| " + " | ".join([cell(paper), cell(row["claim"]), cell(row["dataset"]),
                                      f"**{row['verdict']}**", cell(resolve(row["figure"])),
                                      code([display_command(c) for c in ([row["command"]] if isinstance(
                                          row["command"], str) else row["command"])])]) + " |")
    out.append("")
    for r in records:
        if r["kind"] == "claims":
            for image in r.get("images", []):
                if not (RESULTS.parent.parent / "docs" / image["path"]).is_file():
                    raise ValueError(f"image {image['path']!r} does not exist under docs/")
                out += [f"{image['caption']}", "", f"![{image['alt']}]({image['path']})", ""]
    return out


def render_table(rec) -> list[str]:
    out = [f"#### {rec['title']}", ""]
    commands = [rec["command"]] if isinstance(rec.get("command"), str) else rec.get("command", [])
    if commands:
        out += ["    " + display_command(c) for c in commands] + [""]
    meta = [f"Data: {rec['data']}." if rec.get("data") else "",
            f"Hardware: {rec['hardware']}." if rec.get("hardware") else ""]
    if any(meta):
        out += [" ".join(m for m in meta if m), ""]
    cols = rec["columns"]
    out += ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rec["rows"]:
        if len(row) != len(cols):
            raise ValueError(f"{rec['_path']}: a row has {len(row)} cells for {len(cols)} columns")
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    out.append("")
    out += [f"- {n}" for n in rec.get("notes", [])]
    return out + ([""] if rec.get("notes") else []) + [f"Source: `benchmarks/results/{rec['_path']}`.", ""]


def render_generic(path: Path, data, results: Path) -> list[str]:
    """A result file of unknown schema, as it is: scalars in one table, each list of objects in its own."""
    out = [f"#### {path.stem.replace('_', ' ').capitalize()}", ""]
    rows = data if isinstance(data, list) else None
    scalars = {} if rows is not None else {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
    nested = {} if rows is not None else {k: v for k, v in data.items() if isinstance(v, (list, dict))}
    if "command" in scalars:
        out += ["    " + display_command(str(scalars.pop("command"))), ""]
    if scalars:
        out += ["| field | value |", "|---|---|"] + [f"| {cell(k)} | {cell(v)} |" for k, v in scalars.items()] + [""]
    tables = [("", rows)] if rows is not None else [(k, v) for k, v in nested.items()
                                                    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    for name, items in tables:
        cols = list(dict.fromkeys(k for it in items for k in it))
        if name:
            out += [f"{name}:", ""]
        out += ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(cell(json.dumps(it[c]) if isinstance(it.get(c), (dict, list)) else it.get(c, ""))
                                  for c in cols) + " |" for it in items] + [""]
    for name, value in nested.items():
        if any(name == t[0] for t in tables):
            continue
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            out += [f"{name}:", "", "| key | value |", "|---|---|"]
            out += [f"| {cell(k)} | {cell(v)} |" for k, v in value.items()] + [""]
        else:
            out += [f"{name}: `{json.dumps(value, sort_keys=True)}`", ""]
    return out + [f"Source: `benchmarks/results/{path.relative_to(results).as_posix()}`.", ""]


def render(results: Path = RESULTS) -> str:
    records, generic = load_records(results)
    kinds = {r["kind"] for r in records} - {"robustness", "claims", "table"}
    if kinds:
        raise ValueError(f"unknown record kinds {sorted(kinds)}; expected robustness, claims, table")
    out = ["# Results", "",
           "<!-- Generated by `python benchmarks/results_page.py` from benchmarks/results/; do not edit. -->", "",
           "What was measured, with which command, on which data and evaluation, on which hardware, in how much "
           "wall time. Every figure here is read from a result file under `benchmarks/results/` (named under "
           "each table); `python benchmarks/results_page.py` writes this page and `--check` fails when it is out "
           "of date.", "",
           "Hardware, unless a row says otherwise: 2 x86_64 CPU cores (AVX-512, with AVX512_BF16), no GPU; TensorFlow "
           "2.21, Keras 3.15. No figure here was measured on a GPU. Commands that read MNIST or "
           "Fashion-MNIST need `KERAS_ADVMI_DATA` set to the folder of the IDX files. Wall times are single "
           "runs and vary by up to 2x from run to run on 2 cores: compare ratios measured side by side in one "
           "run, not wall times across rows.", ""]
    body, refs = render_robustness(records, results)
    out += body
    out += render_claims(records, refs)
    tables = [r for r in records if r["kind"] == "table"]
    bad = {r["section"] for r in tables} - set(SECTIONS)
    if bad:
        raise ValueError(f"table records name unknown sections {sorted(bad)}; expected {list(SECTIONS)}")
    generic_by_section = {}
    for path, data in generic:
        key = next(v for k, v in GENERIC_SECTION.items() if path.name.startswith(k))
        generic_by_section.setdefault(key, []).append((path, data))
    if tables or generic:
        out += ["## Other measured figures", ""]
    for key, heading in SECTIONS.items():
        recs = [r for r in tables if r["section"] == key]
        if not recs and key not in generic_by_section:
            continue
        out += [f"### {heading}", ""]
        for rec in recs:
            out += render_table(rec)
        for path, data in generic_by_section.get(key, []):
            out += render_generic(path, data, results)
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date; write nothing")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result files")
    parser.add_argument("--out", type=Path, default=PAGE, help="page to write or check")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"--results must be a folder of result files; got {str(args.results)!r}")
    page = render(args.results)
    if args.check:
        current = args.out.read_text() if args.out.is_file() else None
        if current != page:
            print(f"{args.out} is out of date: run python benchmarks/results_page.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
