import sys

from evoplat.cli import main

sys.exit(main())
