import sys

from misdtcp.cli import main

sys.exit(main())
