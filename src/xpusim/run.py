"""``python -m xpusim.run``: one rank of a real parallel run, for ``torchrun --nproc-per-node N -m xpusim.run``.
``xpusim run`` starts every rank itself."""

from xpusim.parallel.real.worker import main

if __name__ == "__main__":
    main()
