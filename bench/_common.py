"""Shared pieces of the benchmark scripts: machine description, device, tables, timers,
and the sentence-transformers baseline model built from the same offline weights.

Every script imports this as ``from _common import ...`` (``python bench/<name>.py`` puts
bench/ on sys.path; ``hybridir`` and ``study`` come from the editable install). Nothing here
changes what is measured; it only keeps the scripts short.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Offline by default: the hubs are unreachable here and a hub lookup takes ~20 s to fail.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HYBRIDIR_MIRROR": str(REPO_ROOT.parent / "shared" / "data"),
}.items():
    os.environ.setdefault(_name, _value)

import torch  # noqa: E402
from transformers.utils import logging as _hf_logging  # noqa: E402

# Truncating the model to N layers makes transformers list every dropped weight; the
# benchmarks' output is the tables.
_hf_logging.set_verbosity_error()
_hf_logging.disable_progress_bar()


def device() -> torch.device:
    """cuda when present (bf16 autocast there), else cpu."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(dev: torch.device):
    """The precision hybridir's ``precision: auto`` picks: bf16 on a bf16-capable GPU, else fp32."""
    enabled = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=enabled)


def sync(dev: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timers measure it."""
    if dev.type == "cuda":
        torch.cuda.synchronize()


def machine_info(threads: int | None = None) -> dict[str, str]:
    """What the numbers were measured on (printed above every table)."""
    cpu = platform.processor() or "?"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), cpu)
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{ram_gib:.0f} GiB",
        "torch": torch.__version__,
        "torch threads": str(threads if threads is not None else torch.get_num_threads()),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
    }
    return info


def print_machine(threads: int | None = None) -> None:
    for key, value in machine_info(threads).items():
        print(f"{key}: {value}")
    print()


def fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 10_000:
            return f"{value:.3f}"
        return f"{value:.3g}"
    return str(value)


def print_table(title: str, header: list[str], rows: list[list]) -> str:
    """Print (and return) a GitHub-markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


@contextmanager
def timer(dev: torch.device, wall: list[float], cpu: list[float] | None = None):
    """Append the wall time of the block (GPU work included) to ``wall`` and, if given, the
    CPU time of this process (all its threads) to ``cpu``.

    On a shared machine the wall clock also counts the time other jobs held the cores;
    CPU seconds count only the work this process did, so both are reported.
    """
    sync(dev)
    start, start_cpu = time.perf_counter(), time.process_time()
    yield
    sync(dev)
    wall.append(time.perf_counter() - start)
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def offline_model_dir() -> Path:
    from hybridir.offline_model import ensure_offline_model

    return Path(ensure_offline_model())


def sentence_transformer(
    model_dir: str | Path,
    num_layers: int | None,
    max_query_length: int,
    max_passage_length: int,
    dev: torch.device,
):
    """The usual-tools baseline: a SentenceTransformer (Transformer -> mean Pooling -> Normalize)
    over the same HF directory, truncated to the same first ``num_layers`` layers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    config_kwargs = {"num_hidden_layers": num_layers} if num_layers else None
    transformer = Transformer(
        str(model_dir),
        config_kwargs=config_kwargs,
        query_length=max_query_length,
        document_length=max_passage_length,
        max_seq_length=max(max_query_length, max_passage_length),
    )
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device=str(dev))


def st_word_embeddings(st_model) -> torch.nn.Embedding:
    """The word-embedding matrix of a SentenceTransformer built by :func:`sentence_transformer`."""
    return st_model[0].auto_model.get_input_embeddings()


def add_common_args(parser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides)")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N of the model's 12 layers")


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    # Tokenizers run in this process too; keep their Rust thread pool off the timed cores.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
