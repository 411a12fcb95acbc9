import sys

from robust_mim.cli import main

sys.exit(main())
