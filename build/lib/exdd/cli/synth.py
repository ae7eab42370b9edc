"""``exdd synthesize``: synthetic defects for the positive bank, with a provenance manifest."""

from __future__ import annotations

import argparse

from exdd.config import load_params


def _synthesize(args: argparse.Namespace) -> int:
    from exdd.data.synth import PROVENANCE_FILE, synthesize

    params = load_params(args.params)
    cfg = params.synth
    if args.model_id:
        cfg = cfg.model_copy(update={"model_id": args.model_id})
    backend = args.backend or cfg.backend
    out = synthesize(args.data, args.out, cfg, params.data, backend=backend, count=args.count,
                     seed=args.seed)
    count = cfg.count if args.count is None else args.count
    print(f"{count} synthetic defect(s) ({backend}) written to {out}/train, "
          f"provenance in {out}/{PROVENANCE_FILE}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``exdd synthesize``."""
    p = sub.add_parser("synthesize", help="generate synthetic defects (KSDD2 layout + provenance)")
    p.add_argument("--data", required=True, help="KSDD2-layout folder or manifest CSV to draw from")
    p.add_argument("--out", required=True, help="folder to write (replaced whole, atomically)")
    p.add_argument("--backend", choices=["sdxl", "procedural"],
                   help="default: synth.backend in params.yaml")
    p.add_argument("--count", type=int, help="number of samples (default: synth.count)")
    p.add_argument("--seed", type=int, help="default: synth.seed")
    p.add_argument("--model-id", help="SDXL inpainting hub id or local directory "
                   "(default: synth.model_id)")
    p.add_argument("--params", help="params file to use")
    p.set_defaults(func=_synthesize)
