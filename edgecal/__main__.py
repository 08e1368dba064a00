import sys

from edgecal.cli.main import main

sys.exit(main())
