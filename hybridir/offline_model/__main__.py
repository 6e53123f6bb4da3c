"""``python -m hybridir.offline_model [--cache-dir DIR] [--force]``: see :mod:`hybridir.offline_model.cli`."""

from hybridir.offline_model.cli import main

main()
