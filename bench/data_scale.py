"""Data at scale (issue 9): corpora of N MB built from the shared real corpus, measured side by side.

Builds ``--sizes`` MB corpora by repeating and shuffling the texts of ``shared/data/real_chat``
(found by walking up from the repository; the script says so and stops if it is absent), then
prints, each as a ratio measured in this one run:

- client RSS while validating (psutil sampling the validating process from outside);
- our encoding (stream files -> token file) against ``tokenizers``' own ``encode_batch`` on the
  same texts and threads, and the whole preparation against that raw encode;
- tokenizer training time at the biggest size against at the sample cap;
- evaluation time on the biggest eval set against a small one, both above the eval sample
  (``EVAL_CAP`` tokens here, so the small corpora of a quick run still exceed it);
- training tokens/s reading windows from the biggest token file against the in-memory built-in.

Usage: python bench/data_scale.py [--sizes 10,100] [--cap-mb 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
EVAL_CAP = 8192  # the eval sample here (default 65536): both eval sets below are bigger than it
sys.path.insert(0, str(HERE.parent))


def shared_corpus() -> Path | None:
    for d in [HERE, *HERE.parents]:
        if (d / "shared" / "data" / "real_chat" / "train.jsonl").exists():
            return d / "shared" / "data" / "real_chat"
    return None


def make_corpus(src: Path, mb: int, out: Path, seed: int) -> Path:
    lines = (src / "train.jsonl").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    target = mb * 1_000_000
    with open(out, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            rng.shuffle(lines)
            for line in lines:
                f.write(line + "\n")
                written += len(line.encode()) + 1
                if written >= target:
                    break
    return out


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB of the process tree, seconds), sampled from outside every 20 ms."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    p = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.02)
    return peak / 1e6, time.monotonic() - t0


def timed(f: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = f()
    return time.perf_counter() - t0, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100")
    ap.add_argument("--cap-mb", type=float, default=4.0, help="tokenizer sample cap for the bench (default 4 MB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--jobs-only", action="store_true", help="only the `macgpt train` measurements")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    src = shared_corpus()
    if src is None:
        print("shared/data/real_chat not found above the repository: nothing to measure")
        return
    from macgpt.config.job import build_spec
    from macgpt.data.sources import texts_of, validate
    from macgpt.worker import dataprep
    from macgpt.worker.batches import joined

    sizes = [int(s) for s in args.sizes.split(",")]
    if args.jobs_only:
        with tempfile.TemporaryDirectory(prefix="macgpt-bench-") as tmp:
            print(json.dumps(job_runs(src, max(sizes), Path(tmp))))
        return
    results: dict[str, object] = {"sizes_mb": sizes, "threads": args.threads, "cap_mb": args.cap_mb}
    with tempfile.TemporaryDirectory(prefix="macgpt-bench-") as tmp:
        work = Path(tmp)
        files = {mb: make_corpus(src, mb, work / f"c{mb}.jsonl", mb) for mb in sizes}
        cap_file = make_corpus(src, max(1, int(args.cap_mb)), work / "cap.jsonl", 7)
        code = "import sys; from macgpt.data.sources import validate; validate([sys.argv[1]])"
        base_rss, _ = peak_rss_of([sys.executable, "-c", "import macgpt.data.sources"])
        for mb, f in files.items():
            rss, secs = peak_rss_of([sys.executable, "-c", code, str(f)])
            results[f"validate_{mb}mb"] = {"peak_rss_mb": round(rss, 1), "seconds": round(secs, 2),
                                           "mb_per_s": round(mb / secs, 1), "interpreter_rss_mb": round(base_rss, 1)}
            print(f"validate {mb} MB: client peak RSS {rss:.1f} MB (bare interpreter + module {base_rss:.1f} MB), "
                  f"{secs:.1f}s", flush=True)

        big = max(sizes)
        spec = build_spec("original", {"vocab_size": args.vocab, "tokenizer_sample_mb": args.cap_mb},
                          data=[str(files[big])])
        c = dataprep.corpora(spec)
        cap_spec = dataclasses.replace(spec, data=(str(cap_file),))
        cap_c = dataprep.corpora(cap_spec)
        quiet = lambda *a, **k: None  # noqa: E731
        t_tok_big, (tok, _) = timed(lambda: dataprep.tokenizer(spec, c, work / "a" / "tok.json", None, quiet))
        t_tok_cap, _ = timed(lambda: dataprep.tokenizer(cap_spec, cap_c, work / "b" / "tok.json", None, quiet))
        results["tokenizer_train"] = {"big_s": round(t_tok_big, 2), "cap_s": round(t_tok_cap, 2),
                                      "ratio": round(t_tok_big / t_tok_cap, 3)}
        print(f"tokenizer training: {big} MB corpus {t_tok_big:.1f}s vs {args.cap_mb} MB (the cap) {t_tok_cap:.1f}s "
              f"-> {t_tok_big / t_tok_cap:.2f}x (target <= 1.2)", flush=True)

        mid = min(sizes, key=lambda s: abs(s - 100))  # the preparation target is at 100 MB
        texts = [joined(t) for t in texts_of(validate([files[mid]]))]
        raw_s = fast_s = 0.0
        for i in range(0, len(texts), 4096):  # the two raw encoders alternate, batch by batch
            t0 = time.perf_counter()
            tok._tok.encode_batch(texts[i:i + 4096], add_special_tokens=False)
            t1 = time.perf_counter()
            tok._tok.encode_batch_fast(texts[i:i + 4096], add_special_tokens=False)
            raw_s, fast_s = raw_s + t1 - t0, fast_s + time.perf_counter() - t1
        del texts
        mid_spec = dataclasses.replace(spec, data=(str(files[mid]),))
        t_prep, _ = timed(lambda: prepare_all(mid_spec, work / f"p{mid}", quiet))
        enc_c = dataprep.corpora(mid_spec)
        t_enc, _ = timed(lambda: dataprep.token_files(enc_c, tok, work / f"e{mid}", quiet))
        results["encode"] = {"mb": mid, "raw_encode_batch_s": round(raw_s, 2), "raw_encode_batch_fast_s": round(fast_s, 2),
                             "ours_s": round(t_enc, 2), "over_fast": round(fast_s / t_enc, 3),
                             "throughput_ratio": round(raw_s / t_enc, 3), "whole_preparation_s": round(t_prep, 2),
                             "preparation_over_raw": round(t_prep / raw_s, 3)}
        print(f"encode {mid} MB: tokenizers.encode_batch {raw_s:.1f}s, ours (read+encode+write) {t_enc:.1f}s -> "
              f"throughput {raw_s / t_enc:.2f}x (target >= 0.9); whole preparation {t_prep:.1f}s = "
              f"{t_prep / raw_s:.2f}x raw (target <= 2); against encode_batch_fast {fast_s:.1f}s (what we call): "
              f"{fast_s / t_enc:.2f}x", flush=True)

        results.update(train_and_eval(spec, c, cap_spec, cap_c, tok, work))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "data_scale.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


def job_runs(src: Path, mb: int, work: Path) -> dict[str, object]:
    """`macgpt train original` as a user runs it: start to first step of a second job on an
    already encoded corpus against the built-in data, and the worker's peak RSS of each (the
    worker's own ``ru_maxrss``, reported in the summary)."""
    big = make_corpus(src, mb, work / f"job{mb}.jsonl", 11)
    env = {**os.environ, "MACGPT_HOME": str(work / "home")}

    def run(name: str, *data: str) -> tuple[float, float]:
        cmd = [str(Path(sys.executable).parent / "macgpt"), "train", "original", "--steps", "3", "--max-cpu", "100",
               "--set", "sample_interval=0", "--out", str(work / name), "--json", *data]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800).stdout.splitlines()
        ev = [json.loads(x) for x in out if x.startswith("{")]
        t = {e["event"]: e["time"] for e in reversed(ev) if "time" in e}
        return t["started"] - t["spawned"], ev[-1]["peak_rss"] / 1e6

    run("first", "--data", str(big))  # builds the tokenizer and the token file
    second, rss_big = run("second", "--data", str(big))
    builtin, rss_builtin = run("builtin")
    print(f"second job on {mb} MB: start to first step {second:.1f}s vs built-in {builtin:.1f}s -> "
          f"{second / builtin:.2f}x (target <= 1.3); worker peak RSS {rss_big:.0f} MB vs {rss_builtin:.0f} MB -> "
          f"{rss_big / rss_builtin:.2f}x (target <= 1.15)", flush=True)
    return {"jobs": {"mb": mb, "second_start_s": round(second, 2), "builtin_start_s": round(builtin, 2),
                     "start_ratio": round(second / builtin, 3), "peak_rss_mb": round(rss_big, 1),
                     "builtin_peak_rss_mb": round(rss_builtin, 1), "rss_ratio": round(rss_big / rss_builtin, 3)}}


def prepare_all(spec: Any, where: Path, quiet: Any) -> Any:
    """What a job does before its first step: validate, train the tokenizer, encode, write."""
    from macgpt.data.sources import validate
    from macgpt.worker import dataprep

    m = validate(list(spec.data))
    spec = dataclasses.replace(spec, manifest={"train": m.to_dict(), "eval": None})
    c = dataprep.corpora(spec)
    tok, _ = dataprep.tokenizer(spec, c, where / "tok.json", None, quiet)
    return dataprep.token_files(c, tok, where / "tokens", quiet)


def train_and_eval(spec: Any, c: Any, cap_spec: Any, cap_c: Any, tok: Any, work: Path) -> dict[str, object]:
    import torch

    from macgpt.worker import dataprep
    from macgpt.worker.trainer import Trainer

    sys.path.insert(0, str(HERE))
    from common import alternate, builtin_streams, median

    big_train, big_eval = dataprep.token_files(c, tok, work / "tokens", lambda *a, **k: None)
    cap_train, cap_eval = dataprep.token_files(cap_c, tok, work / "tokens", lambda *a, **k: None)
    mc = dataclasses.replace(spec.model, vocab_size=tok.vocab_size)
    tc = dataclasses.replace(spec.train, threads=2, eval_tokens=EVAL_CAP)
    _, builtin_train, _ = builtin_streams(tok.vocab_size)
    ours = Trainer(mc, tc, tok, big_train, big_eval, torch.device("cpu"))
    base = Trainer(mc, tc, tok, builtin_train, None, torch.device("cpu"))

    def steps(t: Trainer) -> float:
        t0 = time.perf_counter()
        for _ in range(5):
            t.train_step()
        return 5 * tc.batch_size * mc.block_size / (time.perf_counter() - t0)

    mine, theirs = alternate(lambda: steps(ours), lambda: steps(base), 6)
    ratio = median(mine) / median(theirs)
    print(f"training tokens/s: token file {median(mine):,.0f} vs in-memory built-in {median(theirs):,.0f} -> "
          f"{ratio:.3f}x (target >= 0.98)", flush=True)
    cap_tr = Trainer(mc, tc, tok, cap_train, cap_eval, torch.device("cpu"))
    cap_tr.model.load_state_dict(ours.model.state_dict())
    e_big, e_cap = alternate(lambda: timed(ours.evaluate)[0], lambda: timed(cap_tr.evaluate)[0], 4)
    eratio = median(e_big) / median(e_cap)
    print(f"evaluation: {len(big_eval):,}-token eval set {median(e_big):.2f}s vs {len(cap_eval):,}-token "
          f"{median(e_cap):.2f}s -> {eratio:.2f}x (target <= 1.2)", flush=True)
    return {"train_tokens_per_s": {"token_file": round(median(mine)), "builtin": round(median(theirs)),
                                   "ratio": round(ratio, 3), "corpus_tokens": len(big_train)},
            "evaluate": {"big_eval_tokens": len(big_eval), "cap_eval_tokens": len(cap_eval),
                         "big_s": round(median(e_big), 3), "cap_s": round(median(e_cap), 3), "ratio": round(eratio, 3)}}


if __name__ == "__main__":
    main()
