import sys

from edgecal.cli.launch import main

sys.exit(main())
