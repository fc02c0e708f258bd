"""``python -m formerkit`` (and so ``torchrun -m formerkit``) runs the CLI."""

from formerkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
