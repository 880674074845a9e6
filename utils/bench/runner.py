"""Running benchmark rows: entry-script subprocesses, run-store keys, parallel execution, provenance.

Used by ``scripts/benchmark.py``; every row is the project's own entry script run as a subprocess.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from utils.bench import fingerprint, runstore
from utils.checkpoint import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
SR_SCALES = ("x4", "x8", "x12.8", "x16")


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` in the repository, output to ``log``; returns seconds. Raises on failure."""
    start = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        result = subprocess.run(
            cmd,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"benchmark step failed ({' '.join(cmd)}):\n{tail}\nfull log: {log}")
    return time.time() - start


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu_model"] = next(
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            )
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    # The kernels torch and NumPy pick depend on these (docs/benchmark_protocol.md, "Machines and data").
    info["isa"] = torch.backends.cpu.get_cpu_capability()
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    return info


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------------------------- run store
SCHEMA_OF = {"main_giif.py": "giif", "main_disc.py": "disc", "main.py": "srhand"}


CHECKPOINT_INPUTS = ("giif_model", "disc_model")  # config keys naming an input checkpoint


def resolved_config(cmd: list[str]) -> dict:
    """The config ``cmd`` runs with (its ``--conf`` and ``--set`` through the entry's schema), as a dict."""
    from utils.config import conf_to_dict, load_config

    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    conf = load_config(REPO / cmd[cmd.index("--conf") + 1], sets, schema=SCHEMA_OF[Path(cmd[1]).name])
    return conf_to_dict(conf)


def data_fingerprint(args, data: str) -> fingerprint.Fingerprint | None:
    """The content fingerprint of the data folder ``data``, computed once per benchmark command (the
    folder's own cache makes it a ``stat`` per file after the first time); None for a folder that does not
    exist (yet: nothing is run before its captures are there)."""
    cache = args.__dict__.setdefault("_data_fingerprints", {})
    if data not in cache:
        if not Path(data).is_dir():
            return None
        cache[data] = fingerprint.data_fingerprint(data)
        fp = cache[data]
        print(
            f"[benchmark] data {data}: fingerprint {fp.sha256[:16]} ({fp.files} files, "
            f"{fp.bytes / 2**20:.1f} MiB, {fp.hashed} hashed, {fp.seconds:.2f} s)",
            flush=True,
        )
    return cache[data]


def command_data(args, cmd: list[str]) -> str:
    """The data folder a command reads: its ``data.data_path`` override, else ``--data``."""
    return next((a.split("=", 1)[1] for a in cmd if a.startswith("data.data_path=")), args.data)


def job_key(args, cmd: list[str], seed: int, refs: dict) -> dict:
    """The run-store key of ``cmd`` (``utils.bench.runstore``). Input checkpoints are named by ``refs``
    (checkpoint path -> ``run:<key hash>`` of the benchmark run that writes it), else by their content;
    the data by the content fingerprint of the folder the command reads (and its generator settings)."""
    data = command_data(args, cmd)
    cache = args.__dict__.setdefault("_data_settings", {})
    if data not in cache:  # the captures the command reads (a second identity has its own folder)
        cache[data] = runstore.data_settings(data)
    config = resolved_config(cmd)
    paths = {key: config.get(key) for key in CHECKPOINT_INPUTS if config.get(key)}
    if "--model_path" in cmd:  # supersedes the config's giif_model (trainers/run.py reads it only without)
        paths.pop("giif_model", None)
        paths["model_path"] = cmd[cmd.index("--model_path") + 1]
    inputs = {name: refs.get(str(path)) or runstore.file_ref(path) for name, path in paths.items()}
    fp = data_fingerprint(args, data)
    data_key = runstore.data_key(cache[data], fp.ref if fp else "missing")
    return runstore.make_key(Path(cmd[1]).name, config, seed, args.scale, data_key, inputs)


def output_refs(run_dir: Path, key: dict) -> dict:
    """Checkpoint paths a run writes -> ``run:<its key hash>``."""
    ref = runstore.run_ref(key)
    return {str(run_dir / name): ref for name in ("giif.pth", "disc.pth")}


def legacy_keys(args, keys: list[dict]) -> list[dict]:
    """The version-1 twins of ``keys`` (``runstore.legacy_twin``), in dependency order. The twins of every
    key planned so far are kept on ``args``, so a main.py row's twin names its SR runs' twins."""
    twins = args.__dict__.setdefault("_legacy_twins", {})
    out = []
    for key in keys:
        twin = runstore.legacy_twin(key, twins)
        twins[runstore.run_ref(key)] = runstore.run_ref(twin)
        out.append(twin)
    return out


def legacy_machines(args) -> list[str]:
    """Machines whose legacy entries are used: this one, and those named by ``--legacy_machine``."""
    return [machine().get("cpu_model") or "unknown", *(getattr(args, "legacy_machine", None) or [])]


RUN_MARKER = "runstore_key.json"  # in a run folder: the key of the run that wrote its checkpoints


def checkpoint_ready(path: str | Path, key: dict) -> bool:
    """Whether the checkpoint ``path`` is on this machine and was written by the run of ``key`` (the run
    folder's :data:`RUN_MARKER`): a checkpoint of another run (other data, a legacy run, a folder from
    before the marker) is not used as if it were this one."""
    path = Path(path)
    marker = path.parent / RUN_MARKER
    if not path.is_file() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("key_hash") == runstore.key_hash(key)
    except ValueError:
        return False


def execute(
    args,
    work: Path,
    kind: str,
    jobs: list[tuple],
    keys: list[dict],
    parallel: int = 1,
    upstream: dict | None = None,
    force: set | None = None,
) -> tuple[dict, dict]:
    """Run the jobs whose key is not in the run store (all with ``--fresh``), ``parallel`` at a time with
    ``cpu_count // parallel`` threads each, and store every finished run as it finishes.

    Args:
        jobs: ``(row, seed, run folder, command)`` in dependency order; keys: their run-store keys.
        upstream: checkpoint path -> index of the job writing it, for jobs that feed later ones: a stored
            job is re-run when a job to run needs its checkpoint and the file is not on this machine.
        force: indices of jobs to run even when stored (their checkpoints are needed elsewhere).

    Returns:
        ``({run folder name: stored entry}, {run folder name: seconds of the runs executed})``.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    store = runstore.RunStore(args.store)
    legacy, accepted = legacy_keys(args, keys), legacy_machines(args)
    entries = (
        {}
        if args.fresh
        else {
            j[2].name: store.find(kind, j[0], k, twin, accepted)
            for j, k, twin in zip(jobs, keys, legacy, strict=True)
        }
    )
    todo = {i for i, j in enumerate(jobs) if not entries.get(j[2].name)} | set(force or ())
    for i in sorted(todo, reverse=True):  # a job to run needs its input checkpoints on disk
        for arg in jobs[i][3]:
            path = arg.split("=", 1)[-1]
            source = (upstream or {}).get(path)
            if source is not None and source not in todo and not checkpoint_ready(path, keys[source]):
                why = (
                    "is a legacy entry (data fingerprint unknown)"
                    if runstore.is_legacy(entries.get(jobs[source][2].name))
                    else f"but {path} of that run is not on this machine"
                )
                print(f"[benchmark] {jobs[source][2].name}: stored, {why}: re-running it")
                todo.add(source)
    reused = [jobs[i] for i in range(len(jobs)) if i not in todo]
    if reused:
        print(
            f"[benchmark] {kind}: {len(reused)} run(s) reused from {args.store}: "
            + ", ".join(f"{j[2].name} ({runstore.revision_label(entries[j[2].name])})" for j in reused),
            flush=True,
        )
        old = [j[2].name for j in reused if runstore.is_legacy(entries[j[2].name])]
        if old:
            print(
                f"[benchmark] {kind}: {len(old)} of them are legacy entries (no data fingerprint; made on "
                f"{', '.join(sorted({entries[n]['machine'] for n in old}))}, accepted as that machine's "
                f"captures): {', '.join(old)}",
                flush=True,
            )
    for i in sorted(todo):
        others = store.others(kind, jobs[i][0], keys[i])
        if others and not args.fresh:
            print(
                f"[benchmark] {jobs[i][2].name}: {len(others)} stored run(s) of this row and seed have another key "
                f"(config, data, inputs or scale changed, or a legacy entry of another machine; "
                f"--legacy_machine accepts one); not used: {', '.join(p.name for p in others)}"
            )
    # Jobs re-run under a key already stored (their checkpoint was needed): appended to the entry's reruns.
    stored = set() if args.fresh else {i for i in todo if store.get(kind, jobs[i][0], keys[i]) is not None}
    threads = max(1, (os.cpu_count() or 1) // max(1, parallel))
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    info = machine()
    cpu = info.get("cpu_model")
    seconds = {}
    print(f"[benchmark] {kind}: {len(todo)} run(s) to do, {parallel} at a time", flush=True)

    def one(i: int) -> tuple[int, float, tuple]:
        row, _, run_dir, cmd = jobs[i]
        revision = runstore.git_revision(REPO)  # the code the run starts from
        (run_dir / RUN_MARKER).unlink(missing_ok=True)  # its checkpoints are about to be another run's
        took = run(cmd, work / "logs" / f"{kind}_{run_dir.name}.log", env)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RUN_MARKER, json.dumps({"key_hash": runstore.key_hash(keys[i])}) + "\n")
        return i, took, revision

    # Jobs that feed others run first, in order; the rest in parallel.
    feeders = sorted(i for i in todo if upstream and i in set(upstream.values()))
    batches = [[i] for i in feeders] + [sorted(todo - set(feeders))]
    for batch in batches:
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            for future in as_completed([pool.submit(one, i) for i in batch]):
                i, took, (rev, dirty) = future.result()
                row, seed, run_dir, cmd = jobs[i]
                metrics = json.loads((run_dir / "metrics.json").read_text())
                fp = data_fingerprint(args, command_data(args, cmd))
                path = store.put(
                    kind,
                    row,
                    keys[i],
                    metrics,
                    rev,
                    dirty,
                    seconds=took,
                    threads=threads,
                    machine=cpu,
                    data_parts=fp.part_digests() if fp else None,
                    machine_info=info,
                    replace=args.fresh,
                )
                entries[run_dir.name] = json.loads(path.read_text())
                seconds[run_dir.name] = took
                rerun = "; the stored metrics kept, this run added to its reruns" if i in stored else ""
                print(
                    f"[benchmark] {run_dir.name}: {took:.0f} s, stored as {path.relative_to(args.store)}{rerun}",
                    flush=True,
                )
    return entries, seconds


def store_summary(entries, executed: dict) -> dict:
    """Revision, machine and data mixes and counts of the stored entries a table reads."""
    entries = list(entries)
    return {
        "revisions": runstore.revision_mix(entries),
        "machines": runstore.machine_mix(entries),
        "data": runstore.data_mix(entries),
        "runs": len(entries),
        "executed": len(executed),
    }


def provenance_line(result: dict) -> str:
    """ "N of M runs executed now, the others from the run store; revisions: ..." (empty for old results)."""
    if "revisions" not in result:
        return ""
    mix = [tuple(item) for item in result["revisions"]]
    line = (
        f"{result.get('executed', 0)} of the {result.get('runs', 0)} runs were executed by this command, the "
        f"others read from the run store (`benchmarks/runs/`; `--fresh` re-runs all). Runs by code revision: "
        f"{runstore.format_revision_mix(mix)}."
    )
    if "machines" in result:
        line += f" Runs by machine: {runstore.format_machine_mix([tuple(m) for m in result['machines']])}."
    else:
        line += " Machines: not recorded."
    if "data" in result:
        line += f" Data: {runstore.format_data_mix([tuple(d) for d in result['data']])}."
    if result.get("provenance_from"):
        line += f" (Machines and data read from the {result['provenance_from']}.)"
    return line
