#!/usr/bin/env python
"""Training throughput (images/s) of one trunk-distillation step (`train.py --distill-bf16` against its default),
both on the same (64, 3, 256, 128) batch in one run: OSNet forward, both losses, backward and an AdamW step.

* fp32: the default;
* bf16: what `modeling_aio.trunk_binding.train_trunk_in_place(bf16=True)` does through Trainer, i.e. bf16 autocast
  around the step (the losses inside it run in fp32) with the trunk in channels_last memory.

Why a benchmark: bf16 only pays on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), so the flag is a choice
the user makes from these figures on their own machine; the script prints which of those CPU flags it found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from modeling_aio.osnet import OSNet
from modeling_aio.training.trunk_distillation import TrunkDistillationModel


def bf16_cpu_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag in ("avx512_bf16", "amx_bf16")})


def images_per_second(bf16: bool, batch: torch.Tensor, teacher: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    """Median over `repeats` timed steps of a fresh trunk (same seed for both settings)."""
    torch.manual_seed(0)
    trunk = OSNet()
    model = TrunkDistillationModel(trunk, teacher.shape[-1]).train()
    if bf16:
        trunk.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(warmup + repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch, teacher_embeds=teacher).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return len(batch) / sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(args.batch_size, 3, 256, 128, generator=generator)
    teacher = torch.randn(args.batch_size, 256, generator=generator)
    flags = ", ".join(bf16_cpu_flags()) or "none"
    print(f"batch {args.batch_size} x 3 x 256 x 128, {args.threads} threads, median of {args.repeats} training steps "
          f"(OSNet forward, distillation losses, backward, AdamW); CPU bf16 flags: {flags}")
    fp32 = images_per_second(False, batch, teacher, args.repeats)
    print(f"  fp32 (default)                      {fp32:7.1f} images/s")
    bf16 = images_per_second(True, batch, teacher, args.repeats)
    print(f"  bf16 autocast + channels_last       {bf16:7.1f} images/s  ratio to fp32 {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
