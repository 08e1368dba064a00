import sys

from edgecal.cli import main

sys.exit(main())
