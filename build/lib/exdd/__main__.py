import sys

from exdd.cli import main

sys.exit(main())
