"""Write a tiny **random-init** decoder folder, to try decoder runs offline (mechanics only).

    python scripts/make_tiny_decoder.py outputs/tiny-llama            # LlamaForCausalLM
    python scripts/make_tiny_decoder.py outputs/tiny-gpt2 --family gpt2
    fedpft-lite run --set model=outputs/tiny-llama task=bbc-news objective=causal-lm method=fedpft

No decoder weights install from the package registries, so this is the stand-in for a hub
checkpoint such as HuggingFaceTB/SmolLM2-135M: the family's own ``*ForCausalLM`` class at hidden
64, 4 layers, FFN 128, **untrained** (seeded random weights), saved by transformers with the MiniLM
tokenizer (the only tokenizer installed offline), and a README that says so
(``fedpft_lite.causal_lm.write_tiny_decoder``). A run on it checks that everything works end to
end; its perplexities and accuracies say nothing about FedPFT.
"""
from __future__ import annotations

import argparse

FAMILIES = ("llama", "qwen2", "mistral", "gpt2")   # = causal_lm.TINY_DECODER_FAMILIES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="where to write it (must not exist yet, or be empty)")
    ap.add_argument("--family", default="llama", choices=FAMILIES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from fedpft_lite.causal_lm import write_tiny_decoder

    folder = write_tiny_decoder(args.folder, args.family, args.seed)
    print(f"wrote a random-init {args.family} causal LM (untrained: mechanics only) to {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
